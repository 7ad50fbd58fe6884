"""The audit: measured privacy. Fresh attackers trained after the fact on what a method releases, scored
against the chance/majority baseline, plus independent offline judges (``judges``, optional).

>>> from conceal.audit import run_audit
>>> run_audit("models/concealer-utkface-64", dataset="utkface", root="../shared/datasets/utkface/UTKFace", out="report")

Threat models: ``public`` (``public-model``, the headline: attackers trained on the train split's releases,
chosen on the validation split, scored on the test split's) and the methods' own sections (``test-halves``:
attackers trained on half the test split, data-poor, kept for comparison).

Modules: ``context`` (the audit context: model, splits, releases and embeddings, made once), ``public``
(the public-model protocol and the headline), ``suite`` (its scikit-learn attackers), ``common`` (judges and
samples every section may use), ``attackers`` (test-halves attackers and the CNN), ``metrics``,
``concealer`` / ``anonymizer`` / ``masker`` (each method's own sections), ``report`` (report.json + report.md), ``judges``.
Nothing heavy is imported until ``run_audit`` is called.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np


def method_audit(method: str | None) -> Callable:
    """The audit-section function a registered method names (``Method.audit``: "module:function", imported
    only when used): (model_path, test, out_dir, judges=, seed=, log=, **options) -> dict of sections."""
    from ..data import DataError
    from ..methods import method_class, method_names

    try:
        spec = method_class(method).audit
    except ValueError:
        raise DataError(f"no audit for method {method!r} (registered methods: {', '.join(method_names())})") from None
    return _hook(spec)


def load_test_split(info: dict, dataset: str, root: str | None, max_images: int | None, seed: int, log: Callable = print):
    """The dataset's test split at the model's image size, optionally a seeded sample of ``max_images``.

    When the dataset is the one the model was trained on, the model's own data config fills in what the
    caller left out (root, crop, and for synthetic its n and seed, so the test faces are the held-out ones).
    A dataset with its own verification protocol (LFW) also fills ``test.pairs`` (rows of ``test``).
    """
    from ..data import DataError
    from .context import open_splits

    opened, arrays = open_splits(info, dataset, root)
    test = arrays.subset("test")
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


THREAT_MODELS = ("public-model", "test-halves", "all")


def _reused_test_halves(path: Path, method: str, n_test: int, seed: int) -> dict:
    """The test-halves sections of an earlier report.json, checked to be of the same method, test faces and seed."""
    import json

    from ..data import DataError

    try:
        earlier = json.loads(path.read_text())
        provenance = earlier["provenance"]
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"--reuse-test-halves {path}: not a readable audit report.json ({error})") from None
    same = (provenance.get("method"), provenance.get("n_test_faces"), provenance.get("seed")) == (method, n_test, seed)
    if not same:
        raise DataError(f"--reuse-test-halves {path}: audited {provenance.get('method')} on {provenance.get('n_test_faces')} test faces "
                        f"with seed {provenance.get('seed')}, not {method} on {n_test} with seed {seed}")
    skip = {"provenance", "headline", "public_model", "test_halves"}
    method_sections = {k: v for k, v in earlier.items() if k not in skip}
    return {"test_halves": {
        "threat_model": "test-halves",
        "description": "DATA-POOR, for comparison only: each attacker is trained on one half of the test split's releases "
                       f"({n_test} faces in all) and scored on the other half; the public-model numbers are the ones that count",
        "sections": list(method_sections),
        # carried over once or more: the report that computed them
        "reused_from": earlier.get("test_halves", {}).get("reused_from")
                       or {"report": str(path), "date": provenance.get("date"), "command": provenance.get("command")},
    }, **method_sections}


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # not on every platform
        return None


def _hook(spec: str):
    """The function a "module:function" spec names (a method's ``audit`` or ``audit_release``), imported now."""
    import importlib

    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


def _call_words(model_path, arguments: dict, options: dict) -> str:
    """The run_audit(...) call that reproduces a library call, for the report's provenance: the arguments not left
    at their defaults, the method's ``options``; the log function and judge objects are left out."""
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(run_audit).parameters.items() if p.default is not p.empty}
    given = {name: arguments[name] for name in defaults if name not in ("log", "command") and arguments[name] != defaults[name]}
    if not isinstance(given.get("judges", ""), str):
        given["judges"] = "<judge objects>"
    words = [repr(str(model_path))] + [f"{name}={(str(v) if isinstance(v, Path) else v)!r}" for name, v in {**given, **options}.items()]
    return f"run_audit({', '.join(words)})"


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
    threat_model: str = "all",
    max_train: int | None = None,
    public_options: dict | None = None,
    reuse_test_halves: str | Path | None = None,
    **options,
) -> Path:
    """Audit the model at ``model_path`` on ``dataset`` (default: the dataset it was trained on); write report.md,
    report.json and figures into ``out``; return the path of report.md.

    ``threat_model``: "public-model" (attackers trained on the train split's releases, scored on the test
    split's: the headline), "test-halves" (the method's sections, whose attackers train on half the test
    split: data-poor, kept for comparison) or "all". ``max_train`` caps the train faces of public-model
    (quick looks and tests; the headline says how many it used); ``public_options`` go to ``public.public_model``.
    ``reuse_test_halves``: an earlier report.json of the same model and test faces whose test-halves sections
    are carried over instead of recomputed (they are deterministic for a seed; the report says where they came from).
    ``judges``: "auto" (use the installed judges), "off", or a dict of judge objects. ``options`` go to the
    method's test-halves audit (concealer: ``judge_faces``, ``identity_faces``, ``vector_seeds``, ``cnn_epochs``;
    anonymizer: ``identity_faces``, ``vector_seeds``, ``max_matched_pairs``, ``image_attack``, ``cnn_epochs``,
    ``cnn_min_steps``; masker: ``identity_faces``, ``cnn_seeds``, ``cnn_epochs``, ``cnn_min_steps``, ``leakage``,
    baseline settings).
    """
    if command is None:  # a library call: record the call itself (sys.argv would say "-c", or the test runner's)
        command = _call_words(model_path, locals(), options)
    from .. import __version__
    from ..data import DataError
    from ..methods import method_class
    from ..modelfile import read_model_info
    from .context import AuditContext
    from .report import write_report

    if threat_model not in THREAT_MODELS:
        raise DataError(f"--threat-model must be one of {', '.join(THREAT_MODELS)}, not {threat_model!r}")
    info = read_model_info(model_path)
    method = info.get("method")
    audit_sections = method_audit(method)  # an unregistered method fails here, before any data is read
    if dataset is None:
        dataset = info.get("data", {}).get("dataset")
        if dataset is None:
            raise DataError(f"{model_path} does not say which dataset it was trained on: name one with --dataset")
    for name, value in (("--max-train", max_train), ("--max-images", max_images)):
        if value is not None and value < 1:
            raise DataError(f"{name} must be at least 1, not {value}")
    release = method_class(method).audit_release  # apply's options for the audited release, if any
    ctx = AuditContext(Path(model_path), info, dataset, Path(out), root=None if root is None else str(root), seed=seed,
                       judges_spec=judges, max_images=max_images, max_train=max_train, log=log,
                       release_options=_hook(release) if release else None)
    test = ctx.split("test")
    started = datetime.now(timezone.utc)
    wall = time.perf_counter()
    load_start = _load()
    sections: dict = {}
    if threat_model in ("public-model", "all"):
        from .public import headline, public_model, strip_private

        section = public_model(ctx, public_options)
        sections["headline"] = headline(section, test.schema, seed)
        sections["public_model"] = strip_private(section)
    if threat_model in ("test-halves", "all") and reuse_test_halves is not None:
        sections.update(_reused_test_halves(Path(reuse_test_halves), method, len(test), seed))
    elif threat_model in ("test-halves", "all"):
        # The context's judges (their per-image readings cached, shared with the public-model sections) when
        # all are there; otherwise the sections resolve the spec themselves, to report why one is missing.
        objects = ctx.judges()[0] if judges != "off" and all(v is not None for v in ctx.judges()[0].values()) else judges
        import inspect

        if "model" in inspect.signature(audit_sections).parameters:  # the context's model: loaded once per audit
            options = {"model": ctx.api, **options}
        method_sections = audit_sections(model_path, test, out, judges=objects, seed=seed, log=log, **options)
        sections["test_halves"] = {
            "threat_model": "test-halves",
            "description": "DATA-POOR, for comparison only: each attacker is trained on one half of the test split's releases "
                           f"({len(test)} faces in all) and scored on the other half; the public-model numbers are the ones that count",
            "sections": list(method_sections),
        }
        sections.update(method_sections)
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
            "max_train": max_train,
            "threat_model": threat_model,
            "seed": seed,
            "conceal_version": __version__,
            "date": started.strftime("%Y-%m-%d %H:%M"),
            "wall_seconds": round(time.perf_counter() - wall, 1),
            # the machine's 1/5/15-min load averages when the audit started and ended, and its cores (timings mean little without)
            "load": {"start": load_start, "end": _load(), "cpus": os.cpu_count()},
            "command": command,
        },
        **sections,
    }
    path = write_report(sections, out)
    log(f"[audit] wrote {path} and {Path(out) / 'report.json'} ({sections['provenance']['wall_seconds']:.0f} s)")
    return path


def __getattr__(name: str):
    # Lazy re-exports: ``from conceal.audit import write_report`` without importing torch at package import.
    lazy = {"write_report": "report", "audit_concealer": "concealer", "attack_vectors": "attackers",
            "attack_images": "attackers", "split_halves": "attackers", "pixel_baseline": "attackers"}
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(f".{lazy[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["THREAT_MODELS", "load_test_split", "method_audit", "run_audit"]
