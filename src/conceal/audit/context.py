"""The audit context: what every section of one audit shares, made once.

The model is loaded once; the dataset is decoded once (through the preprocessing cache) and split into
train / val / test as the model's training split it (LFW: by person, so no one is on two sides); the
releases of each split and the face-embedding judge's embeddings are computed once and cached here, so
a section never pays for what another already computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import DataError, FaceArrays


def open_splits(info: dict, dataset: str, root: str | None, log: Callable = print) -> tuple[Any, FaceArrays]:
    """-> (the opened dataset, every row as FaceArrays at the model's image size).

    When the dataset is the one the model was trained on, the model's own data config fills in what the
    caller left out (root, crop, and for synthetic its n and seed, so the test faces are the held-out ones).
    """
    from ..data import open_configured, open_dataset

    data = info.get("data", {})
    same = data.get("dataset") == dataset
    # The training dataset opens with the model's own options (synthetic's n and seed: the held-out faces;
    # FER2013's label scheme) and root; another dataset with its defaults.
    opened = open_configured(data, root) if same else open_dataset(dataset, root)
    crop = data.get("crop") if same else None
    return opened, opened.arrays(size=info["image_size"], crop=crop, progress=False)


def sample(arrays: FaceArrays, k: int | None, seed: int, purpose: int) -> FaceArrays:
    """A seeded sample of at most ``k`` rows (sorted), or all of them."""
    if k is None or k >= len(arrays):
        return arrays
    if k < 1:
        raise DataError(f"a sample must hold at least 1 face, not {k}")
    return arrays.select(np.sort(np.random.default_rng([seed, purpose]).choice(len(arrays), size=k, replace=False)))


@dataclass
class AuditContext:
    """One audit's shared state. ``release_options``: keyword arguments of the model's ``apply`` for the
    released images (the concealer's fixed target); ``max_train``: cap on the train split's faces."""

    model_path: Path
    info: dict
    dataset: str
    out_dir: Path
    root: str | None = None
    seed: int = 0
    judges_spec: str | dict = "auto"
    max_images: int | None = None
    max_train: int | None = None
    log: Callable[[str], None] = print
    release_options: Callable[[Any], dict] | None = None
    _api: Any = None
    _splits: dict = field(default_factory=dict)
    _releases: dict = field(default_factory=dict)
    _judges: tuple | None = None
    _embeddings: dict = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.info.get("method")

    @property
    def api(self):
        """The model, through its method's API class, loaded once."""
        if self._api is None:
            from ..methods import load_api

            self._api = load_api(self.model_path)
        return self._api

    @property
    def releases_kinds(self) -> tuple[str, ...]:
        return tuple(self.api.method.releases)

    def split(self, name: str) -> FaceArrays:
        """The train, val or test faces (test: a seeded sample of ``max_images``; train: of ``max_train``)."""
        if not self._splits:
            opened, everything = open_splits(self.info, self.dataset, self.root, self.log)
            for split, cap, purpose in (("train", self.max_train, 21), ("val", None, 22), ("test", self.max_images, 0)):
                part = everything.subset(split)
                if split == "test" and hasattr(opened, "pairs_among"):  # LFW's own verification protocol
                    part.pairs = opened.pairs_among(part, "test", seed=self.seed)
                if split == "test" and len(part) == 0:
                    raise DataError(f"{self.dataset}: the test split is empty")
                self._splits[split] = sample(part, cap, self.seed, purpose)
            counts = ", ".join(f"{k} {len(v)}" for k, v in self._splits.items())
            self.log(f"[audit] {self.dataset}: {counts} faces at {self.info['image_size']}px")
        return self._splits[name]

    def released(self, split: str, kind: str) -> np.ndarray:
        """What the model releases for a split's faces: "codes" (N, d) float32 or "images" (N, H, W, 3) uint8."""
        key = (split, kind)
        if key not in self._releases:
            images = self.split(split).images
            if kind == "codes":
                self._releases[key] = self.api.encode(images)
            elif kind == "images":
                options = self.release_options(self.api) if self.release_options else {}
                self._releases[key] = self.api.apply(images, **options)
            else:
                raise ValueError(f"unknown release kind {kind!r}")
        return self._releases[key]

    def judges(self) -> tuple[dict, dict]:
        """(judge objects or None, reason each is missing), resolved once."""
        if self._judges is None:
            from .common import cache_judge_calls, resolve_judges

            objects, status = resolve_judges(self.judges_spec)
            self._judges = cache_judge_calls(objects), status
        return self._judges

    def embed(self, split: str, source: str, rows: np.ndarray) -> np.ndarray | None:
        """Face-embedding judge's (len(rows), 128) embeddings of a split's ``source`` ("original" or "released")
        images; each image is embedded once per audit. None without the judge."""
        judge = self.judges()[0].get("face_embedding")
        if judge is None:
            return None
        cache = self._embeddings.setdefault((split, source), {})
        rows = np.asarray(rows, np.int64)
        missing = [int(r) for r in rows if int(r) not in cache]
        if missing:
            images = self.split(split).images if source == "original" else self.released(split, "images")
            for row, vector in zip(missing, judge.embed(np.asarray(images[missing]))):
                cache[row] = vector
        return np.stack([cache[int(r)] for r in rows]) if len(rows) else np.zeros((0, 128), np.float32)
