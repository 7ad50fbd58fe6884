"""Independent attackers against the public-model headline: do attackers the audit never runs beat it?

Usage: python benchmarks/independent_attacker.py MODEL_DIR REPORT_JSON [--root DATASET_ROOT] [-o benchmarks/independent_attacker]

Same threat model as the audit's headline (`conceal audit --threat-model public-model`): the same train /
val / test splits (LFW by person), the model's released codes of the whole train split with their labels,
settings chosen on the validation split only, scored once on the test split. The attackers are ones the
audit's suite does not contain: extremely randomised trees, and two torch MLPs whose widths, depth, dropout,
optimiser and seed differ from the suite's scikit-learn MLPs. For each attribute of the codes headline the
best independent attacker's *test* score (best of them on test, which favours the independent side) is
compared with the headline; the issue's criterion is a gap of at most 0.04 (balanced accuracy, AUC; for age,
0.04 of the chance MAE). Appends one section per model to OUT.md.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor
from sklearn.preprocessing import StandardScaler

from conceal.audit.attackers import compute_threads
from conceal.audit.context import AuditContext
from conceal.audit.suite import chance_score, primary_metric, score
from conceal.modelfile import read_model_info

MARGIN = 0.04


def extra_trees(label, seed, min_leaf):
    common = dict(n_estimators=300, min_samples_leaf=min_leaf, max_features="sqrt", n_jobs=1, random_state=seed)
    return ExtraTreesRegressor(**common) if label.kind == "continuous" else ExtraTreesClassifier(**common)


def torch_mlp(x, y, label, seed, widths, dropout, epochs=40, batch=128, lr=1e-3):
    """A torch MLP (AdamW, dropout, standardised inputs); the epoch with the best validation loss is kept.
    ``x``/``y``: split -> arrays. Returns split -> predictions in the suite's format."""
    scaler = StandardScaler().fit(x["train"])
    xs = {s: torch.from_numpy(scaler.transform(x[s]).astype(np.float32)) for s in x}
    continuous = label.kind == "continuous"
    mean, std = (float(y["train"].mean()), float(y["train"].std()) or 1.0) if continuous else (0.0, 1.0)
    target = torch.from_numpy(((y["train"] - mean) / std).astype(np.float32)) if continuous else torch.from_numpy(y["train"].astype(np.int64))
    n_out = 1 if continuous else label.n_classes
    torch.manual_seed(seed)
    layers, width_in = [], xs["train"].shape[1]
    for w in widths:
        layers += [torch.nn.Linear(width_in, w), torch.nn.GELU(), torch.nn.Dropout(dropout)]
        width_in = w
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width_in, n_out))
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-2)
    loss_fn = (lambda out, t: torch.nn.functional.mse_loss(out[:, 0], t)) if continuous else torch.nn.functional.cross_entropy
    val_target = torch.from_numpy(((y["val"] - mean) / std).astype(np.float32)) if continuous else torch.from_numpy(y["val"].astype(np.int64))
    generator = torch.Generator().manual_seed(seed)
    best, best_state, patience = float("inf"), None, 0
    for _ in range(epochs):
        net.train()
        for rows in torch.randperm(len(target), generator=generator).split(batch):
            optimizer.zero_grad()
            loss_fn(net(xs["train"][rows]), target[rows]).backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            val_loss = float(loss_fn(net(xs["val"]), val_target))
        if val_loss < best:
            best, best_state, patience = val_loss, {k: v.clone() for k, v in net.state_dict().items()}, 0
        else:
            patience += 1
            if patience >= 6:
                break
    net.load_state_dict(best_state)
    with torch.no_grad():
        out = {s: net(xs[s]) for s in ("val", "test")}
    if continuous:
        return {s: out[s][:, 0].numpy().astype(np.float64) * std + mean for s in out}
    return {s: torch.softmax(out[s], dim=1).numpy().astype(np.float64) for s in out}


def attack(x, y, label, seed):
    """-> {attacker: {"val": metrics, "test": metrics, "params", "seconds"}}."""
    results = {}
    for min_leaf in (1, 5):
        start = time.perf_counter()
        model = extra_trees(label, seed, min_leaf).fit(x["train"], y["train"] if label.kind == "continuous" else y["train"].astype(int))
        predictions = {}
        for s in ("val", "test"):
            if label.kind == "continuous":
                predictions[s] = model.predict(x[s]).astype(np.float64)
            else:
                full = np.zeros((len(x[s]), label.n_classes))
                full[:, model.classes_.astype(int)] = model.predict_proba(x[s])
                predictions[s] = full
        entry = {s: score(y[s], predictions[s], label) for s in ("val", "test")}
        metric, higher = primary_metric(label)
        previous = results.get("extra-trees")
        if previous is None or (entry["val"][metric] > previous["val"][metric]) == higher:
            results["extra-trees"] = {**entry, "params": {"min_samples_leaf": min_leaf}, "seconds": round(time.perf_counter() - start, 1)}
    for name, widths, dropout, mlp_seed in (("torch-mlp-768-384", (768, 384), 0.3, seed + 1234),
                                            ("torch-mlp-384x3", (384, 384, 384), 0.1, seed + 77)):
        start = time.perf_counter()
        predictions = torch_mlp(x, y, label, mlp_seed, widths, dropout)
        results[name] = {**{s: score(y[s], predictions[s], label) for s in ("val", "test")},
                         "params": {"widths": list(widths), "dropout": dropout, "seed": mlp_seed}, "seconds": round(time.perf_counter() - start, 1)}
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("report", help="the model's report.json with a public-model headline")
    p.add_argument("--dataset", default=None)
    p.add_argument("--root", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", default="benchmarks/independent_attacker")
    args = p.parse_args(argv)
    report = json.loads(Path(args.report).read_text())
    headline = report.get("headline", {}).get("codes")
    if not headline:
        p.error(f"{args.report} has no public-model headline for codes")
    info = read_model_info(args.model)
    dataset = args.dataset or info["data"]["dataset"]
    start = time.perf_counter()
    ctx = AuditContext(Path(args.model), info, dataset, Path("/nonexistent"), root=args.root, seed=args.seed, judges_spec="off")
    schema = ctx.split("test").schema
    with compute_threads(1):
        codes = {s: ctx.released(s, "codes") for s in ("train", "val", "test")}
        rows = []
        for name, h in headline.items():
            label = schema[name]
            metric, higher = primary_metric(label)
            x, y = {}, {}
            for s in codes:
                v = np.asarray(ctx.split(s).labels[name], np.float64)
                known = ~np.isnan(v)
                x[s], y[s] = codes[s][known].astype(np.float32), v[known]
            results = attack(x, y, label, args.seed)
            best = (max if higher else min)(results, key=lambda a: results[a]["test"][metric])
            gap = (results[best]["test"][metric] - h["score"]) * (1 if higher else -1)
            allowed = MARGIN * (chance_score(label, y["train"], y["test"]) if metric == "mae" else 1.0)
            rows.append((name, metric, h, results, best, gap, allowed))
            print(f"{name}: headline {h['score']:.3f} ({h['attacker']}); best independent {best} {results[best]['test'][metric]:.3f}; gap {gap:+.3f}", flush=True)
    seconds = time.perf_counter() - start
    model = Path(args.model).name
    lines = [f"## {model} (codes)", "",
             f"Headline from `{args.report}` (n_train {next(iter(headline.values()))['n_train']}, n_test {next(iter(headline.values()))['n_test']}). "
             f"Independent attackers on the same splits, {seconds:.0f} s on one thread.", "",
             "| attribute | metric | headline [95% CI] (attacker) | " + " | ".join(rows[0][3]) + " | gap (best independent − headline) | within 0.04? |",
             "|---|---|---|" + "---|" * len(rows[0][3]) + "---|---|"]
    for name, metric, h, results, best, gap, allowed in rows:
        lo, hi = h["ci95"]
        cells = [f"{results[a]['test'][metric]:.3f} (val {results[a]['val'][metric]:.3f})" for a in results]
        lines.append(f"| {name} | {metric} | {h['score']:.3f} [{lo:.3f}, {hi:.3f}] ({h['attacker']}) | " + " | ".join(cells)
                     + f" | {gap:+.3f} | {'yes' if gap <= allowed else '**no**'} (allowed {allowed:.3f}) |")
    command = "python benchmarks/independent_attacker.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    lines += ["", f"Produced by `{command}`.", ""]
    out = Path(args.out).with_suffix(".md")
    header = "# Independent attackers against the public-model headline\n\n" + __doc__.split("\n\n", 2)[2].replace("\n", " ") + "\n\n"
    previous = out.read_text() if out.exists() else header
    out.write_text(previous + "\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
