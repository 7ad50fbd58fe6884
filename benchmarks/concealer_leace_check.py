"""Codes before/after the LEACE eraser: logistic regression and MLP attackers on the UTKFace test split.

Usage: python benchmarks/concealer_leace_check.py RUN_OR_MODEL_DIR  (the eraser is fitted on the train split)
"""
import sys, numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from conceal.data import open_dataset
from conceal.methods import Concealer
from conceal.methods.erasure import fit_leace, erase, label_targets
m = Concealer.load(sys.argv[1])
arr = open_dataset('utkface','../shared/datasets/utkface/UTKFace').arrays(64, progress=False)
train, test = arr.subset('train'), arr.subset('test')
ct = m.encode(train.images); cte = m.encode(test.images)
Z, known = label_targets(train.labels, m.schema)
mean, P = fit_leace(ct[known], Z[known])
for tag, codes in (("raw", cte), ("erased", erase(cte, mean, P))):
    h = len(codes)//2
    for name in ("gender", "race"):
        y = test.labels[name]
        for an, clf in (("LR", LogisticRegression(max_iter=3000)), ("MLP", MLPClassifier((128,), max_iter=300, random_state=0))):
            c = make_pipeline(StandardScaler(), clf).fit(codes[:h], y[:h]); p = c.predict_proba(codes[h:])
            auc = roc_auc_score(y[h:], p[:,1]) if p.shape[1]==2 else roc_auc_score(y[h:], p, multi_class='ovr')
            print(f"{tag} {name} {an}: bacc {balanced_accuracy_score(y[h:], p.argmax(1)):.3f} auc {auc:.3f}", flush=True)
