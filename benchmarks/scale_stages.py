"""Per-image cost of each stage of `conceal apply` (decode, detect, align, model, paste, encode), one thread,
on the bundled demo photo (skimage's astronaut, 512×512, one face), for benchmarks/SCALE.md.

    PYTHONPATH=src python benchmarks/scale_stages.py models/concealer-utkface-64 models/anonymizer-lfw-leace models/masker-lfw-gender

Each stage is timed on its own, ``--repeats`` times (median, milliseconds per photo); the model stage also
at a batch of 64 faces (per face), the way --no-detect batches crops. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from PIL import Image
    from skimage import data

    from conceal.data.images import read_image
    from conceal.faces.align import align_face, geometry_of
    from conceal.faces.detect import default_detector
    from conceal.faces.paste import face_mask, paste_faces
    from conceal.methods import load_api

    photo = np.asarray(data.astronaut())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "astronaut.jpg"
        Image.fromarray(photo).save(path, quality=90)
        decode = median_ms(lambda: read_image(path), args.repeats)
    detector = default_detector()
    faces = detector(photo)
    print(f"load average at start {os.getloadavg()}; {len(faces)} face(s) found; 1 thread; median of {args.repeats}")
    detect = median_ms(lambda: detector(photo), args.repeats)
    rows = []
    for model_path in args.models:
        model = load_api(model_path, fold_batch_norm=True, backend="auto")
        geometry = geometry_of(model)
        align = median_ms(lambda: [align_face(photo, f["landmarks"], geometry) for f in faces], args.repeats)
        crops, matrices = zip(*(align_face(photo, f["landmarks"], geometry) for f in faces))
        crops = np.stack(crops)
        released = model.apply(crops)
        one = median_ms(lambda: model.apply(crops), args.repeats)
        batch = np.repeat(crops[:1], 64, axis=0)
        per_face_64 = median_ms(lambda: model.apply(batch), max(3, args.repeats // 5)) / 64
        mask = face_mask(geometry)
        paste = median_ms(lambda: paste_faces(photo, list(released), list(matrices), [mask] * len(faces)), args.repeats)
        out = paste_faces(photo, list(released), list(matrices), [mask] * len(faces))
        encode = median_ms(lambda: Image.fromarray(out).save(io.BytesIO(), format="PNG"), args.repeats)  # metadata-free PNG, as apply writes
        total = decode + detect + align + one + paste + encode
        rows.append((Path(model_path).name, model.backend, decode, detect, align, one, per_face_64, paste, encode, total))
    print("\n| model (apply backend) | decode JPEG | detect | align | model (1 face) | model (per face, batch 64) | paste | encode PNG | total (1 face) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, backend, *ms in rows:
        print(f"| {name} ({backend}) | " + " | ".join(f"{v:.1f}" for v in ms) + " |")
    print(f"\nload average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
