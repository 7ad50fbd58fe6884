"""One config mechanism for every run: nested dataclasses <-> TOML <-> ``section.key=value`` overrides.

A run's config is plain data: ``RunConfig`` holds the data, training and method sections. It can be
read from a TOML file, overridden from the CLI (``--set model.latent=100``), and is saved resolved
(``config.toml``) beside every checkpoint, so any run can be repeated from its directory.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w


class ConfigError(ValueError):
    """A config value or key that does not fit; one-line message for the user."""


def setting(default: Any, *, at_least: float | None = None, above: float | None = None, at_most: float | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
    """A config field with the values it accepts, checked whenever a config is read (``from_dict``).

    Bounds apply to a number, or to every item of a tuple of numbers; ``None`` (where the type allows it)
    always passes. Every float must also be finite, bounded or not: TOML reads ``inf`` and ``nan``.
    """
    limits = {"at_least": at_least, "above": above, "at_most": at_most, "choices": choices}
    return field(default=default, metadata={k: v for k, v in limits.items() if v is not None})


def check_setting(value: Any, limits: dict, where: str) -> None:
    """Raise ConfigError (one line) when ``value`` breaks the ``limits`` of a ``setting``."""
    if value is None:
        return
    if isinstance(value, (tuple, list)):
        for item in value:
            check_setting(item, limits, where)
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, not {value}")
    if "choices" in limits and value not in limits["choices"]:
        raise ConfigError(f"{where} must be one of {', '.join(limits['choices'])}, not {value!r}")
    lo, above, hi = limits.get("at_least"), limits.get("above"), limits.get("at_most")
    if (lo is not None and value < lo) or (above is not None and value <= above) or (hi is not None and value > hi):
        low = f"at least {lo:g}" if lo is not None else f"above {above:g}" if above is not None else ""
        high = f"at most {hi:g}" if hi is not None else ""
        raise ConfigError(f"{where} must be {' and '.join(filter(None, (low, high)))}, not {value!r}")


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # a name in the dataset registry (conceal.data), checked with its options
    root: str | None = None  # dataset folder; not needed for synthetic
    size: int = setting(64, at_least=8)  # images are centre-cropped and resized to size x size
    crop: float | None = setting(None, above=0, at_most=1)  # fraction of the shorter side kept; None = the dataset's default
    # The dataset's own options ([data.options]: its Options dataclass, e.g. synthetic's n and seed), read by
    # the ``dataset_options`` that build_run_config is given (conceal.data.dataset_options).
    options: Any = None


@dataclass
class TrainConfig:
    epochs: int = setting(20, at_least=1)
    batch_size: int = setting(64, at_least=1)  # and at most the training images (checked once they are read)
    lr: float = setting(1e-3, above=0)
    seed: int = setting(0, at_least=0)  # numpy's generators take no negative seeds
    device: str = setting("auto", choices=("auto", "cpu", "cuda"))
    # Stop (with a checkpoint) after this much training time in this invocation. Not kept for --resume: the
    # run's saved config.toml never carries it, so each invocation gets only the limit it is given.
    max_minutes: float | None = setting(None, above=0)
    threads: int | None = setting(None, at_least=1)  # torch intra-op threads; None = torch's default
    progress: bool = True
    # 0: plain shuffled batches. K >= 2: batches built from groups of K faces of one person (faces of an
    # unknown identity stay single), so a verification loss sees real same-person pairs in every batch
    # instead of the few that random batches of a dataset with ~1,000 people happen to hold.
    faces_per_identity: int = setting(0, at_least=0)

    def __post_init__(self) -> None:
        if self.faces_per_identity == 1 or self.faces_per_identity < 0:
            raise ConfigError(f"train.faces_per_identity must be 0 (plain shuffling) or at least 2, not {self.faces_per_identity}")


@dataclass
class RunConfig:
    method: str = "concealer"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: Any = None  # the method's own config dataclass (see conceal.methods.METHODS)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a TOML value against a dataclass field type, with a one-line error."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, not {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, where) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, not {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, not {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from a dict, rejecting unknown keys and wrongly typed values."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"unknown config key {(where + '.' if where else '') + key!r}; known: {', '.join(sorted(names))}")  # repr: a key may hold a newline
    kwargs = {k: _coerce(v, hints[k], f"{where + '.' if where else ''}{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):
        check_setting(getattr(obj, f.name), f.metadata, f"{where + '.' if where else ''}{f.name}")
    return obj


def to_dict(obj: Any) -> dict:
    """Dataclass -> plain dict for TOML/JSON (None values are dropped: TOML has no null)."""

    def clean(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: clean(getattr(v, f.name)) for f in dataclasses.fields(v) if getattr(v, f.name) is not None}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return clean(obj)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'model.latent=100' -> (['model', 'latent'], 100). Values are read as TOML, else as a string."""
    if "=" not in text:
        raise ConfigError(f"override must look like section.key=value, not {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def build_run_config(
    method: str,
    toml_path: str | Path | None = None,
    overrides: list[str] = (),
    model_config_cls: type | None = None,
    dataset_options: Any = None,
) -> RunConfig:
    """File (optional) + overrides -> a checked RunConfig with the method's model section and, given
    ``dataset_options`` (the [data] dict -> its dataset's options: ``conceal.data.dataset_options``, which
    also reads the flat keys of older files), the dataset's options."""
    raw: dict = {}
    if toml_path is not None:
        try:
            raw = tomllib.loads(Path(toml_path).read_bytes().decode("utf-8"))  # TOML is UTF-8 by definition
        except FileNotFoundError:
            raise ConfigError(f"config file {toml_path} not found") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {toml_path} is a folder, not a TOML file") from None
        except OSError as e:
            raise ConfigError(f"config file {toml_path}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {toml_path} is not UTF-8 text (byte {e.start})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {toml_path}: {e}") from None
    raw.setdefault("method", method)
    if raw["method"] != method:
        raise ConfigError(f"config file is for method {raw['method']!r}, not {method!r}")
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k} is not a section")
        node[keys[-1]] = value
    model_raw = raw.pop("model", {})
    data = raw.setdefault("data", {})
    options = dataset_options(data) if dataset_options and isinstance(data, dict) else None  # takes its keys out of data
    cfg = from_dict(RunConfig, raw)
    if dataset_options:
        cfg.data.options = options
    if model_config_cls is not None:
        cfg.model = from_dict(model_config_cls, model_raw, "model")
    return cfg


def save_toml(cfg: Any, path: str | Path) -> None:
    """``cfg`` as TOML. A RunConfig is saved without ``train.max_minutes``: a time limit belongs to the one
    invocation it was given to, so a plain ``--resume`` of the saved run is never cut short by it."""
    if isinstance(cfg, RunConfig):
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_minutes=None))
    Path(path).write_text(tomli_w.dumps(to_dict(cfg)), encoding="utf-8")
