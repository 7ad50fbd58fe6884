"""Training: one loop (``loop.fit``) and one checkpoint format (``checkpoint``) for every method."""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..data import FaceArrays, open_dataset
from ..methods import build_method
from safetensors.torch import load_file

from .checkpoint import load_model, model_dir, save_checkpoint
from .loop import fit


def load_data(cfg: RunConfig, progress: bool = True) -> tuple[FaceArrays, object]:
    """The run's dataset as arrays (decoded through the cache), plus the dataset object."""
    d = cfg.data
    options = {"n": d.synthetic_n, "seed": d.synthetic_seed} if d.dataset == "synthetic" else {}
    dataset = open_dataset(d.dataset, d.root, **options)
    return dataset.arrays(size=d.size, crop=d.crop, progress=progress), dataset


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, init_from: str | Path | None = None, log=print) -> dict:
    """Data -> method -> fit. The whole training recipe, top to bottom.

    ``init_from``: a model directory whose weights start the run (its config must build the same network,
    e.g. ``--config MODEL/config.toml``); a resumed run ignores it.
    """
    arrays, dataset = load_data(cfg, progress=cfg.train.progress)
    if getattr(dataset, "skipped", None):
        log(dataset.summary_line() if hasattr(dataset, "summary_line") else f"{len(dataset.skipped)} files skipped")
    train_set, val_set = arrays.subset("train"), arrays.subset("val")
    log(f"{cfg.method} on {cfg.data.dataset}: {len(train_set)} train / {len(val_set)} val images at {cfg.data.size}px")
    method = build_method(cfg.method, cfg.model, arrays.schema, cfg.data.size)
    if init_from is not None and not resume:
        method.load_state_dict(load_file(model_dir(init_from) / "model.safetensors"))
        log(f"weights from {model_dir(init_from)}")
    n_params = sum(p.numel() for p in method.parameters())
    log(f"{type(method).__name__}: {n_params / 1e6:.2f}M parameters")
    return fit(method, train_set, val_set, cfg, run_dir, resume=resume, log=log)


__all__ = ["fit", "load_data", "load_model", "save_checkpoint", "train"]
