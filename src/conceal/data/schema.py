"""Label schemas: what each dataset's labels are, so methods and the audit need no per-dataset code.

A label is one of three kinds:
- ``binary``: stored as 0.0 / 1.0, with two class names (index 0, index 1);
- ``categorical``: stored as the class index 0..K-1, with K class names;
- ``continuous``: stored as a float inside ``range``.

Labels travel as float32 arrays with NaN meaning "unknown" (e.g. the 3 LFW images without a
gender label): unknown is never replaced by a guess.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

LabelKind = Literal["binary", "categorical", "continuous"]


class LabelError(ValueError):
    """A label value that does not fit its schema; the message is one line for the user."""


@dataclass(frozen=True)
class Label:
    name: str
    kind: LabelKind
    classes: tuple[str, ...] = ()
    range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("binary", "categorical", "continuous"):
            raise LabelError(f"label {self.name!r}: kind must be binary, categorical or continuous, not {self.kind!r}")
        if self.kind == "binary" and len(self.classes) != 2:
            raise LabelError(f"label {self.name!r}: a binary label needs exactly 2 class names")
        if self.kind == "categorical" and len(self.classes) < 2:
            raise LabelError(f"label {self.name!r}: a categorical label needs at least 2 class names")
        if self.kind == "continuous" and self.range is None:
            raise LabelError(f"label {self.name!r}: a continuous label needs a range (lo, hi)")

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for continuous labels)."""
        return len(self.classes)

    def parse(self, value: Any) -> float:
        """User value (class name, index, or number) -> stored float. Raises LabelError with one line."""
        if self.kind == "continuous":
            lo, hi = self.range  # type: ignore[misc]
            try:
                x = float(value)
            except (TypeError, ValueError):
                raise LabelError(f"{self.name} must be a number in {lo:g}..{hi:g}, not {value!r}") from None
            if not (lo <= x <= hi) or math.isnan(x):
                raise LabelError(f"{self.name} must be in {lo:g}..{hi:g}, not {value!r}")
            return x
        names = ", ".join(self.classes)
        if isinstance(value, str):
            key = value.strip().lower()
            lowered = [c.lower() for c in self.classes]
            if key in lowered:
                return float(lowered.index(key))
            if key.lstrip("-").isdigit():
                value = int(key)
            else:
                raise LabelError(f"{self.name} must be one of {names}, not {value!r}")
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)) and float(value).is_integer() and 0 <= value < len(self.classes):
            return float(value)
        raise LabelError(f"{self.name} must be one of {names}, not {value!r}")

    def describe(self, stored: float) -> str:
        """Stored float -> readable value ("female", "40")."""
        if math.isnan(stored):
            return "unknown"
        if self.kind == "continuous":
            return f"{stored:g}"
        return self.classes[int(stored)]


@dataclass(frozen=True)
class LabelSchema:
    labels: tuple[Label, ...] = field(default_factory=tuple)

    def __iter__(self):
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __getitem__(self, name: str) -> Label:
        for label in self.labels:
            if label.name == name:
                return label
        raise KeyError(f"no label {name!r}; this dataset has: {', '.join(self.names) or 'none'}")

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.labels]

    def subset(self, names: list[str] | tuple[str, ...]) -> "LabelSchema":
        return LabelSchema(tuple(self[n] for n in names))

    def parse(self, values: dict[str, Any]) -> dict[str, float]:
        """Validate a user's attribute dict ({"gender": "female", "age": 40}) against the schema."""
        out = {}
        for name, value in values.items():
            if name not in self:
                raise LabelError(f"unknown attribute {name!r}; this model knows: {', '.join(self.names)}")
            out[name] = self[name].parse(value)
        return out

    def to_json(self) -> list[dict]:
        return [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(label).items() if v not in ((), None)}
            for label in self.labels
        ]

    @classmethod
    def from_json(cls, items: list[dict]) -> "LabelSchema":
        return cls(
            tuple(
                Label(
                    name=d["name"],
                    kind=d["kind"],
                    classes=tuple(d.get("classes", ())),
                    range=tuple(d["range"]) if d.get("range") is not None else None,
                )
                for d in items
            )
        )


# The schemas of the built-in datasets, shared by their loaders and by the synthetic generator
# (which mimics UTKFace's so one trained pipeline runs on both).
GENDER = Label("gender", "binary", ("male", "female"))
AGE = Label("age", "continuous", range=(0.0, 116.0))
RACE = Label("race", "categorical", ("white", "black", "asian", "indian", "other"))
UTKFACE_SCHEMA = LabelSchema((AGE, GENDER, RACE))


def parse_attributes(text: str | None) -> dict[str, str]:
    """'gender=female,age=40' -> {'gender': 'female', 'age': '40'}; a name given twice is refused, not last-wins."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        if "=" not in part or not part.split("=", 1)[0].strip():
            raise LabelError(f"--as takes name=value pairs separated by commas, not {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        if k in out:
            raise LabelError(f"--as names {k!r} twice ({k}={out[k]}, {k}={v}): give each attribute once")
        out[k] = v
    return out
