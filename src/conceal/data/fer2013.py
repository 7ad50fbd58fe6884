"""FER2013 facial expressions, with FER2013's 7 labels or FER+'s majority vote over 8 emotions.

Layout under ``root``: ``fer2013.csv`` or ``fer2013.csv.gz`` as distributed (header ``emotion,pixels,Usage``;
``pixels`` = 2,304 space-separated grey levels 0..255 of a 48 x 48 face, row-major), and for FER+ labels
``fer2013new.csv`` beside it (Barsoum et al. 2016: ten annotators' votes per row, joined **by row
position** -- its "Image name" column is not the row index).

- Splits come from ``Usage``: ``Training`` -> train, less a seeded validation slice (``val_fraction`` of
  it, by hashing the row number with ``split_seed``); ``PublicTest`` -> test; ``PrivateTest`` (in copies
  that have it) -> ``private_test``, a second test split no default code path reads.
- ``labels="fer2013"``: emotion = FER2013's column (angry, disgust, fear, happy, sad, surprise, neutral).
  ``labels="ferplus"``: the FER+ paper's majority protocol (its ``ferplus.py``, mode "majority"): votes of
  one annotator are dropped as outliers, the emotion with more than half of the remaining votes (over all
  ten columns) wins; rows with no such majority, won by unknown or NF, or dropped by FER+ (empty image
  name) are skipped with that reason.
- Images are grey, returned as 3 equal channels, upsampled (bicubic) from 48 px to the requested size.
- Bad rows are skipped with a reason, never guessed: wrong field count, unknown emotion or Usage, a pixel
  count other than 2,304 (checked when scanning); non-integer or out-of-range pixel values (checked when
  decoding, so they are reported once ``arrays()`` ran, as undecodable images of the other datasets are).

Rows are records whose path is ``<csv>#<row number>`` (row 0 = the first line after the header), so the
preprocessing cache keys and fingerprints them like image files (the fingerprint is the CSV's size and
mtime); nothing in the name says the label.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import setting
from .base import DataError, FaceDataset, FaceRecord, assign_split
from .images import ImageReadError, center_crop_resize
from .schema import Label, LabelSchema

SIDE = 48
N_PIXELS = SIDE * SIDE
FER2013_EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FERPLUS_EMOTIONS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
FERPLUS_COLUMNS = (*FERPLUS_EMOTIONS, "unknown", "NF")  # the vote columns of fer2013new.csv, in order
LABEL_SCHEMES = ("fer2013", "ferplus")
USAGE_SPLITS = {"Training": "train", "PublicTest": "test", "PrivateTest": "private_test"}
CSV_NAMES = ("fer2013.csv", "fer2013.csv.gz")
FERPLUS_NAME = "fer2013new.csv"


def _open_text(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def ferplus_majority(votes: list[float]) -> int | str:
    """Ten FER+ vote counts -> index of the winning emotion (0..7), or why the row has none.

    The FER+ paper's "majority" mode: counts of 1 are outliers and dropped; the winner needs more than half
    of the remaining votes; a row won by unknown or NF (not a face) is no emotion.
    """
    kept = [v if v > 1 else 0.0 for v in votes]
    total = sum(kept)
    if total <= 0:
        return "no FER+ majority (no emotion has two votes)"
    best = int(np.argmax(kept))
    if kept[best] <= total / 2:
        return "no FER+ majority"
    if best >= len(FERPLUS_EMOTIONS):
        return f"FER+ majority is {FERPLUS_COLUMNS[best]}"
    return best


def parse_pixels(text: str) -> np.ndarray:
    """``"70 80 ... 82"`` -> (48, 48) uint8, or ``ImageReadError`` with the reason."""
    n_values = len(text.split())
    if n_values != N_PIXELS:
        raise ImageReadError(f"malformed pixels: {n_values} values, expected {N_PIXELS}")
    try:  # 3x faster than int() per token; raises at a token that is not a number
        values = np.fromstring(text, dtype=np.float64, sep=" ")
    except ValueError:
        raise ImageReadError("malformed pixels: a value is not a number") from None
    if values.size != N_PIXELS:  # older numpy stops (with a warning) instead of raising
        raise ImageReadError("malformed pixels: a value is not a number")
    if not np.all(values == np.round(values)):
        raise ImageReadError("malformed pixels: a value is not an integer")
    if values.min() < 0 or values.max() > 255:
        raise ImageReadError(f"malformed pixels: values outside 0..255 (min {values.min():g}, max {values.max():g})")
    return values.astype(np.uint8).reshape(SIDE, SIDE)


@dataclass
class FER2013Options:
    # fer2013 (its 7 emotions) | ferplus (FER+ majority vote over 8 emotions)
    labels: str = setting("fer2013", choices=LABEL_SCHEMES)


class FER2013(FaceDataset):
    name = "fer2013"
    Options = FER2013Options
    cli_options = {"labels": "label scheme: fer2013 (its 7 emotions) or ferplus (FER+ majority vote over 8)"}

    def __init__(self, root: str | Path, labels: str = "fer2013", val_fraction: float = 0.05, split_seed: int = 0):
        super().__init__(root)
        if labels not in LABEL_SCHEMES:
            raise DataError(f"fer2013: labels must be one of {', '.join(LABEL_SCHEMES)}, not {labels!r}")
        if not 0 <= val_fraction < 1:
            raise DataError(f"fer2013: need 0 <= val_fraction < 1 (got {val_fraction})")
        self.labels = labels
        # The schemes skip different rows: separate cache entries, so switching does not evict the other.
        self.cache_variant = labels
        self.csv_path = self._find_csv()
        emotions = FER2013_EMOTIONS if labels == "fer2013" else FERPLUS_EMOTIONS
        self.schema = LabelSchema((Label("emotion", "categorical", emotions),))
        self._pixels: dict[int, str] = {}  # row -> pixel text, parsed when decoding
        ferplus = self._read_ferplus() if labels == "ferplus" else None

        with _open_text(self.csv_path) as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            if header[:3] != ["emotion", "pixels", "Usage"]:
                raise DataError(f"fer2013: {self.csv_path.name} must start with the header emotion,pixels,Usage (found {','.join(header)[:60]!r})")
            row = -1
            for row, fields in enumerate(reader):
                path = self.csv_path.with_name(f"{self.csv_path.name}#{row}")
                try:
                    emotion, split = self._parse_row(fields, row, ferplus)
                except ValueError as reason:
                    self.skipped[str(path)] = str(reason)
                    continue
                if split == "train":
                    split = assign_split(f"{split_seed}:{row}", test=0.0, val=val_fraction)
                self._pixels[row] = fields[1]
                self.records.append(FaceRecord(path=path, labels={"emotion": emotion}, split=split))
        self.n_rows = row + 1
        if ferplus is not None and len(ferplus) > self.n_rows:
            self.extra_ferplus_rows = len(ferplus) - self.n_rows  # FER+ rows beyond the CSV's: unused
        if not self.records:
            raise DataError(f"fer2013: no usable rows in {self.csv_path} ({len(self.skipped)} skipped)")

    def _find_csv(self) -> Path:
        for name in CSV_NAMES:
            if (self.root / name).is_file():
                return self.root / name
        if self.root.is_file() and self.root.name in CSV_NAMES:  # root given as the CSV itself
            self.root = self.root.parent
            return self._find_csv()
        raise DataError(f"fer2013: expected {' or '.join(CSV_NAMES)} in {self.root}")

    def _read_ferplus(self) -> list[int | str]:
        """fer2013new.csv -> per row, the FER+ emotion index or the reason there is none."""
        path = self.root / FERPLUS_NAME
        if not path.is_file():
            raise DataError(f"fer2013: labels=ferplus needs {FERPLUS_NAME} beside {self.csv_path.name} in {self.root}")
        with _open_text(path) as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            if tuple(header[2:12]) != FERPLUS_COLUMNS:
                raise DataError(f"fer2013: {FERPLUS_NAME} must have the columns Usage,Image name,{','.join(FERPLUS_COLUMNS)}")
            winners: list[int | str] = []
            for fields in reader:
                if len(fields) != 12:
                    winners.append(f"malformed FER+ row: {len(fields)} fields, expected 12")
                elif not fields[1].strip():
                    winners.append("dropped by FER+ (no image name)")
                else:
                    try:
                        votes = [float(v) for v in fields[2:12]]
                    except ValueError:
                        winners.append("malformed FER+ votes: not numbers")
                        continue
                    if not all(math.isfinite(v) and v >= 0 for v in votes):
                        winners.append("malformed FER+ votes: negative or not finite")
                    else:
                        winners.append(ferplus_majority(votes))
        return winners

    def _parse_row(self, fields: list[str], row: int, ferplus: list[int | str] | None) -> tuple[float, str]:
        """A CSV row -> (stored emotion, split), or ``ValueError`` with the skip reason."""
        if len(fields) != 3:
            raise ValueError(f"malformed row: {len(fields)} fields, expected 3")
        emotion, pixels, usage = fields[0].strip(), fields[1], fields[2].strip()
        if usage not in USAGE_SPLITS:
            raise ValueError(f"unknown Usage {usage[:20]!r}")
        if pixels.count(" ") != N_PIXELS - 1 and len(pixels.split()) != N_PIXELS:
            raise ValueError(f"malformed pixels: {len(pixels.split())} values, expected {N_PIXELS}")
        if ferplus is None:
            if not (emotion.isascii() and emotion.isdigit() and int(emotion) < len(FER2013_EMOTIONS)):
                raise ValueError(f"unknown emotion {emotion[:20]!r}")
            return float(emotion), USAGE_SPLITS[usage]
        if row >= len(ferplus):
            raise ValueError(f"no FER+ row (fer2013new.csv has {len(ferplus)} rows)")
        winner = ferplus[row]
        if isinstance(winner, str):
            raise ValueError(winner)
        return float(winner), USAGE_SPLITS[usage]

    # --- the cache's hooks ------------------------------------------------------------------------

    def source_file(self, record: FaceRecord) -> Path:
        return self.csv_path

    def decode(self, record: FaceRecord, size: int, crop: float) -> np.ndarray:
        """A row -> (size, size, 3) uint8: the grey 48 x 48 face upsampled, as three equal channels."""
        row = int(str(record.path).rsplit("#", 1)[1])
        grey = parse_pixels(self._pixels[row])  # (48, 48)
        return center_crop_resize(np.repeat(grey[:, :, None], 3, axis=2), size, crop)
