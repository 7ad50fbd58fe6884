"""Where one `conceal serve` request's time goes, stage by stage, in one process -> the table in benchmarks/SERVICE.md.

    OMP_NUM_THREADS=1 python benchmarks/service_stages.py            # LFW photos from ../shared
    OMP_NUM_THREADS=1 python benchmarks/service_stages.py --photos 8 --photo-dir ../../shared/datasets/lfw/lfw

Median milliseconds over the photos, 1 torch thread: decode, detect (the shared CenterFace detector), align,
the model on 1 face and per face in batches, paste back, PNG encodes. Then the whole request path of the service
(``_conceal_upload`` on a worker thread) against `conceal apply`'s (``conceal_images`` + ``encode_png``),
alternating photo by photo so a change in the machine's load hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PNG_OPTIONS = {"PNG, zlib level 6 (what conceal apply writes)": {}, "PNG, zlib level 1": {"compress_level": 1},
               "PNG, zlib level 1 + RLE (what the service sends)": {"compress_level": 1, "strategy": zlib.Z_RLE}}


def ms(fn) -> float:
    started = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "concealer-utkface-64"))
    p.add_argument("--photos", type=int, default=16)
    p.add_argument("--photo-dir", type=Path, default=REPO.parent / "shared" / "datasets" / "lfw" / "lfw")
    args = p.parse_args()
    torch.set_num_threads(1)

    from conceal.apply import ApplyOptions, conceal_images, encode_png
    from conceal.data.images import decode_image, encode_image
    from conceal.faces.align import align_face, geometry_of
    from conceal.faces.detect import default_detector
    from conceal.faces.paste import face_mask, paste_faces
    from conceal.photos import conceal_photo
    from conceal.service import Limits, create_app, load_models
    from conceal.service.app import _conceal_upload

    datas = [f.read_bytes() for f in sorted(args.photo_dir.glob("*/*.jpg"))[: args.photos]]
    served = next(iter(load_models([args.model]).values()))
    model, detector, geometry = served.api, default_detector(), geometry_of(served.api)
    stages: dict[str, list[float]] = {}
    sizes: dict[str, list[float]] = {}  # PNG label -> KiB per photo
    crops = []
    model.apply(np.zeros((1, model.image_size, model.image_size, 3), np.uint8))  # warm-up
    for data in datas:
        image = decode_image(data)
        faces = detector(image)
        timings = {"decode": ms(lambda: decode_image(data)), "detect": ms(lambda: detector(image))}
        if faces:
            crop, matrix = align_face(image, faces[0]["landmarks"], geometry)
            released = model.apply(crop[None])
            timings["align one face"] = ms(lambda: align_face(image, faces[0]["landmarks"], geometry))
            timings["paste one detected face"] = ms(lambda: paste_faces(image, list(released), [matrix], [face_mask(geometry)]))
            crops.append(crop)
        timings["detect=false: crop, model, paste"] = ms(lambda: conceal_photo(model, image, detect=False))
        out = conceal_photo(model, image, detect=False)[0]
        for k, v in timings.items():
            stages.setdefault(k, []).append(v)
        for _ in range(4):  # the encoders interleaved, several times: they differ by a few ms on a noisy machine
            for label, kwargs in PNG_OPTIONS.items():
                stages.setdefault(label, []).append(ms(lambda: encode_image(out, **kwargs)))
                sizes.setdefault(label, []).append(len(encode_image(out, **kwargs)) / 1024)
    batch = np.stack((crops * 16)[:16])
    for n in (1, 4, 8, 16):
        stages[f"model, per face in a batch of {n}"] = [ms(lambda: model.apply(batch[:n])) / n for _ in range(5)]
    print("| stage | median ms |\n| --- | ---: |")
    for k, v in stages.items():
        size = f" ({statistics.median(sizes[k]):.0f} KiB)" if k in sizes else ""
        print(f"| {k}{size} | {statistics.median(v):.1f} |")

    app = create_app({served.name: served}, Limits())
    worker = ThreadPoolExecutor(1)
    paths = {
        "the service (_conceal_upload on a worker thread)":
            lambda d: worker.submit(_conceal_upload, served, d, {}, True, 10**9, app.state.batcher).result(),
        "conceal apply (conceal_images + encode_png)":
            lambda d: encode_png(conceal_images(model, [decode_image(d)], ApplyOptions())[0].images["image"]),
    }
    times: dict[str, list[float]] = {k: [] for k in paths}
    for data in datas:
        for label, path in paths.items():
            times[label].append(ms(lambda: path(data)))
    print()
    for label, v in times.items():
        print(f"{label}: median {statistics.median(v):.0f} ms per photo (detect=true)")


if __name__ == "__main__":
    main()
