"""The one checkpoint format, used by every method, by runs and by the shipped models in ``models/``.

A checkpoint is a directory:
- ``model.safetensors``: the method's weights (safetensors: loading never executes code);
- ``model.json``: method name, model config, label schema, image size, data config, epoch, metrics;
- ``config.toml``: the resolved run config (repeat the run with ``--config`` on it);
- ``train_state.safetensors`` + ``train_state.json`` (runs only): optimizer states, RNG state, position
  in the epoch and the history, so ``--resume`` continues exactly where the run stopped.

A run directory keeps its latest checkpoint in ``RUN/checkpoint/``. It is written to a temporary
directory and swapped in with renames, so an interrupted write never leaves a half checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import RunConfig
from ..errors import CheckpointError
from ..methods import Method, load_model  # noqa: F401  (load_model: the old import path)
from ..modelfile import FORMAT, is_complete, model_dir, read_model_info, write_model_files  # noqa: F401  (the old import paths)



def _flatten_optimizer(name: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    sd = opt.state_dict()
    plain_state: dict[str, dict[str, Any]] = {}
    for idx, entries in sd["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{name}.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain_state.setdefault(str(idx), {})[key] = value
    meta[name] = {"param_groups": sd["param_groups"], "plain_state": plain_state}


def _unflatten_optimizer(name: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, field = key[len(prefix) :].split(".", 1)
            state.setdefault(int(idx), {})[field] = value
    for idx, entries in meta[name]["plain_state"].items():
        state.setdefault(int(idx), {}).update(entries)
    opt.load_state_dict({"state": state, "param_groups": meta[name]["param_groups"]})


def save_checkpoint(run_dir: Path, method: Method, run_cfg: RunConfig, optimizers: dict, state: dict) -> Path:
    """Atomically replace RUN/checkpoint with the current model, optimizers, RNG and loop position."""
    run_dir = Path(run_dir)
    tmp, final, old = run_dir / ".checkpoint.tmp", run_dir / "checkpoint", run_dir / ".checkpoint.old"
    if not final.exists() and is_complete(tmp):
        tmp.rename(final)  # a crash between the two renames below left the newest checkpoint here: keep it
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    last = state["history"][-1]["val"] if state["history"] else {}
    write_model_files(tmp, method, run_cfg, {"epoch": state["epoch"], "step": state["step"], "metrics": last})

    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    meta: dict[str, Any] = {}
    for name, opt in optimizers.items():
        _flatten_optimizer(name, opt, tensors, meta)
    save_file(tensors, tmp / "train_state.safetensors")
    for written in tmp.iterdir():  # on disk before train_state.json says the checkpoint is complete
        _fsync(written)
    (tmp / "train_state.json").write_text(json.dumps({"loop": state, "optimizers": meta}, indent=1))
    _fsync(tmp / "train_state.json")
    _fsync(tmp)

    # At every moment one complete checkpoint exists (checkpoint/, else .checkpoint.tmp, else
    # .checkpoint.old; model_dir looks in that order), however many crashes in a row interrupt this.
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    _fsync(run_dir)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk, so a rename never lands before the data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_train_state(run_dir: Path, method: Method, optimizers: dict) -> dict:
    """Restore weights, optimizer states and RNG from RUN/checkpoint; return the loop position."""
    directory = model_dir(run_dir)
    if not (directory / "train_state.json").is_file():
        raise CheckpointError(f"{directory} has no training state to resume from")
    method.load_state_dict(load_file(directory / "model.safetensors"))
    tensors = load_file(directory / "train_state.safetensors")
    meta = json.loads((directory / "train_state.json").read_text())
    for name, opt in optimizers.items():
        _unflatten_optimizer(name, opt, tensors, meta["optimizers"])
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if states:
            torch.cuda.set_rng_state_all(states)
    return meta["loop"]
