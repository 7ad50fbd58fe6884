"""Does the post-hoc eraser look stronger than it is because the audit's attacker trains on the eraser's own fit set?

`conceal erase` fits the eraser on the train split's codes, and the public-model audit then trains its attackers
on the erased codes of that same split. A real attacker's labelled faces are not the eraser's fit set: on its own
faces the erased directions still carry whatever the eraser fitted to noise. This check splits the train split in
two seeded halves A and B, trains the attackers on B's erased codes and scores them on the test split, with the
eraser fitted either on B itself (what the audit measures) or on A (disjoint, the realistic case). Same attackers,
same training faces, so only the eraser's fit set differs.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/concealer_eraser_holdout.py models/concealer-utkface-128 \
        --root ../shared/datasets/utkface/UTKFace --ranks 0 32

The attackers are scikit-learn's (an MLP 512-256 with early stopping and a 25-nearest-neighbour vote on
standardised codes), not the audit's whole zoo: the comparison is between the two fit sets, not a headline.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def attack(x_train, y_train, x_test, y_test, kind: str, seed: int = 0) -> float:
    """Gender balanced accuracy, or race macro one-vs-rest AUC, of the better of two attackers."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = []
    for estimator in (MLPClassifier((512, 256), early_stopping=True, max_iter=200, random_state=seed),
                      KNeighborsClassifier(25)):
        model = make_pipeline(StandardScaler(), estimator).fit(x_train, y_train)
        if kind == "binary":
            scores.append(balanced_accuracy_score(y_test, model.predict(x_test)))
        else:
            scores.append(roc_auc_score(y_test, model.predict_proba(x_test), multi_class="ovr", average="macro"))
    return max(scores)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--root", required=True)
    ap.add_argument("--ranks", type=int, nargs="+", default=[0, 32], help="covariance ranks (LEACE alone is 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--out", type=Path, default=None, help="write the numbers as JSON too")
    args = ap.parse_args(argv)

    from conceal.audit.context import AuditContext
    from conceal.methods import Concealer
    from conceal.methods.erasure import erase, fit_projection, raw_codes_of
    from conceal.modelfile import read_model_info

    started = time.perf_counter()
    ctx = AuditContext(args.model, read_model_info(args.model), "utkface", args.model, root=args.root)
    train, test = ctx.split("train"), ctx.split("test")
    model = Concealer.load(args.model).method  # the nn.Module (in eval mode): raw codes, before any eraser

    codes_train, codes_test = raw_codes_of(model, train.images), raw_codes_of(model, test.images)  # (N, d), before any eraser
    schema = model.concealed
    halves = np.random.default_rng(args.seed).permutation(len(codes_train))
    half_a, half_b = halves[: len(halves) // 2], halves[len(halves) // 2 :]

    def fitted(rows, rank):  # the eraser `conceal erase --covariance-rank rank` fits, on these rows only
        mean, projection, _ = fit_projection(codes_train[rows], {n: train.labels[n][rows] for n in schema.names}, schema, rank)
        return mean, projection

    tasks = {"gender": "binary", "race": "categorical"}
    results = {"n_half": len(half_b), "n_test": len(codes_test), "chance": {"gender": 0.5, "race": 0.5}, "points": []}
    print(f"train halves of {len(half_a)} / {len(half_b)} faces, test {len(codes_test)}; chance: gender balanced acc 0.5, race macro-AUC 0.5")
    for rank in args.ranks:
        for fit_on, rows in (("B (the attacker's own faces, as the audit)", half_b), ("A (disjoint from the attacker's)", half_a)):
            mean, projection = fitted(rows, rank)
            x_train, x_test = erase(codes_train[half_b], mean, projection), erase(codes_test, mean, projection)
            point = {"covariance_rank": rank, "eraser_fitted_on": fit_on[0]}
            for name, kind in tasks.items():
                y_train, y_test = train.labels[name][half_b], test.labels[name]
                ok_train, ok_test = ~np.isnan(y_train), ~np.isnan(y_test)
                point[name] = attack(x_train[ok_train], y_train[ok_train].astype(int), x_test[ok_test], y_test[ok_test].astype(int), kind, args.seed)
            results["points"].append(point)
            print(f"rank {rank:>2}, eraser fitted on {fit_on}: gender {point['gender']:.3f}, race AUC {point['race']:.3f}", flush=True)
    results["seconds"] = round(time.perf_counter() - started)
    print(f"{results['seconds']} s")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
