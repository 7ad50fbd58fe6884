"""Fresh attackers, trained after the fact on what a method releases.

The audit never reuses a model from training (the concealer's own critic or classifier would flatter it):
every number comes from an attacker fitted here, on one half of the audited images, and scored on the
other half. Three attackers per label:

- ``baseline``: predicts without looking at the input (majority class of the attacker's training half, or
  its mean age): the number every other score must beat;
- ``linear``: standardised features -> logistic regression (classes) or ridge regression (age);
- ``mlp``: standardised features -> a small multi-layer perceptron (one hidden layer of 128);

and, on released images, a small CNN trained from scratch (``attack_images``).

A run is one (half-split, model seed) pair; results report the mean and spread over runs. Rows whose label
is NaN (unknown) are left out of that label's fit and score, and counted. When the dataset knows who is who
(``groups``: identities), the halves are identity-disjoint, so no attacker can pass by recognising a person
it saw in training.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.compose import TransformedTargetRegressor
from sklearn.decomposition import PCA
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import GroupShuffleSplit
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn

from ..data.schema import Label, LabelSchema
from .metrics import chance_balanced_accuracy, class_probabilities, classification_metrics, regression_metrics, spread

BASELINE = "baseline"
MIN_ROWS = 8  # a label with fewer known rows in either half is not attacked (reported as skipped)


# --------------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def compute_threads(n: int = 1):
    """Run BLAS/OpenMP (scikit-learn) and torch on ``n`` threads, restoring torch's count afterwards.

    Why one: the attackers are small (48-d codes, a tiny CNN on 32x32 inputs), where extra threads buy
    little, and on a 2-core machine that is busy with anything else, oversubscribed thread pools made
    them 10-30x slower in measurement (an MLP fit: 0.13 s on one thread, 2.9 s on the default pool).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(before)


def single_threaded(function: Callable) -> Callable:
    """Decorator: run ``function`` inside ``compute_threads(1)``."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with compute_threads(1):
            return function(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------------------------------
# Splits and results
# --------------------------------------------------------------------------------------------------


def split_halves(n: int, seed: int, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint, sorted index arrays (attacker train, attacker test), about n/2 rows each.

    ``groups`` (N,) int (e.g. identities, -1 = unknown): when given, whole groups go to one side; rows
    with -1 are each their own group.
    """
    if groups is None:
        groups = np.full(n, -1)
    groups = np.asarray(groups, dtype=np.int64)
    singletons = groups < 0
    groups = np.where(singletons, -1 - np.arange(n), groups)  # unique negative ids for unknown rows
    splitter = GroupShuffleSplit(n_splits=1, test_size=0.5, random_state=seed)
    train, test = next(splitter.split(np.zeros(n), groups=groups))
    return np.sort(train), np.sort(test)


def known_rows(y: np.ndarray) -> np.ndarray:
    """Boolean mask of rows whose label is known (not NaN)."""
    return ~np.isnan(np.asarray(y, dtype=np.float64))


def _summarize(runs: list[dict], label: Label, seeds, y_all: np.ndarray, split: str) -> dict:
    """Per-run scores -> {attacker: {metric: spread over runs}}, plus counts, baseline and the best attacker."""
    known = known_rows(y_all)
    result = {
        "label": label.name,
        "kind": label.kind,
        "classes": list(label.classes),
        "seeds": [int(s) for s in seeds],
        "split": split,
        "n_known": int(known.sum()),
        "n_unknown": int((~known).sum()),
    }
    if label.kind != "continuous":
        result["chance_balanced_accuracy"] = chance_balanced_accuracy(y_all[known])
    runs = [r for r in runs if r is not None]
    if not runs:
        result["skipped"] = f"fewer than {MIN_ROWS} known rows, or one class only, in an attacker half"
        return result
    result["n_train"] = int(np.mean([r["n_train"] for r in runs]))
    result["n_test"] = int(np.mean([r["n_test"] for r in runs]))
    names = list(runs[0]["scores"])
    result["attackers"] = {
        name: {metric: spread([r["scores"][name][metric] for r in runs]) for metric in runs[0]["scores"][name]}
        for name in names
    }
    return _with_best(result)


def _with_best(result: dict) -> dict:
    """Add ``best``: the attacker (baseline excluded) with the best mean primary metric."""
    metric, higher = ("mae", False) if result["kind"] == "continuous" else ("balanced_accuracy", True)
    candidates = [n for n in result.get("attackers", {}) if n != BASELINE]
    if candidates:
        pick = max if higher else min
        best = pick(candidates, key=lambda n: result["attackers"][n][metric]["mean"])
        result["best"] = {"attacker": best, metric: result["attackers"][best][metric]["mean"]}
    return result


def combine(results: dict[str, dict]) -> dict:
    """One result from several attacker families run on the same halves (same seeds and groups), e.g.
    ``{"cnn": audit_images(...)[name], "pca": pixel_baseline(...)[name]}``: attackers become "cnn",
    "pca-linear", "pca-mlp"; the input-blind baseline (identical on identical halves) is kept once."""
    first = next(iter(results.values()))
    if any(r["seeds"] != first["seeds"] for r in results.values()):
        raise ValueError("combine() needs results from the same seeds (the same halves)")
    merged = {k: v for k, v in first.items() if k not in ("attackers", "best")}
    if any("skipped" in r for r in results.values()):
        return merged
    merged["attackers"] = {BASELINE: first["attackers"][BASELINE]}
    for family, result in results.items():
        for name, scores in result["attackers"].items():
            if name != BASELINE:
                merged["attackers"][name if name == family else f"{family}-{name}"] = scores
    return _with_best(merged)


def _usable(y_train: np.ndarray, y_test: np.ndarray, label: Label) -> bool:
    if min(len(y_train), len(y_test)) < MIN_ROWS:
        return False
    return label.kind == "continuous" or len(np.unique(y_train)) >= 2


def _attack_halves(n: int, labels: dict, schema: LabelSchema, seeds, groups, prepare: Callable, run: Callable) -> dict[str, dict]:
    """The audit's loop: per seed a fresh half-split; ``prepare(train, test, seed)`` builds both halves'
    inputs once (shared by every label); ``run(inputs_train, y_train, inputs_test, y_test, label, seed)``
    fits and scores fresh attackers for one label."""
    runs: dict[str, list] = {name: [] for name in labels}
    for seed in seeds:
        train, test = split_halves(n, seed, groups)
        inputs_train, inputs_test = prepare(train, test, seed)
        for name, y in labels.items():
            y = np.asarray(y, np.float64)
            runs[name].append(run(inputs_train, y[train], inputs_test, y[test], schema[name], seed))
    split = "identity-disjoint halves" if groups is not None and np.any(np.asarray(groups) >= 0) else "random halves"
    return {name: _summarize(runs[name], schema[name], seeds, np.asarray(labels[name], np.float64), split) for name in labels}


# --------------------------------------------------------------------------------------------------
# Vector attackers (codes, or pixels reduced by PCA)
# --------------------------------------------------------------------------------------------------


def vector_attackers(label: Label, seed: int) -> dict:
    """The audit's fresh, unfitted scikit-learn estimators for one run: name (baseline, "linear", "mlp") -> estimator.

    The MLPs train to convergence (max 300 epochs, L2 alpha 0.01) rather than with early stopping: on
    attacker halves of a few hundred rows, early stopping's 10% validation slice stopped them while still
    weak (AUC 0.92 instead of 1.0 on a planted, nearly separable signal), flattering the method audited.
    """
    mlp_options = dict(hidden_layer_sizes=(128,), alpha=1e-2, max_iter=300, random_state=seed)
    if label.kind == "continuous":
        return {
            BASELINE: DummyRegressor(strategy="mean"),
            "linear": make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 6))),
            # Ages span 0..116: the MLP learns a standardised target and answers in years.
            "mlp": TransformedTargetRegressor(make_pipeline(StandardScaler(), MLPRegressor(**mlp_options)), transformer=StandardScaler()),
        }
    return {
        BASELINE: DummyClassifier(strategy="most_frequent"),
        "linear": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "mlp": make_pipeline(StandardScaler(), MLPClassifier(**mlp_options)),
    }


def score_estimator(estimator, X_train, y_train, X_test, y_test, label: Label) -> dict[str, float]:
    """Fit a scikit-learn estimator on the train half and score it on the test half."""
    with warnings.catch_warnings():  # a capped iteration count is a choice here, not an accident
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X_train, y_train if label.kind == "continuous" else y_train.astype(int))
    if label.kind == "continuous":
        return regression_metrics(y_test, estimator.predict(X_test))
    proba = class_probabilities(estimator.predict_proba(X_test), estimator.classes_, label.n_classes)
    return classification_metrics(y_test, proba, label)


def _vector_run(X_train, y_train, X_test, y_test, label: Label, seed: int) -> dict | None:
    """One run of every vector attacker on one split; NaN-label rows dropped. None when not attackable."""
    tr, te = known_rows(y_train), known_rows(y_test)
    X_train, y_train, X_test, y_test = X_train[tr], y_train[tr], X_test[te], y_test[te]
    if not _usable(y_train, y_test, label):
        return None
    scores = {
        name: score_estimator(estimator, X_train, y_train, X_test, y_test, label)
        for name, estimator in vector_attackers(label, seed).items()
    }
    return {"scores": scores, "n_train": len(y_train), "n_test": len(y_test)}


def _reduce(X_train: np.ndarray, X_test: np.ndarray, n_components: int | None, seed: int):
    """PCA fitted on the attacker's train half only (the test half never shapes the features)."""
    if n_components is None:
        return X_train, X_test
    n_components = min(n_components, len(X_train), X_train.shape[1])
    pca = PCA(n_components=n_components, svd_solver="randomized", random_state=seed).fit(X_train)
    return pca.transform(X_train), pca.transform(X_test)


@single_threaded
def attack_vectors(X_train, y_train, X_test, y_test, label: Label, seeds=(0, 1, 2), reduce_to: int | None = None) -> dict:
    """Vector attackers on a given split (X: (N, d), y: (N,) stored label floats, NaN = unknown).

    Runs differ by model seed only; ``reduce_to`` first projects both halves on the train half's PCA.
    """
    X_train, X_test = np.asarray(X_train, np.float32), np.asarray(X_test, np.float32)
    y_train, y_test = np.asarray(y_train, np.float64), np.asarray(y_test, np.float64)
    runs = []
    for seed in seeds:
        features_train, features_test = _reduce(X_train, X_test, reduce_to, seed)
        runs.append(_vector_run(features_train, y_train, features_test, y_test, label, seed))
    return _summarize(runs, label, seeds, np.concatenate([y_train, y_test]), split="given")


def scores_line(result: dict, metric: str = "balanced_accuracy") -> str:
    """An ``attack_vectors`` result in one line for a script's log, beside what chance scores:
    "linear 0.612, mlp 0.640 (chance 0.500)" (AUC's chance is 0.5)."""
    if "skipped" in result:
        return f"skipped ({result['skipped']})"
    chance = result["chance_balanced_accuracy"] if metric == "balanced_accuracy" else 0.5
    scores = [f"{name} {s[metric]['mean']:.3f}" for name, s in result["attackers"].items() if name != BASELINE]
    return f"{', '.join(scores)} (chance {chance:.3f})"


@single_threaded
def audit_vectors(
    X: np.ndarray,
    labels: dict[str, np.ndarray],
    schema: LabelSchema,
    seeds=(0, 1, 2),
    groups: np.ndarray | None = None,
    reduce_to: int | None = None,
) -> dict[str, dict]:
    """Vector attackers for every label in ``labels``: each seed draws a fresh half-split and fresh models.

    Paired: the same seed gives the same halves for every call, so codes and the pixel reference of one
    audit are attacked on identical splits.
    """
    X = np.asarray(X, np.float32)

    def prepare(train, test, seed):
        return _reduce(X[train], X[test], reduce_to, seed)

    return _attack_halves(len(X), labels, schema, seeds, groups, prepare, _vector_run)


def pixel_baseline(
    images: np.ndarray,
    labels: dict[str, np.ndarray],
    schema: LabelSchema,
    n_components: int,
    seeds=(0, 1, 2),
    groups: np.ndarray | None = None,
) -> dict[str, dict]:
    """The "Original" reference: the vector attackers on raw pixels (N, H, W, 3) uint8, reduced by PCA to
    ``n_components`` (the code size) so codes and pixels are compared at the same dimension."""
    flat = np.asarray(images).reshape(len(images), -1).astype(np.float32) / 255.0
    return audit_vectors(flat, labels, schema, seeds=seeds, groups=groups, reduce_to=n_components)


# --------------------------------------------------------------------------------------------------
# Image attacker: a small CNN trained from scratch
# --------------------------------------------------------------------------------------------------


DEFAULT_CNN_SIZE = 32  # input side: on UTKFace, 32x32 read gender better than 48x48 in the same time
DEFAULT_CNN_EPOCHS = 8
# Updates, whatever the number of epochs: on UTKFace's test split (~1,300 training faces) 900 updates took
# the CNN's gender balanced accuracy from 0.66 (300 updates) to 0.85, above the pixel-PCA MLP (0.82), in
# ~20 s on one core; a small attacker half gets more epochs rather than too few updates, up to a cap
# (beyond it a few hundred faces are memorised, not learned from, and the time is wasted).
CNN_MIN_STEPS = 900
CNN_MAX_EPOCHS = 60


class AttackCNN(nn.Module):
    """(B, 3, s, s) in [0, 1] -> (B, n_out): ``n_blocks`` conv-norm-ReLU-pool blocks, global average pool.

    GroupNorm rather than BatchNorm: an attacker half of a small audit gives few updates, too few for
    BatchNorm's running statistics to settle, and the eval-mode network then scored at chance.
    """

    def __init__(self, n_out: int, width: int = 16, n_blocks: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for i in range(n_blocks):
            out = width * 2**i
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.GroupNorm(8, out), nn.ReLU(True), nn.MaxPool2d(2)]
            channels = out
        layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.GroupNorm(8, channels), nn.ReLU(True)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(channels, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def images_to_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) float in [0, 1], area-downscaled (done once per image set)."""
    out = []
    for i in range(0, len(images), 512):  # chunks: a float copy of every image at full size is not needed
        x = torch.from_numpy(np.array(images[i : i + 512])).permute(0, 3, 1, 2).float().div_(255.0)
        out.append(F.interpolate(x, size=(size, size), mode="area") if x.shape[-1] != size else x)
    return torch.cat(out) if out else torch.zeros((0, 3, size, size))


def _cnn_loss(outputs: torch.Tensor, targets: torch.Tensor, label: Label) -> torch.Tensor:
    if label.kind == "continuous":
        return F.mse_loss(outputs[:, 0], targets)
    return F.cross_entropy(outputs, targets.long())


def _train_cnn(x: torch.Tensor, y: np.ndarray, label: Label, seed: int, epochs: int, min_steps: int, batch_size: int = 64) -> Callable:
    """Fit an AttackCNN on (x, y); 15% of the train half picks the best epoch. Returns predict(x) -> numpy.

    Continuous targets are standardised with the train half's mean/std; predict answers in the label's unit.
    """
    # Seeded weights, dropout and batches, without touching the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        n = len(x)
        order = torch.randperm(n, generator=generator)
        n_val = max(2, int(0.15 * n))
        val, fit = order[:n_val], order[n_val:]
        mean, std = (float(np.mean(y)), float(np.std(y)) or 1.0) if label.kind == "continuous" else (0.0, 1.0)
        targets = torch.from_numpy(((y - mean) / std).astype(np.float32))

        model = AttackCNN(1 if label.kind == "continuous" else label.n_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
        best_loss, best_state = float("inf"), None
        batches_per_epoch = max(1, len(fit) // batch_size)
        for _ in range(max(epochs, min(-(-min_steps // batches_per_epoch), CNN_MAX_EPOCHS))):
            model.train()
            perm = fit[torch.randperm(len(fit), generator=generator)]
            for start in range(0, len(perm), batch_size):
                idx = perm[start : start + batch_size]
                xb = x[idx]
                flip = torch.rand(len(idx), generator=generator) < 0.5  # mirrored faces carry the same labels
                xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
                loss = _cnn_loss(model(xb), targets[idx], label)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                val_loss = _cnn_loss(model(x[val]), targets[val], label).item()
            if val_loss < best_loss:
                best_loss, best_state = val_loss, {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_state)
        model.eval()

    @torch.no_grad()
    def predict(x_test: torch.Tensor) -> np.ndarray:
        out = torch.cat([model(x_test[i : i + 512]) for i in range(0, len(x_test), 512)])
        if label.kind == "continuous":
            return out[:, 0].numpy().astype(np.float64) * std + mean
        return out.softmax(dim=1).numpy().astype(np.float64)

    return predict


def _image_run(x_train: torch.Tensor, y_train, x_test: torch.Tensor, y_test, label: Label, seed: int,
               epochs: int, min_steps: int) -> dict | None:
    """One CNN run plus the input-blind baseline on one split; NaN-label rows dropped."""
    tr, te = known_rows(y_train), known_rows(y_test)
    y_train, y_test = y_train[tr], y_test[te]
    if not _usable(y_train, y_test, label):
        return None
    x_train, x_test = x_train[torch.from_numpy(tr)], x_test[torch.from_numpy(te)]
    predict = _train_cnn(x_train, y_train, label, seed, epochs, min_steps)
    if label.kind == "continuous":
        cnn = regression_metrics(y_test, predict(x_test))
        baseline_model = DummyRegressor(strategy="mean")
    else:
        cnn = classification_metrics(y_test.astype(int), predict(x_test), label)
        baseline_model = DummyClassifier(strategy="most_frequent")
    blind_train, blind_test = np.zeros((len(y_train), 1)), np.zeros((len(y_test), 1))  # the baseline sees no input
    baseline = score_estimator(baseline_model, blind_train, y_train, blind_test, y_test, label)
    return {"scores": {BASELINE: baseline, "cnn": cnn}, "n_train": len(y_train), "n_test": len(y_test)}




@single_threaded
def attack_images(
    images_train: np.ndarray,
    y_train: np.ndarray,
    images_test: np.ndarray,
    y_test: np.ndarray,
    label: Label,
    seeds=(0,),
    epochs: int = DEFAULT_CNN_EPOCHS,
    size: int = DEFAULT_CNN_SIZE,
    min_steps: int = CNN_MIN_STEPS,
) -> dict:
    """A fresh CNN per seed on released images (N, H, W, 3) uint8 of a given split, downscaled to ``size``."""
    x_train, x_test = images_to_tensor(images_train, size), images_to_tensor(images_test, size)
    y_train, y_test = np.asarray(y_train, np.float64), np.asarray(y_test, np.float64)
    runs = [_image_run(x_train, y_train, x_test, y_test, label, seed, epochs, min_steps) for seed in seeds]
    return _summarize(runs, label, seeds, np.concatenate([y_train, y_test]), split="given")


@single_threaded
def audit_images(
    images: np.ndarray,
    labels: dict[str, np.ndarray],
    schema: LabelSchema,
    seeds=(0,),
    groups: np.ndarray | None = None,
    epochs: int = DEFAULT_CNN_EPOCHS,
    size: int = DEFAULT_CNN_SIZE,
    min_steps: int = CNN_MIN_STEPS,
) -> dict[str, dict]:
    """``attack_images`` for every label, each seed on a fresh half-split (the same halves as ``audit_vectors``)."""
    x = images_to_tensor(images, size)

    def prepare(train, test, seed):
        return x[torch.from_numpy(train)], x[torch.from_numpy(test)]

    return _attack_halves(len(x), labels, schema, seeds, groups, prepare, functools.partial(_image_run, epochs=epochs, min_steps=min_steps))
