"""Pick the covariance rank of the concealer's post-hoc eraser on the VALIDATION split (never the test split).

Usage: python benchmarks/concealer_eraser_sweep.py RUN_OR_MODEL_DIR [RANK ...]
For each rank: LEACE (+ covariance eraser of that rank) fitted on the train split's codes; the audit's fresh
vector attackers (conceal.audit.attackers: linear and MLP) trained on one half of the validation codes and
scored on the other (gender balanced accuracy, race macro-AUC); and reconstruction PSNR of the validation
faces from the erased codes.
"""
import sys

import numpy as np
import torch

from conceal.audit.attackers import attack_vectors, scores_line
from conceal.data import open_dataset
from conceal.methods import Concealer
from conceal.methods.erasure import compose, erase, fit_covariance_eraser, fit_leace, label_groups, label_targets

model = Concealer.load(sys.argv[1])
ranks = [int(r) for r in sys.argv[2:]] or [0, 4, 8, 12]
arr = open_dataset("utkface", "../shared/datasets/utkface/UTKFace").arrays(model.image_size, progress=False)
train, val = arr.subset("train"), arr.subset("val")
schema = model.schema
raw_train, raw_val = model.encode(train.images), model.encode(val.images)  # the run has no eraser yet: raw μ
targets, known = label_targets({n: train.labels[n] for n in schema.names}, schema)
mean, leace = fit_leace(raw_train[known], targets[known])
groups = label_groups({n: train.labels[n][known] for n in schema.names}, schema)
half = np.random.default_rng(0).permutation(len(val)) < len(val) // 2


def attack(codes, name, metric):
    y = val.labels[name]
    return scores_line(attack_vectors(codes[half], y[half], codes[~half], y[~half], schema[name], seeds=(0,)), metric)


for rank in ranks:
    projection = leace if rank == 0 else compose(leace, fit_covariance_eraser(erase(raw_train[known], mean, leace), groups, rank))
    codes = erase(raw_val, mean, projection)
    with torch.inference_mode():
        labels = {n: torch.from_numpy(val.labels[n]) for n in schema.names}
        recon = model.method.decode(torch.from_numpy(codes), labels).permute(0, 2, 3, 1).numpy()
    mse = ((recon - val.images / 255.0) ** 2).mean(axis=(1, 2, 3))
    print(f"rank {rank:2d}: gender bal. acc {attack(codes, 'gender', 'balanced_accuracy')} | race macro-AUC {attack(codes, 'race', 'auc')} | "
          f"val PSNR {np.mean(10 * np.log10(1 / mse)):.2f} dB", flush=True)
