"""What a dataset holds (counts, splits, label distributions, skipped files) without decoding images."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from .base import EXTRA_SPLITS, SPLITS
from .schema import Label

MAX_SKIPPED_SHOWN = 10


def _distribution(label: Label, values: np.ndarray) -> dict:
    """(N,) float32 stored values (NaN = unknown) -> class counts, or summary statistics."""
    unknown = np.isnan(values)
    known = values[~unknown]
    if label.kind == "continuous":
        stats = {"min": None, "max": None, "mean": None, "median": None}
        if known.size:
            stats = {
                "min": float(known.min()),
                "max": float(known.max()),
                "mean": float(known.mean()),
                "median": float(np.median(known)),
            }
        return stats | {"unknown": int(unknown.sum())}
    counts = np.bincount(known.astype(np.int64), minlength=label.n_classes)
    distribution = {name: int(n) for name, n in zip(label.classes, counts)}
    if unknown.any():
        distribution["unknown"] = int(unknown.sum())
    return distribution


def dataset_info(ds, size: int = 64) -> dict:
    """Summary of a dataset as plain JSON-ready values.

    File-backed datasets are summarised from their records (no image is decoded); a dataset without
    records (synthetic) is summarised from ``ds.arrays(size=size)``.
    """
    records = getattr(ds, "records", None)
    if records:
        schema = ds.schema
        labels = {
            label.name: np.array([r.labels.get(label.name, math.nan) for r in records], dtype=np.float32)
            for label in schema
        }
        split = np.array([r.split for r in records], dtype=str)  # (N,)
        identity = np.array([r.identity for r in records], dtype=np.int64)  # (N,)
    else:
        arrays = ds.arrays(size=size)
        schema, labels, split, identity = arrays.schema, arrays.labels, arrays.split, arrays.identity
    skipped = dict(getattr(ds, "skipped", {}))
    root = getattr(ds, "root", None)
    known_identities = identity[identity >= 0]
    splits = list(SPLITS) + [name for name in EXTRA_SPLITS if (split == name).any()]  # (FER2013's PrivateTest)
    return {
        "dataset": getattr(ds, "name", type(ds).__name__),
        "root": None if root is None else str(root),
        "n_images": int(len(split)),
        "n_skipped": len(skipped),
        "skipped": skipped,
        "splits": {name: int((split == name).sum()) for name in splits},
        "labels": {label.name: _distribution(label, labels[label.name]) for label in schema},
        "labels_by_split": {
            name: {label.name: _distribution(label, labels[label.name][split == name]) for label in schema}
            for name in splits
        },
        "label_kinds": {label.name: label.kind for label in schema},
        # Kinds guessed from a CSV's values (folder datasets), said so that a wrong guess is seen.
        "inferred_kinds": dict(getattr(ds, "inferred", {})),
        "identities": int(np.unique(known_identities).size) if known_identities.size else None,
    }


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def format_info(info: dict) -> str:
    """A readable multi-line report of ``dataset_info``'s result, for the command line."""
    lines = [
        f"dataset     {info['dataset']}" + (f"  ({info['root']})" if info["root"] else ""),
        f"images      {info['n_images']} usable, {info['n_skipped']} skipped",
        "splits      " + "  ".join(f"{name} {n}" for name, n in info["splits"].items()),
        f"identities  {info['identities'] if info['identities'] is not None else 'none'}",
    ]
    if info.get("inferred_kinds"):
        lines.append("inferred    " + "; ".join(f"{n} {k}" for n, k in info["inferred_kinds"].items())
                     + "  (from the CSV's values; numbers other than 0/1 are continuous: write class names for classes)")
    if info["skipped"]:
        by_reason = Counter(info["skipped"].values())
        lines.append("skipped     " + "; ".join(f"{n} {reason}" for reason, n in by_reason.most_common()))
        for path, reason in list(info["skipped"].items())[:MAX_SKIPPED_SHOWN]:
            lines.append(f"  {path}: {reason}")
        if info["n_skipped"] > MAX_SKIPPED_SHOWN:
            lines.append(f"  ... and {info['n_skipped'] - MAX_SKIPPED_SHOWN} more")

    # One table: a block of rows per label, columns all + each split.
    splits = list(info["splits"])
    table = [["label", "value", "all", *splits]]
    for name, distribution in info["labels"].items():
        kind = info["label_kinds"][name]
        for i, key in enumerate(distribution):
            per_split = [info["labels_by_split"][split][name].get(key, 0) for split in splits]
            table.append([f"{name} ({kind})" if i == 0 else "", key, *map(_cell, [distribution[key], *per_split])])
    if len(table) > 1:
        widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
        lines.append("")
        for row in table:
            # Names left-aligned, numbers right-aligned.
            cells = [cell.ljust(w) if c < 2 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths))]
            lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
