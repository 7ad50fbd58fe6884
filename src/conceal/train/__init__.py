"""Training: one loop (``loop.fit``) and one checkpoint format (``checkpoint``) for every method."""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, RunConfig
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


def init_weights(method, init_from: str | Path) -> str:
    """Copy the weights of model ``init_from`` into ``method``, top-level module by module; -> a log line.

    A module (``encoder``, ``siamese``, ...) whose tensors all match in name and shape is copied whole; any
    other keeps its fresh initialisation and is named in the line -- never a half-copied module. Raises
    ConfigError when no module fits (a model of another method or architecture altogether).
    """
    source = model_dir(init_from)
    saved = load_file(source / "model.safetensors")
    own = method.state_dict()
    modules = sorted({k.split(".")[0] for k in own})
    fits = {m: all(k in saved and saved[k].shape == v.shape for k, v in own.items() if k.split(".")[0] == m) for m in modules}
    copied = {k: saved[k] for k in own if fits[k.split(".")[0]]}
    if not copied:
        raise ConfigError(f"--init-from {source}: none of its weights fit this {method.name} network")
    method.load_state_dict(copied, strict=False)
    fresh = [m for m in modules if not fits[m]]
    line = f"weights from {source}: {len(copied)} of {len(own)} tensors"
    return line + (f"; freshly initialised (no weights of that name and shape there): {', '.join(fresh)}" if fresh else "")


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, init_from: str | Path | None = None, log=print) -> dict:
    """Data -> method -> fit. The whole training recipe, top to bottom.

    ``init_from``: a model directory whose weights start the run (e.g. with ``--config MODEL/config.toml``);
    a resumed run ignores it. Weights whose name and shape match are copied; the others keep their fresh
    initialisation and are named in the log (e.g. a wider utility network over a trained autoencoder).
    """
    arrays, dataset = load_data(cfg, progress=cfg.train.progress)
    if getattr(dataset, "skipped", None):
        log(dataset.summary_line() if hasattr(dataset, "summary_line") else f"{len(dataset.skipped)} files skipped")
    train_set, val_set = arrays.subset("train"), arrays.subset("val")
    log(f"{cfg.method} on {cfg.data.dataset}: {len(train_set)} train / {len(val_set)} val images at {cfg.data.size}px")
    method = build_method(cfg.method, cfg.model, arrays.schema, cfg.data.size)
    if init_from is not None and not resume:
        log(init_weights(method, init_from))
    n_params = sum(p.numel() for p in method.parameters())
    log(f"{type(method).__name__}: {n_params / 1e6:.2f}M parameters")
    return fit(method, train_set, val_set, cfg, run_dir, resume=resume, log=log)


__all__ = ["fit", "init_weights", "load_data", "load_model", "save_checkpoint", "train"]
