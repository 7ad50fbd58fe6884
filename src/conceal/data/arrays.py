"""What every dataset decodes to: ``FaceArrays`` (decoded images with labels, identities and splits), the
``FaceRecord`` a file-backed dataset indexes, and ``DataError``. Methods, the training loop and the audit
consume only ``FaceArrays``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .schema import LabelSchema

SPLITS = ("train", "val", "test")
# Splits some datasets add (FER2013's PrivateTest): held out, selected only by name.
EXTRA_SPLITS = ("private_test",)


class DataError(RuntimeError):
    """A dataset problem the user must fix (missing root, nothing usable); one-line message."""


@dataclass
class FaceRecord:
    path: Path
    labels: dict[str, float]  # NaN = unknown
    identity: int = -1  # -1 = dataset has no identities
    split: str = "train"


@dataclass
class FaceArrays:
    images: np.ndarray  # (N, H, W, 3) uint8, possibly a read-only memmap
    labels: dict[str, np.ndarray]  # name -> (N,) float32, NaN = unknown
    schema: LabelSchema
    identity: np.ndarray  # (N,) int64, -1 = none
    split: np.ndarray  # (N,) str, one of SPLITS
    paths: list[str] = field(default_factory=list)  # (N,) source file per row ("" for generated)
    # The dataset's own face-verification protocol among these rows, when it has one (LFW's pairs.txt):
    # {"rows": (P, 2) int64 row numbers, "same": (P,) bool, "counts": {kind: n}, "source": str}.
    pairs: dict | None = None

    def __len__(self) -> int:
        return len(self.images)

    def select(self, index: np.ndarray) -> "FaceArrays":
        """Rows by boolean mask or integer index (images stay a memmap view when they can)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return FaceArrays(
            images=self.images[index],
            labels={k: v[index] for k, v in self.labels.items()},
            schema=self.schema,
            identity=self.identity[index],
            split=self.split[index],
            paths=[self.paths[i] for i in index] if self.paths else [],
            pairs=self._select_pairs(index),
        )

    def _select_pairs(self, index: np.ndarray) -> dict | None:
        """``pairs`` among rows ``index``, renumbered; pairs with a row left out are dropped (and counted)."""
        if self.pairs is None:
            return None
        position = np.full(len(self), -1, np.int64)
        position[index] = np.arange(len(index))
        rows = position[self.pairs["rows"]]  # (P, 2), -1 = left out
        kept = (rows >= 0).all(axis=1)
        counts = dict(self.pairs["counts"]) | {"left_out_by_row_selection": self.pairs["counts"].get("left_out_by_row_selection", 0) + int((~kept).sum())}
        return self.pairs | {"rows": rows[kept], "same": self.pairs["same"][kept], "counts": counts}

    def subset(self, split: str) -> "FaceArrays":
        if split not in SPLITS + EXTRA_SPLITS:
            raise DataError(f"split must be one of {', '.join(SPLITS + EXTRA_SPLITS)}, not {split!r}")
        return self.select(self.split == split)
