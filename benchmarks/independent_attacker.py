"""Independent attackers against the public-model headline: do attackers the audit never runs beat it?

Usage: python benchmarks/independent_attacker.py MODEL_DIR REPORT_JSON [--release codes|images] [--root DATASET_ROOT] [-o benchmarks/independent_attacker]

Same threat model as the audit's headline (`conceal audit --threat-model public-model`): the same train /
val / test splits (LFW by person), the model's releases of the whole train split with their labels,
settings chosen on the validation split only, scored once on the test split. The attackers are ones the
audit's suite does not contain: extremely randomised trees, and torch MLPs whose widths, depth, dropout,
optimiser, loss weighting and seed differ from the suite's scikit-learn MLPs. On released images
(`--release images`) they read features the audit does not compute (HOG at 6-px cells with 12 orientations
beside 16x16 grey pixels, reduced to 256 PCA components fitted on the train split); with `--cnn` a torch
CNN of another design than the audit's (BatchNorm, four blocks, width 16, AdamW with a one-cycle schedule,
shifts; one network per concealed attribute) is also trained on the pixels. For each attribute of the headline the best independent attacker's *test* score (best
of them on test, which favours the independent side) is compared with the headline; the issue's criterion is
a gap of at most 0.04 (balanced accuracy, AUC; for age, 0.04 of the chance MAE). Appends one section per
model and release to OUT.md.
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


def extra_trees(label, seed, min_leaf, trees=300):
    common = dict(n_estimators=trees, min_samples_leaf=min_leaf, max_features="sqrt", n_jobs=1, random_state=seed)
    return ExtraTreesRegressor(**common) if label.kind == "continuous" else ExtraTreesClassifier(**common)


def torch_mlp(x, y, label, seed, widths, dropout, epochs=40, batch=128, lr=1e-3, balanced=False):
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
    weight = None
    if balanced and not continuous:  # each class weighs as much as the others (balanced accuracy is the metric)
        counts = np.bincount(y["train"].astype(np.int64), minlength=n_out).astype(np.float64)
        weight = torch.from_numpy((counts.sum() / np.maximum(counts, 1) / n_out).astype(np.float32))
    loss_fn = ((lambda out, t: torch.nn.functional.mse_loss(out[:, 0], t)) if continuous
               else (lambda out, t: torch.nn.functional.cross_entropy(out, t, weight=weight)))
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


MLPS = (("torch-mlp-768-384", (768, 384), 0.3, 1234, False),
        ("torch-mlp-384x3", (384, 384, 384), 0.1, 77, False),
        ("torch-mlp-512-balanced", (512, 256), 0.2, 555, True))  # class-weighted cross-entropy


def attack(x, y, label, seed, trees=300, leaves=(1, 5)):
    """-> {attacker: {"val": metrics, "test": metrics, "params", "seconds"}}."""
    results = {}
    for min_leaf in leaves:
        start = time.perf_counter()
        model = extra_trees(label, seed, min_leaf, trees).fit(x["train"], y["train"] if label.kind == "continuous" else y["train"].astype(int))
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
            results["extra-trees"] = {**entry, "params": {"min_samples_leaf": min_leaf, "trees": trees}, "seconds": round(time.perf_counter() - start, 1)}
    for name, widths, dropout, offset, balanced in MLPS:
        if balanced and label.kind == "continuous":
            continue
        start = time.perf_counter()
        predictions = torch_mlp(x, y, label, seed + offset, widths, dropout, balanced=balanced)
        results[name] = {**{s: score(y[s], predictions[s], label) for s in ("val", "test")},
                         "params": {"widths": list(widths), "dropout": dropout, "seed": seed + offset, "balanced": balanced},
                         "seconds": round(time.perf_counter() - start, 1)}
    return results


# --------------------------------------------------------------------------------------------------
# Released images: features the audit does not compute, and a CNN of another design
# --------------------------------------------------------------------------------------------------

PCA_DIM = 256
CNN_SIZE, CNN_WIDTH, CNN_EPOCHS = 32, 16, 5


def image_features(images: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """split -> (N, F): HOG (6-px cells on 64 px, 12 orientations, 2x2 blocks) and 16x16 grey pixels, PCA on train."""
    from skimage.color import rgb2gray
    from skimage.feature import hog
    from sklearn.decomposition import PCA

    def one(image):
        grey = rgb2gray(image)
        cell = max(3, round(grey.shape[0] * 6 / 64))
        k = grey.shape[0] // 16
        small = grey[: 16 * k, : 16 * k].reshape(16, k, 16, k).mean(axis=(1, 3))  # 16x16 block means
        return np.concatenate([hog(grey, orientations=12, pixels_per_cell=(cell, cell), cells_per_block=(2, 2)), small.ravel()]).astype(np.float32)

    raw = {s: np.stack([one(im) for im in images[s]]) for s in images}
    scaler = StandardScaler().fit(raw["train"])
    pca = PCA(n_components=min(PCA_DIM, *raw["train"].shape), random_state=seed).fit(scaler.transform(raw["train"]))
    return {s: pca.transform(scaler.transform(raw[s])).astype(np.float32) for s in raw}


class OtherCNN(torch.nn.Module):
    """Not the audit's AttackCNN: BatchNorm, four conv blocks (the last two of two convolutions), a hidden dense layer."""

    def __init__(self, n_out, width=CNN_WIDTH):
        super().__init__()
        layers, c = [], 3
        for i, w in enumerate((width, width * 2, width * 4, width * 4)):
            layers += [torch.nn.Conv2d(c, w, 3, padding=1, bias=False), torch.nn.BatchNorm2d(w), torch.nn.ReLU(True)]
            if i >= 2:
                layers += [torch.nn.Conv2d(w, w, 3, padding=1, bias=False), torch.nn.BatchNorm2d(w), torch.nn.ReLU(True)]
            if i < 3:
                layers.append(torch.nn.MaxPool2d(2))
            c = w
        self.net = torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(c, 128),
                                       torch.nn.ReLU(True), torch.nn.Dropout(0.4), torch.nn.Linear(128, n_out))

    def forward(self, x):
        return self.net(x)


def cnn_attack(images: dict[str, np.ndarray], y: dict[str, np.ndarray], label, seed, epochs=CNN_EPOCHS, batch=64):
    """A CNN per attribute (AdamW, one-cycle learning rate, flips and 2-px shifts), the epoch of best validation loss."""
    from conceal.audit.attackers import images_to_tensor

    x = {s: images_to_tensor(images[s], CNN_SIZE) for s in images}
    continuous = label.kind == "continuous"
    mean, std = (float(y["train"].mean()), float(y["train"].std()) or 1.0) if continuous else (0.0, 1.0)
    targets = {s: torch.from_numpy(((y[s] - mean) / std).astype(np.float32)) if continuous else torch.from_numpy(y[s].astype(np.int64))
               for s in ("train", "val")}
    loss_fn = (lambda out, t: torch.nn.functional.mse_loss(out[:, 0], t)) if continuous else torch.nn.functional.cross_entropy
    torch.manual_seed(seed + 4242)
    generator = torch.Generator().manual_seed(seed + 4242)
    net = OtherCNN(1 if continuous else label.n_classes)
    steps = epochs * -(-len(x["train"]) // batch)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)

    def forward(split):
        return torch.cat([net(x[split][i : i + 512]) for i in range(0, len(x[split]), 512)])

    best, best_state = float("inf"), None
    for _ in range(epochs):
        net.train()
        for rows in torch.randperm(len(x["train"]), generator=generator).split(batch):
            xb = x["train"][rows]
            flip = torch.rand(len(rows), generator=generator) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            optimizer.zero_grad()
            loss_fn(net(xb), targets["train"][rows]).backward()
            optimizer.step()
            schedule.step()
        net.eval()
        with torch.no_grad():
            val_loss = float(loss_fn(forward("val"), targets["val"]))
        if val_loss < best:
            best, best_state = val_loss, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        out = {s: forward(s) for s in ("val", "test")}
    if continuous:
        return {s: out[s][:, 0].numpy().astype(np.float64) * std + mean for s in out}
    return {s: torch.softmax(out[s], dim=1).numpy().astype(np.float64) for s in out}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("report", help="the model's report.json with a public-model headline")
    p.add_argument("--dataset", default=None)
    p.add_argument("--root", default=None)
    p.add_argument("--release", choices=("codes", "images"), default="codes", help="which headline to check (default: codes)")
    p.add_argument("--cnn", action="store_true", help="images: also train the CNN, for each concealed attribute "
                   "(~8 ms an image an epoch on one loaded core: ~11 min an attribute on UTKFace's 16k train faces)")
    p.add_argument("--trees", type=int, default=300, help="extra trees: trees per forest (default 300)")
    p.add_argument("--leaves", default="1,5", help="extra trees: min_samples_leaf values tried, chosen on validation (default 1,5)")
    p.add_argument("--max-train", type=int, default=None, help="a seeded sample of the train split (smoke runs only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", default="benchmarks/independent_attacker")
    args = p.parse_args(argv)
    report = json.loads(Path(args.report).read_text())
    headline = {k: v for k, v in report.get("headline", {}).get(args.release, {}).items() if k != "identity"}
    if not headline:
        p.error(f"{args.report} has no public-model headline for {args.release}")
    info = read_model_info(args.model)
    dataset = args.dataset or info["data"]["dataset"]
    start = time.perf_counter()
    from conceal.audit import _hook
    from conceal.methods import method_class

    hook = method_class(info["method"]).audit_release  # the audit's release options (the concealer's fixed target)
    ctx = AuditContext(Path(args.model), info, dataset, Path("/nonexistent"), root=args.root, seed=args.seed, judges_spec="off",
                       max_train=args.max_train, release_options=_hook(hook) if hook else None)
    schema = ctx.split("test").schema
    with compute_threads(1):
        splits = ("train", "val", "test")
        released = {s: ctx.released(s, args.release) for s in splits}
        print(f"released {args.release}: {time.perf_counter() - start:.0f} s", flush=True)
        codes = image_features(released, args.seed) if args.release == "images" else released
        if args.release == "images":
            print(f"image features {codes['train'].shape[1]}-d: {time.perf_counter() - start:.0f} s", flush=True)
        rows = []
        for name, h in headline.items():
            label = schema[name]
            metric, higher = primary_metric(label)
            x, y = {}, {}
            for s in codes:
                v = np.asarray(ctx.split(s).labels[name], np.float64)
                known = ~np.isnan(v)
                x[s], y[s] = codes[s][known].astype(np.float32), v[known]
            results = attack(x, y, label, args.seed, trees=args.trees, leaves=tuple(int(v) for v in args.leaves.split(",")))
            if args.release == "images" and args.cnn and h.get("role") == "concealed":
                t0 = time.perf_counter()
                ims = {s: released[s][~np.isnan(np.asarray(ctx.split(s).labels[name], np.float64))] for s in splits}
                predictions = cnn_attack(ims, y, label, args.seed)
                results["other-cnn"] = {**{s: score(y[s], predictions[s], label) for s in ("val", "test")},
                                        "params": {"size": CNN_SIZE, "width": CNN_WIDTH, "epochs": CNN_EPOCHS},
                                        "seconds": round(time.perf_counter() - t0, 1)}
            best = (max if higher else min)(results, key=lambda a: results[a]["test"][metric])
            gap = (results[best]["test"][metric] - h["score"]) * (1 if higher else -1)
            allowed = MARGIN * (chance_score(label, y["train"], y["test"]) if metric == "mae" else 1.0)
            rows.append((name, metric, h, results, best, gap, allowed))
            print(f"{name}: headline {h['score']:.3f} ({h['attacker']}); best independent {best} {results[best]['test'][metric]:.3f}; gap {gap:+.3f}", flush=True)
    seconds = time.perf_counter() - start
    model = Path(args.model).name
    import os

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    features = ("HOG + grey-pixel PCA features for the trees and MLPs" + (", a CNN on the pixels for the concealed attributes" if args.cnn else "")
                if args.release == "images" else "the released codes")
    lines = [f"## {model} ({args.release})", "",
             f"Headline from `{args.report}` (n_train {next(iter(headline.values()))['n_train']}, n_test {next(iter(headline.values()))['n_test']}). "
             f"Independent attackers on the same splits ({features}; trained on {len(ctx.split('train'))} train faces), {seconds:.0f} s on one thread, finished at load {load} "
             f"(1/5/15 min) on {os.cpu_count()} cores.", ""]
    columns = list(dict.fromkeys(a for row in rows for a in row[3]))
    lines += ["| attribute | metric | headline [95% CI] (attacker) | chance | " + " | ".join(columns) + " | gap (best independent − headline) | within 0.04? |",
              "|---|---|---|---|" + "---|" * len(columns) + "---|---|"]
    for name, metric, h, results, best, gap, allowed in rows:
        lo, hi = h["ci95"]
        cells = [f"{results[a]['test'][metric]:.3f} (val {results[a]['val'][metric]:.3f})" if a in results else "—" for a in columns]
        lines.append(f"| {name} | {metric} | {h['score']:.3f} [{lo:.3f}, {hi:.3f}] ({h['attacker']}) | {h['chance']:.3f} | " + " | ".join(cells)
                     + f" | {gap:+.3f} | {'yes' if gap <= allowed else '**no**'} (allowed {allowed:.3f}) |")
    command = "python benchmarks/independent_attacker.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    lines += ["", f"Produced by `{command}`.", ""]
    out = Path(args.out).with_suffix(".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    header = "# Independent attackers against the public-model headline\n\n" + __doc__.split("\n\n", 2)[2].replace("\n", " ") + "\n\n"
    previous = out.read_text() if out.exists() else header
    out.write_text(previous + "\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
