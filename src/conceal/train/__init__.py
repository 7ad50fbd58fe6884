"""Training: one loop (``loop.fit``) for every method, and a run's checkpoint (``checkpoint``: the model
files of ``conceal.modelfile`` plus optimizer, RNG and loop state for ``--resume``).

Nothing outside training imports this package: loading a model needs only ``conceal.methods``."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..config import ConfigError, RunConfig
from ..data import FaceArrays, open_configured
from ..methods import build_method, load_model
from ..modelfile import model_dir, read_weights

from . import distributed
from .checkpoint import save_checkpoint
from .loop import fit


def load_data(cfg: RunConfig, progress: bool = True) -> tuple[FaceArrays, object]:
    """The run's dataset as arrays (decoded through the cache), plus the dataset object."""
    dataset = open_configured(cfg.data)
    return dataset.arrays(size=cfg.data.size, crop=cfg.data.crop, progress=progress), dataset


def init_weights(method, init_from: str | Path) -> str:
    """Copy the weights of model ``init_from`` into ``method``, top-level module by module; -> a log line.

    A module (``encoder``, ``siamese``, ...) whose tensors all match in name and shape is copied whole; any
    other keeps its fresh initialisation and is named in the line -- never a half-copied module. Raises
    ConfigError when no module fits (a model of another method or architecture altogether).
    """
    source = model_dir(init_from)
    saved = read_weights(source)
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


# What a run writes into its directory (anything else there is the user's and is left alone).
RUN_FILES = ("checkpoint", ".checkpoint.tmp", ".checkpoint.old", "config.toml", "loss_curves.png")


def check_run_dir(run_dir: str | Path, resume: bool = False, force: bool = False) -> list[Path]:
    """Refuse to train over an existing run unless asked: ``resume`` continues it, ``force`` replaces it.
    Returns the old run's files that ``force`` will delete (``RUN_FILES`` only; nothing else there is touched).
    A resume needs a checkpoint to continue from."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run directory")
    if resume:
        model_dir(run_dir)  # a one-line error when there is nothing to resume
        return []
    found = [run_dir / name for name in RUN_FILES if (run_dir / name).exists()]
    if found and not force:
        raise ConfigError(f"{run_dir} already holds a run ({', '.join(p.name for p in found)}): continue it with "
                          "--resume, or delete it and start over with --force")
    return found


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, init_from: str | Path | None = None, log=print,
          force: bool = False) -> dict:
    """Data -> method -> fit. The whole training recipe, top to bottom.

    ``init_from``: a model directory whose weights start the run (e.g. with ``--config MODEL/config.toml``);
    a resumed run ignores it. Weights whose name and shape match are copied; the others keep their fresh
    initialisation and are named in the log (e.g. a wider utility network over a trained autoencoder).
    An existing run in ``run_dir`` is refused unless ``resume`` (continue it) or ``force`` (replace it).
    """
    world = distributed.from_environment()
    if not world.main:
        log = lambda *_: None  # noqa: E731  (under torchrun, rank 0 speaks for all)
    # Under torchrun only rank 0 judges the folder: the others could see the config.toml rank 0 just wrote.
    replaced = check_run_dir(run_dir, resume=resume, force=force) if world.main else []
    arrays, dataset = load_data(cfg, progress=cfg.train.progress)
    if getattr(dataset, "skipped", None):
        log(dataset.summary_line() if hasattr(dataset, "summary_line") else f"{len(dataset.skipped)} files skipped")
    train_set, val_set = arrays.subset("train"), arrays.subset("val")
    log(f"{cfg.method} on {cfg.data.dataset}: {len(train_set)} train / {len(val_set)} val images at {cfg.data.size}px")
    if cfg.train.batch_size > len(train_set):
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is more than the {len(train_set)} training images")
    # Seeded before the model is built: its initial weights are part of what the seed repeats.
    torch.manual_seed(cfg.train.seed)
    try:
        method = build_method(cfg.method, cfg.model, arrays.schema, cfg.data.size)
    except (KeyError, ValueError) as e:  # a label the dataset lacks, an image size the network cannot take
        raise ConfigError(f"{cfg.method}: {e.args[0] if e.args else e}") from None
    if init_from is not None and not resume:
        log(init_weights(method, init_from))
    n_params = sum(p.numel() for p in method.parameters())
    log(f"{type(method).__name__}: {n_params / 1e6:.2f}M parameters")
    for path in replaced:  # --force: only now that the new run is ready to start
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    state = fit(method, train_set, val_set, cfg, run_dir, resume=resume, log=log)
    distributed.teardown(world)  # under torchrun: leave the process group cleanly
    return state


__all__ = ["RUN_FILES", "check_run_dir", "fit", "init_weights", "load_data", "load_model", "save_checkpoint", "train"]
