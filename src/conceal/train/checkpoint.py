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

from ..config import RunConfig, from_dict, save_toml, to_dict
from ..data.schema import LabelSchema
from ..errors import CheckpointError
from ..methods import Method, build_method, method_class
from ..methods.blocks import has_folded_batch_norm

FORMAT = "conceal-model/1"


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


def write_model_files(directory: Path, method: Method, run_cfg: RunConfig, extra: dict | None = None) -> None:
    """model.safetensors + model.json + config.toml into ``directory`` (which must exist)."""
    if has_folded_batch_norm(method):
        raise CheckpointError(f"this {method.name} model has its batch norms folded for inference (load it without "
                              "fold_batch_norm to train or save it): its weights would not load as the method's")
    weights = {k: v.detach().cpu().contiguous() for k, v in method.state_dict().items()}
    save_file(weights, directory / "model.safetensors", metadata={"format": FORMAT, "method": method.name})
    info = {
        "format": FORMAT,
        "method": method.name,
        "model_config": to_dict(method.cfg),
        "schema": method.schema.to_json(),
        "image_size": method.image_size,
        "data": to_dict(run_cfg.data),
        **(extra or {}),
    }
    (directory / "model.json").write_text(json.dumps(info, indent=2))
    save_toml(run_cfg, directory / "config.toml")


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


def is_complete(directory: Path) -> bool:
    """A checkpoint whose every file was written: train_state.json, written (and flushed) last, parses."""
    try:
        json.loads((Path(directory) / "train_state.json").read_text())
    except (OSError, ValueError):
        return False
    return all((Path(directory) / name).is_file() for name in ("model.json", "model.safetensors", "train_state.safetensors"))


def model_dir(path: str | Path) -> Path:
    """Accept a model directory (models/NAME), a checkpoint directory, or a run directory."""
    path = Path(path)
    for candidate in (path, path / "checkpoint", path / ".checkpoint.tmp", path / ".checkpoint.old"):
        if candidate.name == ".checkpoint.tmp" and not is_complete(candidate):
            continue  # a checkpoint being written when the run died
        if (candidate / "model.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    raise CheckpointError(f"no model found at {path} (expected model.json + model.safetensors, or a run directory)")


# model.json key -> (type, what it must be): checked on every read, so a tampered file fails in one line
INFO_FIELDS = {"method": (str, "a method name"), "model_config": (dict, "a table of settings"),
               "schema": (list, "a list of labels"), "image_size": (int, "a number of pixels")}


def read_model_info(path: str | Path) -> dict:
    """model.json of the model at ``path``: readable JSON in the conceal format (``load_model`` checks the rest)."""
    directory = model_dir(path)
    where = directory / "model.json"
    try:
        info = json.loads(where.read_bytes().decode("utf-8"))
    except (ValueError, OSError) as e:  # JSON and UTF-8 errors are ValueErrors; a folder named model.json, OSError
        raise CheckpointError(f"{where} is not a readable JSON file ({type(e).__name__}: {e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        got = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise CheckpointError(f"{directory} is not a conceal model (format {got!r}, expected {FORMAT})")
    return info


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """model.safetensors as name -> tensor, or one line saying why it cannot be read."""
    try:
        return load_file(directory / "model.safetensors")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{directory / 'model.safetensors'} is not a readable safetensors file "
                              f"(truncated or corrupt? {' '.join(str(e).split())[:120]})") from None


def check_weights(directory: Path, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    """The saved tensors must be exactly the network's (names, shapes) and finite: a file that loads
    "mostly" would release black or garbage images instead of failing."""
    where = directory / "model.safetensors"
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        parts = ([f"missing {len(missing)} tensor(s) ({', '.join(missing[:3])})"] if missing else []) + (
            [f"{len(extra)} unexpected tensor(s) ({', '.join(extra[:3])})"] if extra else [])
        raise CheckpointError(f"{where} does not fit the network model.json describes: {'; '.join(parts)}")
    for name, tensor in expected.items():
        if found[name].shape != tensor.shape:
            raise CheckpointError(f"{where}: tensor {name} has shape {tuple(found[name].shape)}, the network "
                                  f"model.json describes needs {tuple(tensor.shape)}")
        if found[name].is_floating_point() and not torch.isfinite(found[name]).all():
            raise CheckpointError(f"{where}: tensor {name} holds NaN or infinite values")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Method:
    """Rebuild a method from model.json and load its safetensors weights (no code is executed)."""
    directory = model_dir(path)
    info = read_model_info(directory)
    for key, (kind, what) in INFO_FIELDS.items():
        if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
            raise CheckpointError(f"{directory / 'model.json'}: {key} must be {what}, not {info.get(key)!r}")
    try:
        cls = method_class(info["method"])
        cfg = from_dict(cls.Config, info["model_config"], "model")
        try:
            schema = LabelSchema.from_json(info["schema"])
        except (KeyError, TypeError, AttributeError) as e:  # an entry without name/kind, or not a table
            raise ValueError(f"schema: every label must be a table with a name and a kind ({type(e).__name__}: {e})") from None
        if info["image_size"] < 8:
            raise ValueError(f"image_size must be at least 8, not {info['image_size']}")
        method = build_method(info["method"], cfg, schema, info["image_size"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # ConfigError and LabelError are ValueErrors
        raise CheckpointError(f"{directory / 'model.json'}: {e.args[0] if e.args else type(e).__name__}") from None
    weights = read_weights(directory)
    check_weights(directory, method.state_dict(), weights)
    method.load_state_dict(weights)
    return method.to(device).eval()


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
