"""Datasets: one interface (``FaceDataset`` -> ``FaceArrays``) for UTKFace, LFW, FER2013, folder+CSV and synthetic faces."""

from __future__ import annotations

from pathlib import Path

from .base import SPLITS, DataError, FaceArrays, FaceDataset, FaceRecord, assign_split
from .schema import UTKFACE_SCHEMA, Label, LabelError, LabelSchema

DATASETS = ("utkface", "lfw", "folder", "fer2013", "synthetic")


def default_crop(name: str | None) -> float:
    """The centre crop (fraction of the shorter side) a dataset uses unless told otherwise (LFW: 0.5)."""
    if name == "lfw":
        from .lfw import LFW

        return LFW.default_crop
    return 1.0


def open_dataset(name: str, root: str | Path | None = None, **options):
    """Open a dataset by name. ``root`` is required except for ``synthetic``.

    Options are passed to the dataset's constructor (e.g. ``n``/``seed`` for synthetic, ``csv`` for folder).
    """
    if name == "synthetic":
        from .synthetic import SyntheticFaces

        return SyntheticFaces(**options)
    if root is None:
        raise DataError(f"--root is required for dataset {name!r}")
    if name == "utkface":
        from .utkface import UTKFace

        return UTKFace(root, **options)
    if name == "lfw":
        from .lfw import LFW

        return LFW(root, **options)
    if name == "folder":
        from .folder import FolderCSV

        return FolderCSV(root, **options)
    if name == "fer2013":
        from .fer2013 import FER2013

        return FER2013(root, **options)
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


__all__ = [
    "DATASETS",
    "default_crop",
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
    "open_dataset",
]
