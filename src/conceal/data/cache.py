"""Preprocessing cache: decode, crop and resize a dataset's images once, then memory-map them.

One cache entry per (dataset, root, size, crop, source files): ``<stem>-<files>.npy`` holds the
(N, size, size, 3) uint8 images and ``<stem>-<files>.json`` the row paths and the images that failed
to decode. The files part is a hash of every source file's relative path, size and mtime, so adding,
changing or removing an image gives a new entry (and the old one is deleted). Both files are written
to temporary names and renamed into place, the metadata last: an interrupted build leaves no entry.

Labels, identities and splits are not cached: they come from the dataset's records on every call, so
editing a CSV or changing the split fractions never serves stale labels nor forces a re-decode.

The cache lives in ``$CONCEAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/conceal``, else ``~/.cache/conceal``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .arrays import DataError, FaceArrays, FaceRecord
from .images import ImageReadError, center_crop_resize, read_image

CACHE_VERSION = 1  # bump when the preprocessing changes, so old entries are not reused


def cache_dir() -> Path:
    if os.environ.get("CONCEAL_CACHE_DIR"):
        return Path(os.environ["CONCEAL_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "conceal"
    return Path.home() / ".cache" / "conceal"


def _relative_paths(records: list[FaceRecord], root: Path) -> list[str]:
    """Record paths relative to ``root``, with "/" separators (the cache is independent of the cwd)."""
    # String slicing: os.path.relpath costs ~30 us a call, too slow for a fast cache hit on 20k images.
    prefix = os.path.join(str(root), "")
    relative = []
    for record in records:
        path = str(record.path)
        relative.append(path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, root))
    return [p.replace(os.sep, "/") for p in relative]


def _fingerprint(relative_paths: list[str], records: list[FaceRecord], dataset: FaceDataset) -> str:
    """Hash of (relative path, size, mtime of its source file) of every record, in sorted path order."""
    digest = hashlib.sha256()
    stats: dict[Path, str] = {}  # source file -> "size\0mtime" (FER2013's rows share one file)
    for relative, record in sorted(zip(relative_paths, records), key=lambda pair: pair[0]):
        source = dataset.source_file(record)
        if source not in stats:
            try:
                stat = os.stat(source)
                stats[source] = f"{stat.st_size}\0{stat.st_mtime_ns}"
            except OSError:  # gone since the scan: decoding will report it
                stats[source] = "missing"
        digest.update(f"{relative}\0{stats[source]}\n".encode())
    return digest.hexdigest()


def _decode(dataset: FaceDataset, record: FaceRecord, size: int, crop: float) -> np.ndarray | str:
    """(size, size, 3) uint8 image, or the reason it cannot be read."""
    try:
        if hasattr(dataset, "decode"):  # records that are not image files (FER2013's CSV rows)
            return dataset.decode(record, size, crop)
        return center_crop_resize(read_image(record.path), size, crop)
    except ImageReadError as error:
        return error.reason


def _workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, 8)


def _write_json(path: Path, data: dict) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temp.write_text(json.dumps(data))
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _build(
    dataset: FaceDataset, records: list[FaceRecord], relative_paths: list[str], size: int, crop: float, npy: Path, progress: bool, desc: str
) -> dict[str, str]:
    """Decode every record into ``npy``; returns relative path -> reason for the images that failed."""
    npy.parent.mkdir(parents=True, exist_ok=True)
    temps = [npy.with_name(f".{npy.name}.{uuid.uuid4().hex}.{part}.tmp") for part in ("all", "kept")]
    failed: dict[str, str] = {}
    pool = ThreadPoolExecutor(_workers())  # Pillow releases the GIL while decoding and resizing
    try:
        images = np.lib.format.open_memmap(temps[0], mode="w+", dtype=np.uint8, shape=(len(records), size, size, 3))
        decoded = pool.map(_decode, repeat(dataset), records, repeat(size), repeat(crop))
        n_kept = 0
        for relative, result in tqdm(zip(relative_paths, decoded), total=len(records), desc=desc, disable=not progress):
            if isinstance(result, str):
                failed[relative] = result
            else:
                images[n_kept] = result  # rows stay in record order, failures squeezed out
                n_kept += 1
        if n_kept == 0:
            raise DataError(f"none of the {len(records)} images could be decoded (first: {next(iter(failed.values()))})")
        images.flush()
        if failed:  # the header fixes the row count: copy the kept rows into a right-sized file
            kept = np.lib.format.open_memmap(temps[1], mode="w+", dtype=np.uint8, shape=(n_kept, size, size, 3))
            kept[:] = images[:n_kept]
            kept.flush()
            del kept
        del images  # close the map before renaming (required on Windows)
        os.replace(temps[1] if failed else temps[0], npy)
    finally:
        pool.shutdown(cancel_futures=True)  # on Ctrl-C, don't wait for thousands of queued decodes
        for temp in temps:
            temp.unlink(missing_ok=True)
    return failed


def cached_arrays(dataset, size: int, crop: float, progress: bool = True) -> FaceArrays:
    """The dataset's images as a read-only (N, size, size, 3) uint8 memmap, built on first use.

    Images that fail to decode leave ``dataset.records`` for ``dataset.undecodable`` and are reported in
    ``dataset.skipped`` (on a cache hit too), so afterwards row i of the arrays is ``dataset.records[i]``.
    """
    size, crop = int(size), float(crop)  # so crop=1 and crop=1.0 share one entry
    if not 0.0 < crop <= 1.0:
        raise ValueError(f"crop must be in (0, 1], not {crop}")
    # Everything scanned, including images an earlier call found undecodable, so the fingerprint is
    # the same whatever was called before.
    scanned = dataset.records + dataset.undecodable
    if not scanned:
        raise DataError(f"{dataset.name}: no images to decode")
    relative_paths = _relative_paths(scanned, dataset.root)
    settings = [CACHE_VERSION, dataset.name, str(dataset.root.resolve()), size, crop]
    if getattr(dataset, "cache_variant", None):  # record sets that share a root (FER2013's two label schemes)
        settings.append(dataset.cache_variant)
    settings = json.dumps(settings)
    stem = f"{dataset.name}-{size}px-{hashlib.sha256(settings.encode()).hexdigest()[:16]}"
    fingerprint = _fingerprint(relative_paths, scanned, dataset)
    npy = cache_dir() / f"{stem}-{fingerprint[:16]}.npy"
    meta_path = npy.with_suffix(".json")

    meta = _load_meta(meta_path, fingerprint)
    images = _load_images(npy, meta, size)
    failed = meta["skipped"] if images is not None else {}
    kept_paths = [p for p in relative_paths if p not in failed]
    if images is None or kept_paths != meta["paths"]:
        images = None  # release any map of a mismatched entry before its file is replaced
        failed = _build(dataset, scanned, relative_paths, size, crop, npy, progress, desc=f"caching {dataset.name} {size}px")
        kept_paths = [p for p in relative_paths if p not in failed]
        _write_json(meta_path, {"fingerprint": fingerprint, "paths": kept_paths, "skipped": failed})
        _remove_stale(npy, meta_path, stem)
        images = np.load(npy, mmap_mode="r")

    kept = [r for r, p in zip(scanned, relative_paths) if p not in failed]
    dataset.records = kept
    dataset.undecodable = [r for r, p in zip(scanned, relative_paths) if p in failed]
    dataset.skipped.update({str(r.path): failed[p] for r, p in zip(scanned, relative_paths) if p in failed})
    return FaceArrays(
        images=images,
        labels={
            label.name: np.array([r.labels.get(label.name, math.nan) for r in kept], dtype=np.float32)
            for label in dataset.schema
        },
        schema=dataset.schema,
        identity=np.array([r.identity for r in kept], dtype=np.int64),
        split=np.array([r.split for r in kept], dtype=str),
        paths=[str(r.path) for r in kept],
    )


def _load_meta(meta_path: Path, fingerprint: str) -> dict | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("fingerprint") == fingerprint else None


def _load_images(npy: Path, meta: dict | None, size: int) -> np.ndarray | None:
    """The cached memmap if it exists and has the shape the metadata promises, else None."""
    if meta is None:
        return None
    try:
        images = np.load(npy, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return images if images.shape == (len(meta["paths"]), size, size, 3) else None


def _remove_stale(npy: Path, meta_path: Path, stem: str) -> None:
    """Delete entries of the same settings built from other versions of the files."""
    for old in npy.parent.glob(f"{stem}-*"):
        if old not in (npy, meta_path):
            try:
                old.unlink(missing_ok=True)
            except OSError:  # still mapped by another process on Windows: removed next time
                pass
