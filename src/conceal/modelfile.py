"""The model-file format: one directory per model, shared by runs, ``conceal erase`` and ``models/``.

A model directory holds
- ``model.safetensors``: the method's weights (safetensors: loading never executes code);
- ``model.json``: format, method name, model config, label schema, image size, data config (and, for a
  run's checkpoint, epoch, step and metrics; for an erased model, its eraser's provenance);
- ``config.toml``: the resolved run config (repeat the run with ``--config`` on it).

This module knows no method and no trainer: ``load_method`` is handed the method class (the registry,
``conceal.methods.registry.load_model``, finds it by the name in model.json), so the methods, the training
loop (``conceal.train.checkpoint`` adds a run's optimizer and RNG state) and the audit all build on it.
Reading model.json imports no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import RunConfig, from_dict, save_toml, to_dict
from .data.schema import LabelSchema
from .errors import CheckpointError

FORMAT = "conceal-model/1"


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


def read_weights(directory: Path) -> dict:
    """model.safetensors as name -> tensor, or one line saying why it cannot be read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = model_dir(directory)
    try:
        return load_file(directory / "model.safetensors")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{directory / 'model.safetensors'} is not a readable safetensors file "
                              f"(truncated or corrupt? {' '.join(str(e).split())[:120]})") from None


def check_weights(directory: Path, expected: dict, found: dict) -> None:
    """The saved tensors must be exactly the network's (names, shapes) and finite: a file that loads
    "mostly" would release black or garbage images instead of failing."""
    import torch

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


def load_method(path: str | Path, cls: type, device="cpu"):
    """Rebuild the ``cls`` model saved at ``path`` from model.json and load its safetensors weights (no code
    from the files is executed); in eval mode on ``device``. A model of another method, a tampered model.json
    or weights that do not fit are refused in one line."""
    import torch  # noqa: F401

    directory = model_dir(path)
    info = read_model_info(directory)
    for key, (kind, what) in INFO_FIELDS.items():
        if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
            raise CheckpointError(f"{directory / 'model.json'}: {key} must be {what}, not {info.get(key)!r}")
    if info["method"] != cls.name:
        raise CheckpointError(f"{directory} holds a {info['method']} model, not a {cls.name}")
    try:
        cfg = from_dict(cls.Config, info["model_config"], "model")
        try:
            schema = LabelSchema.from_json(info["schema"])
        except (KeyError, TypeError, AttributeError) as e:  # an entry without name/kind, or not a table
            raise ValueError(f"schema: every label must be a table with a name and a kind ({type(e).__name__}: {e})") from None
        if info["image_size"] < 8:
            raise ValueError(f"image_size must be at least 8, not {info['image_size']}")
        method = cls(cfg, schema, info["image_size"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # ConfigError and LabelError are ValueErrors
        raise CheckpointError(f"{directory / 'model.json'}: {e.args[0] if e.args else type(e).__name__}") from None
    weights = read_weights(directory)
    check_weights(directory, method.state_dict(), weights)
    method.load_state_dict(weights)
    return method.to(device).eval()


def write_model_files(directory: Path, method, run_cfg: RunConfig, extra: dict | None = None) -> None:
    """model.safetensors + model.json + config.toml of ``method`` (a ``conceal.methods.Method``) into
    ``directory`` (which must exist); ``extra`` adds keys to model.json."""
    from safetensors.torch import save_file

    directory = Path(directory)
    save_file(method.saved_weights(), directory / "model.safetensors", metadata={"format": FORMAT, "method": method.name})
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


__all__ = ["FORMAT", "CheckpointError", "load_method", "model_dir", "read_model_info", "read_weights", "write_model_files"]
