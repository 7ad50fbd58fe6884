"""The audit: measured privacy. Fresh attackers trained after the fact on what a method releases, scored
against the chance/majority baseline, plus independent offline judges (``judges``, optional).

>>> from conceal.audit import run_audit
>>> run_audit("models/concealer-utkface-64", dataset="utkface", root="../shared/datasets/utkface/UTKFace", out="report")

Modules: ``attackers`` (vector and image attackers, half-splits), ``metrics`` (scikit-learn/scikit-image
wrappers), ``concealer`` (the concealer's sections), ``report`` (report.json + report.md), ``judges``.
Nothing heavy is imported until ``run_audit`` is called.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

# method name (from model.json) -> "module:function" of its audit sections, imported only when used.
# A section function takes (model_path, test, out_dir, judges=, seed=, log=, **options) -> dict of sections.
AUDITS = {
    "concealer": "concealer:audit_concealer",
    "anonymizer": "anonymizer:audit_anonymizer",
    "masker": "masker:audit_masker",
}


def load_test_split(info: dict, dataset: str, root: str | None, max_images: int | None, seed: int, log: Callable = print):
    """The dataset's test split at the model's image size, optionally a seeded sample of ``max_images``.

    When the dataset is the one the model was trained on, the model's own data config fills in what the
    caller left out (root, crop, and for synthetic its n and seed, so the test faces are the held-out ones).
    A dataset with its own verification protocol (LFW) also fills ``test.pairs`` (rows of ``test``).
    """
    from ..data import DataError, open_dataset

    data = info.get("data", {})
    same = data.get("dataset") == dataset
    options = {}
    if dataset == "synthetic":
        options = {"n": data.get("synthetic_n", 10000), "seed": data.get("synthetic_seed", 0)} if same else {}
    if dataset == "fer2013" and same:  # the label scheme the model was trained on
        options = {"labels": data.get("labels", "fer2013")}
    if root is None and same:
        root = data.get("root")
    crop = data.get("crop") if same else None
    opened = open_dataset(dataset, root, **options)
    test = opened.arrays(size=info["image_size"], crop=crop, progress=False).subset("test")
    if hasattr(opened, "pairs_among"):  # a dataset with its own verification protocol (LFW's pairs.txt)
        test.pairs = opened.pairs_among(test, "test", seed=seed)
    if len(test) == 0:
        raise DataError(f"{dataset}: the test split is empty")
    if max_images is not None and max_images < len(test):
        if max_images < 1:
            raise DataError(f"--max-images must be at least 1, not {max_images}")
        rows = np.sort(np.random.default_rng([seed, 0]).choice(len(test), size=max_images, replace=False))
        test = test.select(rows)
    log(f"[audit] {dataset}: {len(test)} test faces at {info['image_size']}px")
    return test


def run_audit(
    model_path: str | Path,
    dataset: str | None = None,
    root: str | Path | None = None,
    out: str | Path = "report",
    max_images: int | None = None,
    seed: int = 0,
    command: str | None = None,
    judges: str | dict = "auto",
    log: Callable[[str], None] = print,
    **options,
) -> Path:
    """Audit the model at ``model_path`` on ``dataset``'s test split (default: the dataset it was trained on);
    write report.md, report.json and figures into ``out``; return the path of report.md.

    ``judges``: "auto" (use the installed judges), "off", or a dict of judge objects. ``options`` go to the
    method's audit (concealer: ``judge_faces``, ``identity_faces``, ``vector_seeds``, ``cnn_epochs``; anonymizer:
    ``identity_faces``, ``vector_seeds``, ``max_matched_pairs``, ``image_attack``, ``cnn_epochs``, ``cnn_min_steps``;
    masker: ``identity_faces``, ``cnn_seeds``, ``cnn_epochs``, ``cnn_min_steps``, ``leakage``, baseline settings).
    """
    from .. import __version__
    from ..data import DataError
    from ..train.checkpoint import read_model_info
    from .report import write_report

    info = read_model_info(model_path)
    method = info.get("method")
    if method not in AUDITS:
        raise DataError(f"audit for method {method!r} is not implemented yet (audits exist for: {', '.join(AUDITS)})")
    if dataset is None:
        dataset = info.get("data", {}).get("dataset")
        if dataset is None:
            raise DataError(f"{model_path} does not say which dataset it was trained on: name one with --dataset")
    test = load_test_split(info, dataset, None if root is None else str(root), max_images, seed, log)
    started = datetime.now(timezone.utc)

    import importlib

    module, function = AUDITS[method].split(":")
    audit_method = getattr(importlib.import_module(f".{module}", __name__), function)
    sections = audit_method(model_path, test, out, judges=judges, seed=seed, log=log, **options)
    sections = {
        "provenance": {
            "model": str(Path(model_path).resolve()),
            "method": method,
            "model_config": info.get("model_config"),
            "model_epoch": info.get("epoch"),
            "trained_on": info.get("data"),
            "dataset": dataset,
            "root": None if root is None else str(root),
            "split": "test",
            "n_test_faces": len(test),
            "max_images": max_images,
            "seed": seed,
            "conceal_version": __version__,
            "date": started.strftime("%Y-%m-%d %H:%M"),
            "command": command if command is not None else " ".join(sys.argv),
        },
        **sections,
    }
    path = write_report(sections, out)
    log(f"[audit] wrote {path} and {Path(out) / 'report.json'}")
    return path


def __getattr__(name: str):
    # Lazy re-exports: ``from conceal.audit import write_report`` without importing torch at package import.
    lazy = {"write_report": "report", "audit_concealer": "concealer", "attack_vectors": "attackers",
            "attack_images": "attackers", "split_halves": "attackers", "pixel_baseline": "attackers"}
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(f".{lazy[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AUDITS", "load_test_split", "run_audit"]
