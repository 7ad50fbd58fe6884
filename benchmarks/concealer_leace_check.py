"""Codes before/after the LEACE eraser: the audit's fresh linear and MLP attackers on the UTKFace test split.

Usage: python benchmarks/concealer_leace_check.py RUN_OR_MODEL_DIR  (the eraser is fitted on the train split)
Attackers (conceal.audit.attackers) train on the first half of the test codes and are scored on the second.
"""
import sys

from conceal.audit.attackers import attack_vectors, scores_line
from conceal.data import open_dataset
from conceal.methods import Concealer
from conceal.methods.erasure import erase, fit_leace, label_targets

m = Concealer.load(sys.argv[1])
arr = open_dataset("utkface", "../shared/datasets/utkface/UTKFace").arrays(64, progress=False)
train, test = arr.subset("train"), arr.subset("test")
ct, cte = m.encode(train.images), m.encode(test.images)
Z, known = label_targets(train.labels, m.schema)
mean, P = fit_leace(ct[known], Z[known])
for tag, codes in (("raw", cte), ("erased", erase(cte, mean, P))):
    h = len(codes) // 2
    for name in ("gender", "race"):
        y = test.labels[name]
        result = attack_vectors(codes[:h], y[:h], codes[h:], y[h:], m.schema[name], seeds=(0,))
        print(f"{tag} {name}: bacc {scores_line(result)} | auc {scores_line(result, 'auc')}", flush=True)
