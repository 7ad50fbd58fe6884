"""Measure where the five landmarks sit in each dataset's frames: conceal.faces.align.FACE_FRAMES.

    .venv/bin/python benchmarks/face_templates.py --root ../shared/datasets --n 400

Runs the photo detector (CenterFace) on a seeded sample of each dataset's TRAINING images, read in place,
keeps the detection nearest the frame's centre, and prints the per-landmark median as fractions of the
frame's side, with the spread (median absolute deviation) and how many frames had a face.
"""

from __future__ import annotations

import argparse
import random

import numpy as np

from conceal.data import open_dataset
from conceal.data.images import read_image
from conceal.faces.detect import FaceDetector


def frame_landmarks(dataset, n: int, seed: int, detector) -> tuple[np.ndarray, int]:
    records = [r for r in dataset.records if r.split == "train"]
    sample = random.Random(seed).sample(records, min(n, len(records)))
    found = []
    for record in sample:
        image = read_image(record.path)
        h, w = image.shape[:2]
        faces = detector(image, min_face=0)
        if faces:
            centre = np.array([w / 2, h / 2])
            face = min(faces, key=lambda f: np.linalg.norm(np.reshape(f["box"], (2, 2)).mean(0) - centre))
            found.append(np.array(face["landmarks"]) / [w, h])
    return np.stack(found), len(sample)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/datasets")
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    detector = FaceDetector()
    for name, folder in (("utkface", "utkface"), ("lfw", "lfw")):
        marks, total = frame_landmarks(open_dataset(name, f"{args.root}/{folder}"), args.n, args.seed, detector)
        median = np.median(marks, 0)
        spread = np.median(np.abs(marks - median), 0)
        print(f"{name}: a face in {len(marks)} of {total} training frames")
        print(f'    "{name}": ({", ".join(f"({x:.3f}, {y:.3f})" for x, y in median)}),')
        print("    spread (MAD):", ", ".join(f"({x:.3f}, {y:.3f})" for x, y in spread))


if __name__ == "__main__":
    main()
