"""The real datasets in ../shared/datasets (skipped when absent). Scans only: nothing is decoded."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from conceal.data import open_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

pytestmark = pytest.mark.shared


def shared_root(name: str) -> Path:
    root = SHARED / name
    if not root.is_dir():
        pytest.skip(f"{root} is absent (the shared datasets live next to the repository)")
    return root


def test_utkface_counts():
    ds = open_dataset("utkface", shared_root("utkface"))
    assert len(ds.records) == 20_185
    assert len(ds.skipped) == 3
    assert all(reason.startswith("malformed name") for reason in ds.skipped.values())
    assert {r.split for r in ds.records} == {"train", "val", "test"}


def test_lfw_counts():
    ds = open_dataset("lfw", shared_root("lfw"))
    assert len(ds.records) == 7_805
    assert len(ds.people) == len({r.identity for r in ds.records}) == 1_410
    assert sum(math.isnan(r.labels["gender"]) for r in ds.records) == 3
    assert not ds.skipped and not any(ds.malformed_lines.values())
    splits_of_person: dict[int, set[str]] = {}
    for r in ds.records:
        splits_of_person.setdefault(r.identity, set()).add(r.split)
    assert all(len(splits) == 1 for splits in splits_of_person.values())
    pairs, same, counts = ds.pairs("test")
    assert counts["pairs_txt_matched"] > 0 and same.sum() * 2 == len(same)  # balanced by seeded pairs
