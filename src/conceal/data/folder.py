"""A folder of images plus a CSV of labels: the way to bring your own data.

The CSV (``root/labels.csv`` unless given) has a path column (relative to ``root``), optional
``identity`` and ``split`` columns, and one column per label. Without an explicit schema, each label
column's kind is inferred from its values:

- only 0 and 1 -> binary (classes "0", "1");
- other numbers -> continuous, range (min, max);
- at most 20 distinct strings -> categorical (sorted class names, stored as the index);
- anything else (more strings, a single string, no values) is not a label: it is ignored and listed in
  ``ignored_columns``.

The inferred kinds are said, never silent (``inferred``, in ``data info`` and the training log): a gender
coded -1..2 is continuous by these rules, and only the user knows it should not be (write class names).

An empty cell is an unknown label (NaN). With an explicit schema, a cell that does not fit it skips the
row ("malformed label 'age'='abc'"). Paths are normalised (``./a.jpg``, ``a//b.jpg`` and ``a/./b.jpg``
name one image each; a file listed twice under any spelling, or through a link, is skipped as listed
twice), and a path that leads out of the root, through ``..`` or a link, is skipped. Rows are split by the ``split`` column if there is one, else by
person when there is an ``identity`` column (so no one is in two splits), else by the relative path.
"""

from __future__ import annotations

import io
import math
from csv import reader as csv_reader
from pathlib import Path, PurePosixPath

from .base import SPLITS, DataError, FaceDataset, FaceRecord, assign_split
from .images import is_image_name
from .schema import Label, LabelError, LabelSchema

MAX_INFERRED_CLASSES = 20
_RESERVED = ("identity", "split")


def _number(text: str) -> float | None:
    """A finite number, or None ("nan" and "inf" are not label values)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def infer_label(name: str, values: list[str]) -> Label:
    """The label kind that fits every non-empty ``values`` cell; ``LabelError`` when none does."""
    if not values:
        raise LabelError("no values")
    numbers = [_number(v) for v in values]
    if all(n is not None for n in numbers):
        if set(numbers) <= {0.0, 1.0}:
            return Label(name, "binary", ("0", "1"))
        return Label(name, "continuous", range=(min(numbers), max(numbers)))
    classes = sorted(set(values))
    if len(classes) > MAX_INFERRED_CLASSES:
        raise LabelError(f"{len(classes)} distinct text values (at most {MAX_INFERRED_CLASSES} make a category)")
    if len(classes) < 2:
        raise LabelError("a single value")
    return Label(name, "categorical", tuple(classes))


def describe_kind(label: Label) -> str:
    """'binary 0/1', 'continuous -1..2', 'categorical (3 classes: a, b, c)'."""
    if label.kind == "continuous":
        lo, hi = label.range
        return f"continuous {lo:g}..{hi:g}"
    if label.kind == "binary":
        return "binary 0/1"
    shown = ", ".join(label.classes[:5]) + (", ..." if label.n_classes > 5 else "")
    return f"categorical ({label.n_classes} classes: {shown})"


def _inferred_value(label: Label, cell: str) -> float:
    """Cell -> stored float for a label inferred from these very cells (so it always fits)."""
    if label.kind == "categorical":
        return float(label.classes.index(cell))  # exact match: class names may differ only in case
    return float(cell)


class FolderCSV(FaceDataset):
    name = "folder"

    def __init__(
        self,
        root: str | Path,
        csv: str | Path | None = None,
        path_column: str = "path",
        schema: LabelSchema | None = None,
        test_fraction: float = 0.15,
        val_fraction: float = 0.05,
    ):
        super().__init__(root)
        if not (0 <= test_fraction and 0 <= val_fraction and test_fraction + val_fraction < 1):
            raise DataError(f"folder: need 0 <= test, val and test + val < 1 (got {test_fraction}, {val_fraction})")
        self.csv_path = self._find_csv(csv)
        header, rows = self._read_csv(path_column)
        # Rows whose path is unusable are skipped first, so only usable rows shape the inferred schema.
        usable_rows = []
        seen: set[Path] = set()  # the resolved files already listed
        real_root = self.root.resolve()
        for line, row in rows:
            relative = row[path_column] = PurePosixPath(row[path_column]).as_posix() if row[path_column] else ""
            try:
                resolved = self._check_path(relative, real_root, seen)
            except ValueError as reason:
                # A duplicate or empty path would be a confusing key: name the CSV line instead.
                key = str(self.root / relative)
                by_line = str(reason) in ("empty path", "listed twice in the CSV") or key in self.skipped
                self.skipped[f"{self.csv_path.name} line {line}" if by_line else key] = str(reason)
                continue
            seen.add(resolved)
            usable_rows.append((line, row))

        label_columns = [c for c in header if c != path_column and c not in _RESERVED]
        self.ignored_columns: dict[str, str] = {}  # column -> why it is not a label
        self.inferred: dict[str, str] = {}  # label column -> the kind inferred for it, in words
        if schema is None:
            labels = []
            for column in label_columns:
                try:
                    labels.append(infer_label(column, [row[column] for _, row in usable_rows if row[column]]))
                except LabelError as reason:
                    self.ignored_columns[column] = str(reason)
            self.schema = LabelSchema(tuple(labels))
            self.inferred = {label.name: describe_kind(label) for label in labels}
        else:
            missing = [n for n in schema.names if n not in header]
            if missing:
                raise DataError(f"folder: {self.csv_path.name} has no column for label(s) {', '.join(missing)}")
            self.schema = schema
            self.ignored_columns = {c: "not in the given schema" for c in label_columns if c not in schema}

        self.identity_names: list[str] = sorted({row["identity"] for _, row in usable_rows if row.get("identity")})
        identity_of = {name: i for i, name in enumerate(self.identity_names)}  # CSV value -> identity id
        for line, row in usable_rows:
            relative = row[path_column]
            try:
                labels = self._parse_labels(row, inferred=schema is None)
                split = self._split(row, relative, test_fraction, val_fraction)
            except ValueError as reason:
                self.skipped[str(self.root / relative)] = str(reason)
                continue
            identity = identity_of.get(row.get("identity", ""), -1)
            self.records.append(FaceRecord(path=self.root / relative, labels=labels, identity=identity, split=split))
        if not self.records:
            raise DataError(f"folder: no usable rows in {self.csv_path} ({len(self.skipped)} skipped)")

    def _find_csv(self, csv_path: str | Path | None) -> Path:
        """``None`` -> root/labels.csv; a relative name is looked for as given, then under root."""
        path = self.root / "labels.csv" if csv_path is None else Path(csv_path).expanduser()
        if not path.is_file() and not path.is_absolute() and (self.root / path).is_file():
            path = self.root / path
        if not path.is_file():
            raise DataError(f"folder: label file {path} not found (give one with csv=...)")
        return path

    def _read_csv(self, path_column: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
        """CSV -> (header, [(line number, row with stripped cells)]). Short rows get empty cells."""
        # utf-8-sig: spreadsheet programs often start the file with a byte-order mark.
        try:
            text = self.csv_path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(f"folder: {self.csv_path.name} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
        except OSError as e:
            raise DataError(f"folder: cannot read {self.csv_path}: {e.strerror or e}") from None
        with io.StringIO(text, newline="") as handle:
            reader = csv_reader(handle)
            header = [cell.strip() for cell in next(reader, [])]
            if path_column not in header:
                raise DataError(f"folder: {self.csv_path.name} has no {path_column!r} column (header: {', '.join(header)})")
            if len(set(header)) != len(header):
                raise DataError(f"folder: {self.csv_path.name} repeats a column name (header: {', '.join(header)})")
            rows = []
            for cells in reader:
                if any(cell.strip() for cell in cells):  # blank lines are not rows
                    cells = [cell.strip() for cell in cells] + [""] * (len(header) - len(cells))
                    rows.append((reader.line_num, dict(zip(header, cells))))
        return header, rows

    # The checks below raise ValueError with the skip reason.

    def _check_path(self, relative: str, real_root: Path, seen: set[Path]) -> Path:
        """-> the file ``relative`` names, resolved (links followed), when it is usable."""
        if not relative:
            raise ValueError("empty path")
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise ValueError("path must be relative to the root, inside it")
        if not is_image_name(relative):
            raise ValueError("not an image file (suffix)")
        if not (self.root / relative).is_file():
            raise ValueError("file not found")
        resolved = (self.root / relative).resolve()
        if not resolved.is_relative_to(real_root):
            raise ValueError("a link to a file outside the root")
        if resolved in seen:
            raise ValueError("listed twice in the CSV")
        return resolved

    def summary_line(self) -> str:
        kinds = ", ".join(f"{name} {kind}" for name, kind in self.inferred.items())
        return super().summary_line() + (f"; label kinds inferred from {self.csv_path.name}: {kinds}" if kinds else "")

    def _parse_labels(self, row: dict[str, str], inferred: bool) -> dict[str, float]:
        labels = {}
        for label in self.schema:
            cell = row[label.name]
            if not cell:
                labels[label.name] = math.nan
                continue
            try:
                labels[label.name] = _inferred_value(label, cell) if inferred else label.parse(cell)
            except LabelError:
                raise ValueError(f"malformed label {label.name!r}={cell!r}") from None
        return labels

    def _split(self, row: dict[str, str], relative: str, test: float, val: float) -> str:
        if "split" in row:
            if row["split"].lower() not in SPLITS:
                raise ValueError(f"malformed split {row['split']!r}")
            return row["split"].lower()
        key = f"identity:{row['identity']}" if row.get("identity") else Path(relative).as_posix()
        return assign_split(key, test=test, val=val)
