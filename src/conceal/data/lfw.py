"""LFW (Labeled Faces in the Wild): identities from folder names, gender from the name lists.

Layout under ``root``: ``lfw/<Person>/<Person>_NNNN.jpg``, ``pairs.txt``, ``male_names.txt``,
``female_names.txt``. Identity is the index of the person in sorted order; the split is by person, so
no one appears in two splits. Images without a gender line (or listed in both files) keep gender NaN
and stay usable for identity. Malformed lines in the text files are counted in ``malformed_lines``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from .base import FaceArrays, SPLITS, DataError, FaceDataset, FaceRecord, assign_split
from .schema import GENDER, LabelSchema

_IMAGE_NAME = re.compile(r"(.+)_([0-9]{4})\.jpg")
_PAIR_COUNT_KEYS = ("pairs_txt_matched", "pairs_txt_mismatched", "seeded_mismatched")

ImageKey = tuple[str, int]  # (person, image number), e.g. ("Aaron_Sorkin", 2)


class LFW(FaceDataset):
    name = "lfw"
    default_crop = 0.5  # the face fills roughly the middle half of the 250x250 image

    def __init__(self, root: str | Path, test_fraction: float = 0.15, val_fraction: float = 0.05):
        super().__init__(root)
        if not (0 <= test_fraction and 0 <= val_fraction and test_fraction + val_fraction < 1):
            raise DataError(f"lfw: need 0 <= test, val and test + val < 1 (got {test_fraction}, {val_fraction})")
        image_root = self.root / "lfw"
        if not image_root.is_dir():
            raise DataError(f"lfw: expected the image folder {image_root} (root holds lfw/, pairs.txt, *_names.txt)")
        self.schema = LabelSchema((GENDER,))
        self.malformed_lines: dict[str, int] = {}  # text file name -> lines skipped
        gender = self._read_genders()

        self.people: list[str] = []  # identity -> person name
        for person_dir in sorted(os.scandir(image_root), key=lambda e: e.name):
            if person_dir.name.startswith("."):
                continue
            if not person_dir.is_dir():
                self.skipped[str(image_root / person_dir.name)] = "not a person folder"
                continue
            split = assign_split(person_dir.name, test=test_fraction, val=val_fraction)
            identity = len(self.people)
            for entry in sorted(os.scandir(person_dir.path), key=lambda e: e.name):
                if entry.name.startswith("."):
                    continue
                path = Path(person_dir.path, entry.name)
                match = _IMAGE_NAME.fullmatch(entry.name)
                if not entry.is_file() or match is None or match.group(1) != person_dir.name:
                    self.skipped[str(path)] = f"unexpected name: expected {person_dir.name}_NNNN.jpg"
                    continue
                labels = {"gender": gender.get(entry.name, math.nan)}
                self.records.append(FaceRecord(path=path, labels=labels, identity=identity, split=split))
            if self.records and self.records[-1].identity == identity:
                self.people.append(person_dir.name)
        if not self.records:
            raise DataError(f"lfw: no usable images in {image_root} ({len(self.skipped)} skipped)")
        self._pairs_txt = self._read_pairs()

    def _read_lines(self, file_name: str) -> list[list[str]]:
        """Non-comment, non-blank lines of a text file under root, split on whitespace ([] if absent)."""
        path = self.root / file_name
        self.malformed_lines[file_name] = 0
        if not path.is_file():
            return []
        with open(path, encoding="utf-8", errors="replace") as handle:
            return [line.split() for line in handle if line.strip() and not line.lstrip().startswith("#")]

    def _read_genders(self) -> dict[str, float]:
        """Image file name -> 0.0 (male) / 1.0 (female); names listed in both files are left out."""
        gender: dict[str, float] = {}
        conflicting: set[str] = set()
        for file_name, value in (("male_names.txt", 0.0), ("female_names.txt", 1.0)):
            for fields in self._read_lines(file_name):
                if len(fields) != 1 or _IMAGE_NAME.fullmatch(fields[0]) is None:
                    self.malformed_lines[file_name] += 1
                elif gender.setdefault(fields[0], value) != value:
                    conflicting.add(fields[0])
        for image_name in conflicting:  # don't guess between two answers
            del gender[image_name]
        return gender

    def _read_pairs(self) -> list[tuple[ImageKey, ImageKey, int]]:
        """pairs.txt -> [(image a, image b, same)]: ``Name i j`` is same (1), ``Name1 i Name2 j`` different (0)."""
        def number(text: str) -> int | None:
            return int(text) if text.isascii() and text.isdigit() else None

        pairs = []
        for fields in self._read_lines("pairs.txt"):
            if len(fields) == 3:
                a, b = (fields[0], number(fields[1])), (fields[0], number(fields[2]))
            elif len(fields) == 4:
                a, b = (fields[0], number(fields[1])), (fields[2], number(fields[3]))
            else:
                a = b = (fields[0], None)
            if a[1] is None or b[1] is None or a == b or (len(fields) == 4 and a[0] == b[0]):
                self.malformed_lines["pairs.txt"] += 1
            else:
                pairs.append((a, b, int(len(fields) == 3)))
        return pairs

    def pairs(
        self, split: str, n_mismatched: int | None = None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Face-verification pairs among the people of ``split``.

        Returns (pairs (P, 2) int64 row indices into ``records``, same (P,) int64 1/0, counts). The pairs
        are pairs.txt's matched and mismatched lines whose images are both in ``split``, then
        ``n_mismatched`` pairs of images of two different people of the split, drawn with ``seed``
        (default: as many as balance matched against mismatched, or as many as exist if fewer;
        ``DataError`` if an explicit ``n_mismatched`` is more than exist). pairs.txt lines naming an image not
        among the records are counted as ``pairs_txt_unresolved``.

        Indices refer to ``records`` as of this call; ``arrays()`` first drops undecodable images from
        ``records`` too, so indices taken after ``arrays()`` are also its row numbers.
        """
        if split not in SPLITS:
            raise DataError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        row_of: dict[ImageKey, int] = {}
        for row, record in enumerate(self.records):
            match = _IMAGE_NAME.fullmatch(record.path.name)
            row_of[(match.group(1), int(match.group(2)))] = row
        counts = dict.fromkeys(_PAIR_COUNT_KEYS, 0) | {"pairs_txt_unresolved": 0}
        rows: list[tuple[int, int]] = []
        same: list[int] = []
        for a, b, is_same in self._pairs_txt:
            if a not in row_of or b not in row_of:
                counts["pairs_txt_unresolved"] += 1
                continue
            row_a, row_b = row_of[a], row_of[b]
            if self.records[row_a].split == split and self.records[row_b].split == split:
                rows.append((row_a, row_b))
                same.append(is_same)
                counts["pairs_txt_matched" if is_same else "pairs_txt_mismatched"] += 1

        in_split = np.array([i for i, r in enumerate(self.records) if r.split == split], dtype=np.int64)  # (M,)
        taken = set(map(frozenset, rows))
        available = self._n_mismatched_available(in_split, taken)
        if n_mismatched is None:  # balance, as far as the split's people allow
            n_mismatched = min(available, max(0, counts["pairs_txt_matched"] - counts["pairs_txt_mismatched"]))
        elif n_mismatched > available:
            raise DataError(f"lfw: asked for {n_mismatched} mismatched pairs in {split}, only {available} exist")
        seeded = self._draw_mismatched(in_split, n_mismatched, taken, seed)
        rows += seeded
        same += [0] * len(seeded)
        counts["seeded_mismatched"] = len(seeded)
        return np.array(rows, dtype=np.int64).reshape(-1, 2), np.array(same, dtype=np.int64), counts

    def pairs_among(self, arrays: FaceArrays, split: str, seed: int = 0) -> dict:
        """``pairs(split)`` as rows of ``arrays`` (decoded from this dataset): FaceArrays' ``pairs`` field.

        Pairs with an image that is not among ``arrays`` (undecodable, or a sample) are dropped and counted.
        """
        pairs, same, counts = self.pairs(split, seed=seed)
        row_of = {path: row for row, path in enumerate(arrays.paths)}
        rows = np.array([[row_of.get(str(self.records[i].path), -1) for i in pair] for pair in pairs], np.int64).reshape(-1, 2)
        kept = (rows >= 0).all(axis=1)
        return {
            "rows": rows[kept],
            "same": same[kept].astype(bool),
            "counts": counts | {"left_out_by_row_selection": int((~kept).sum())},
            "source": f"pairs.txt lines among the {split} split's people, plus seeded pairs of two different people (seed {seed}) to balance",
        }

    def _n_mismatched_available(self, in_split: np.ndarray, taken: set[frozenset]) -> int:
        """Unordered pairs of rows ``in_split`` showing two different people, less those in ``taken``."""
        _, per_person = np.unique([self.records[i].identity for i in in_split], return_counts=True)
        n_pairs = (len(in_split) ** 2 - int((per_person**2).sum())) // 2
        return n_pairs - sum(1 for pair in taken if len({self.records[i].identity for i in pair}) == 2)

    def _draw_mismatched(self, in_split: np.ndarray, n: int, taken: set[frozenset], seed: int) -> list[tuple[int, int]]:
        """``n`` distinct pairs of rows ``in_split`` showing two different people, none already in ``taken``."""
        identity = np.array([self.records[i].identity for i in in_split], dtype=np.int64)  # (M,)
        rng = np.random.default_rng(seed)
        drawn: list[tuple[int, int]] = []
        while len(drawn) < n:
            # Rejection sampling in batches: same-person draws are rare with many people.
            a, b = rng.integers(len(in_split), size=(2, 2 * (n - len(drawn)) + 16))
            for i, j in zip(a, b):
                key = frozenset((int(in_split[i]), int(in_split[j])))
                if identity[i] != identity[j] and key not in taken:
                    taken.add(key)
                    drawn.append((int(in_split[i]), int(in_split[j])))
                    if len(drawn) == n:
                        break
        return drawn
