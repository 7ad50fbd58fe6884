"""Datasets: one interface (``FaceDataset`` -> ``FaceArrays``) for UTKFace, LFW, FER2013, folder+CSV and synthetic faces.

The dataset registry: name -> ``FaceDataset`` class, each class its dataset's spec -- ``name``,
``needs_root``, ``default_crop``, ``Options`` (a dataclass: the run config's ``[data.options]`` table, e.g.
synthetic's ``n`` and ``seed``, FER2013's ``labels``) and ``cli_options`` (those of its options that
``conceal data info`` offers as flags). The CLI, training and the audit open datasets through here and
never branch on a dataset's name. ``BUILTIN`` says where each built-in dataset lives ("module:Class",
imported when first asked for); another is added with ``register_dataset(MyDataset)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..registry import Registry
from .base import SPLITS, DataError, FaceArrays, FaceDataset, FaceRecord, assign_split
from .schema import UTKFACE_SCHEMA, Label, LabelError, LabelSchema

BUILTIN = {
    "utkface": "conceal.data.utkface:UTKFace",
    "lfw": "conceal.data.lfw:LFW",
    "folder": "conceal.data.folder:FolderCSV",
    "fer2013": "conceal.data.fer2013:FER2013",
    "synthetic": "conceal.data.synthetic:SyntheticFaces",
}
DATASETS = tuple(BUILTIN)  # the built-in names, without importing a dataset module

# Flat [data] keys of configs and model.json files written before datasets had their own options:
# old key -> (the dataset it belonged to, its option now). Every old file carries them, whatever its dataset.
LEGACY_KEYS = {"synthetic_n": ("synthetic", "n"), "synthetic_seed": ("synthetic", "seed"), "labels": ("fer2013", "labels")}

def _check(cls) -> None:
    if not dataclasses.is_dataclass(cls.Options):
        raise TypeError(f"{cls.__name__}.Options must be a dataclass")
    unknown = set(cls.cli_options) - {f.name for f in dataclasses.fields(cls.Options)}
    if unknown:
        raise TypeError(f"{cls.__name__}.cli_options names no option: {', '.join(sorted(unknown))}")


_REGISTRY = Registry("dataset", BUILTIN, _check, error=DataError)
register_dataset = _REGISTRY.register  # FaceDataset class -> itself, registered under its name
dataset_names = _REGISTRY.names  # every dataset's name, the built-in ones first; imports no dataset module
dataset_class = _REGISTRY.get  # name -> FaceDataset class (DataError for an unknown name)


def default_crop(name: str | None) -> float:
    """The centre crop (fraction of the shorter side) a dataset uses unless told otherwise (LFW: 0.5)."""
    return dataset_class(name).default_crop if name in dataset_names() else 1.0


def dataset_options(data: dict):
    """The ``Options`` of the dataset a [data] section (a config's, or model.json's "data") names, checked.

    Read from its ``options`` table, or from the flat keys of older files (``LEGACY_KEYS``), which are
    taken out of ``data`` (those of other datasets are dropped), so the rest reads as today's DataConfig.
    """
    from ..config import ConfigError, from_dict

    name = data.get("dataset", "synthetic")
    if not isinstance(name, str) or name not in dataset_names():
        raise ConfigError(f"data.dataset must be one of {', '.join(dataset_names())}, not {name!r}")
    cls = dataset_class(name)
    given = data.pop("options", None) or {}
    if not isinstance(given, dict):
        raise ConfigError(f"data.options must be a table, not {given!r}")
    given = dict(given)
    for key, (owner, option) in LEGACY_KEYS.items():
        if key in data:
            value = data.pop(key)
            if owner == name:
                given.setdefault(option, value)
    if given and not dataclasses.fields(cls.Options):
        raise ConfigError(f"dataset {name!r} takes no options, not data.options.{sorted(given)[0]}")
    return from_dict(cls.Options, given, "data.options")


def open_dataset(name: str, root: str | Path | None = None, **options):
    """Open a dataset by name. ``root`` is required except for a dataset that ``needs_root`` not (synthetic).

    Options are passed to the dataset's constructor (e.g. ``n``/``seed`` for synthetic, ``csv`` for folder).
    """
    cls = dataset_class(name)
    if not cls.needs_root:
        return cls(**options)
    if root is None:
        raise DataError(f"--root is required for dataset {name!r}")
    return cls(root, **options)


def open_configured(data, root: str | Path | None = None):
    """Open the dataset a DataConfig (or model.json's "data" dict) names, with its options; ``root``
    replaces its root when given."""
    data = data if isinstance(data, dict) else {**dataclasses.asdict(data), "options": data.options}
    options = data.get("options")
    options = options if dataclasses.is_dataclass(options) else dataset_options(dict(data))
    return open_dataset(data.get("dataset", "synthetic"), root if root is not None else data.get("root"), **dataclasses.asdict(options))


__all__ = [
    "BUILTIN",
    "DATASETS",
    "dataset_class",
    "dataset_names",
    "dataset_options",
    "default_crop",
    "open_configured",
    "open_dataset",
    "register_dataset",
    "SPLITS",
    "DataError",
    "FaceArrays",
    "FaceDataset",
    "FaceRecord",
    "Label",
    "LabelError",
    "LabelSchema",
    "UTKFACE_SCHEMA",
    "assign_split",
]
