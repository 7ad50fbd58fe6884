"""The one interface every dataset offers.

Two levels:
- ``FaceDataset``: an index of source records (path, labels, identity, split) plus the files that were
  skipped and why. File-backed datasets (UTKFace, LFW, folder+CSV) build it by scanning; nothing is
  decoded until ``arrays()`` is called.
- ``FaceArrays``: decoded uint8 images (N, H, W, 3) with float32 label arrays (NaN = unknown) and int64
  identities (-1 = none). Methods, the training loop and the audit consume only this.

``arrays(size, crop)`` goes through the preprocessing cache (``data/cache.py``) for file-backed datasets;
the synthetic generator renders directly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .arrays import EXTRA_SPLITS, SPLITS, DataError, FaceArrays, FaceRecord  # noqa: F401  (re-exported: the old import path)
from .cache import cached_arrays
from .schema import LabelSchema

@dataclass
class NoOptions:
    """The options of a dataset that has none beyond its root."""


class FaceDataset:
    """Base class of the file-backed datasets. Subclasses fill ``records``, ``skipped`` and ``schema``.

    A subclass is also its dataset's spec in the registry (``conceal.data``): ``name``; ``needs_root``;
    ``default_crop`` (fraction of the shorter side ``arrays`` keeps by default); ``Options``, the dataclass
    of the constructor's options a run config sets (``[data.options]``); ``cli_options``: option -> help,
    the ones ``conceal data info`` offers as flags.
    """

    name: str = "dataset"
    needs_root: ClassVar[bool] = True
    default_crop: ClassVar[float] = 1.0
    Options: ClassVar[type] = NoOptions
    cli_options: ClassVar[dict[str, str]] = {}

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise DataError(f"{self.name}: root {self.root} does not exist")
        self.schema: LabelSchema = LabelSchema()
        self.records: list[FaceRecord] = []
        self.skipped: dict[str, str] = {}  # path -> reason
        self.undecodable: list[FaceRecord] = []  # records dropped by arrays() (also in skipped)

    def __len__(self) -> int:
        return len(self.records)

    def arrays(self, size: int = 64, crop: float | None = None, progress: bool = True) -> FaceArrays:
        """Decode, centre-crop (keeping ``crop`` of the shorter side) and resize every record, via the cache.

        ``crop=None`` uses the dataset's ``default_crop`` (LFW: 0.5, the face fills the middle half).
        Records whose image fails to decode move to ``skipped``/``undecodable``, so afterwards row i of
        the arrays is ``records[i]``.
        """
        if crop is None:
            crop = self.default_crop
        return cached_arrays(self, size=size, crop=crop, progress=progress)

    def source_file(self, record: FaceRecord) -> Path:
        """The file ``record`` is read from (its size and mtime fingerprint the cache entry)."""
        return record.path

    # A dataset whose records are not image files (FER2013's CSV rows) also defines
    # ``decode(record, size, crop) -> (size, size, 3) uint8``, raising ``ImageReadError`` for an unusable one;
    # the cache then calls it instead of reading ``record.path`` as an image.

    def summary_line(self) -> str:
        line = f"{self.name}: {len(self.records)} usable images"
        if self.skipped:
            reasons: dict[str, int] = {}
            for reason in self.skipped.values():
                key = reason.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
            line += f", {len(self.skipped)} skipped (" + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) + ")"
        return line


def hash_fraction(key: str) -> float:
    """A stable number in [0, 1) from a string: identical on every machine and Python version
    (unlike ``hash()``, which is salted per process)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(key: str, test: float = 0.15, val: float = 0.05) -> str:
    """Deterministic split by hashing ``key`` (a file name, or a person's name for LFW).

    ``test`` of the keys go to test (BAFO's 85/15 split); ``val`` (a fraction of the whole) is carved
    out of what would be train.
    """
    u = hash_fraction(key)
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"
