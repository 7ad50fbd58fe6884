"""UTKFace: labels come from the file names ``AGE_GENDER_RACE_DATETIME.jpg[.chip.jpg]``.

Names are parsed strictly (age 0..116, gender 0/1, race 0..4); any other name is skipped with its
reason, never guessed. The scan reads directory entries only: nothing is decoded until ``arrays()``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .base import DataError, FaceDataset, FaceRecord, assign_split
from .images import is_image_name
from .schema import UTKFACE_SCHEMA

# Three digit fields then a non-empty date (one public file reads "...357jpg.chip.jpg": the
# date is not used, so it need not be clean).
_NAME = re.compile(r"([0-9]+)_([0-9]+)_([0-9]+)_([^_]+)")
_MALFORMED = "malformed name: expected AGE_GENDER_RACE_DATE"


def parse_utkface_name(file_name: str) -> dict[str, float]:
    """``"25_1_2_2017....jpg.chip.jpg"`` -> {"age": 25.0, "gender": 1.0, "race": 2.0}.

    Raises ``ValueError`` whose message is the skip reason ("malformed name: ...").
    """
    match = _NAME.fullmatch(file_name.split(".", 1)[0])  # the part before the first "."
    if match is None:
        raise ValueError(_MALFORMED)
    age, gender, race = (int(field) for field in match.groups()[:3])
    for name, value, hi in (("age", age, 116), ("gender", gender, 1), ("race", race, 4)):
        if value > hi:
            raise ValueError(f"malformed name: {name} {value} is outside 0..{hi}")
    return {"age": float(age), "gender": float(gender), "race": float(race)}


class UTKFace(FaceDataset):
    """UTKFace images in ``root`` itself or in ``root/UTKFace``; split by hashing the file name."""

    name = "utkface"

    def __init__(self, root: str | Path, test_fraction: float = 0.15, val_fraction: float = 0.05):
        super().__init__(root)
        if not (0 <= test_fraction and 0 <= val_fraction and test_fraction + val_fraction < 1):
            raise DataError(f"utkface: need 0 <= test, val and test + val < 1 (got {test_fraction}, {val_fraction})")
        self.schema = UTKFACE_SCHEMA
        nested = self.root / "UTKFace"
        self.folder = nested if nested.is_dir() else self.root
        if not self.folder.is_dir():
            raise DataError(f"utkface: {self.folder} is not a folder")

        with os.scandir(self.folder) as entries:
            # Sorted so records (and so cache rows) come in the same order on every machine.
            for entry in sorted(entries, key=lambda e: e.name):
                path = self.folder / entry.name
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    self.skipped[str(path)] = "a folder (UTKFace images are not searched in subfolders)"
                elif not is_image_name(entry.name):
                    self.skipped[str(path)] = "not an image file (suffix)"
                else:
                    try:
                        labels = parse_utkface_name(entry.name)
                    except ValueError as reason:
                        self.skipped[str(path)] = str(reason)
                        continue
                    split = assign_split(entry.name, test=test_fraction, val=val_fraction)
                    self.records.append(FaceRecord(path=path, labels=labels, split=split))
        if not self.records:
            raise DataError(f"utkface: no usable images in {self.folder} ({len(self.skipped)} files skipped)")
