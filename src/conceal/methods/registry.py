"""The method registry: name -> Method class, each class its method's whole spec (see ``base.Method``).

Export, the training loop, the CLI and the audit read a method's facets (Config and ``tiny()``, API,
export Graph, shown loss terms, CLI options, audit sections) from here; none of them keeps a table of
method names or branches on one.

``BUILTIN`` says where each built-in method lives, as "module:Class"; a module is imported the first
time its method is asked for, so listing the names (``conceal --help``) imports no torch. Another
method (a plugin, a test's toy) is registered with ``register_method(MyNet)`` and needs nothing else.
Adding a built-in one is its own module plus its line here.
"""

from __future__ import annotations

import dataclasses
import importlib

from ..errors import CheckpointError
from ..modelfile import load_method, read_model_info

BUILTIN = {
    "concealer": "conceal.methods.concealer:ConcealerNet",
    "masker": "conceal.methods.masker:MaskerNet",
    "anonymizer": "conceal.methods.anonymizer:AnonymizerNet",
}

# Class attributes every registered Method declares (checked by register_method; see base.Method).
FACETS = ("name", "Config", "API", "releases", "Graph", "shown_losses", "cli_options", "audit")

_registered: dict = {}  # name -> Method class


def register_method(cls):
    """Register Method class ``cls`` (its API class names it as ``method_class``); returns ``cls``.

    Every facet is checked here, so a method missing one fails when registered, not halfway through an
    export or an audit.
    """
    missing = [f for f in FACETS if not hasattr(cls, f)]  # Method itself only annotates them
    if missing:
        raise TypeError(f"method class {cls.__name__} does not declare {', '.join(missing)}")
    if not dataclasses.is_dataclass(cls.Config) or not callable(getattr(cls.Config, "tiny", None)):
        raise TypeError(f"{cls.__name__}.Config must be a dataclass with a tiny() classmethod")
    unknown = set(cls.cli_options) - {f.name for f in dataclasses.fields(cls.Config)}
    if unknown:
        raise TypeError(f"{cls.__name__}.cli_options names no config field: {', '.join(sorted(unknown))}")
    if _registered.get(cls.name, cls) is not cls:
        raise ValueError(f"a method named {cls.name!r} is registered already ({_registered[cls.name].__name__})")
    _registered[cls.name] = cls
    return cls


def unregister_method(name: str) -> None:
    """Forget a method registered with ``register_method`` (a built-in one comes back when next asked for)."""
    _registered.pop(name, None)


def method_names() -> list[str]:
    """Every method's name, sorted; imports no method module."""
    return sorted(set(BUILTIN) | set(_registered))


def method_class(name: str):
    if name not in _registered and name in BUILTIN:
        module, attribute = BUILTIN[name].split(":")
        register_method(getattr(importlib.import_module(module), attribute))
    try:
        return _registered[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(method_names())}") from None


def methods() -> dict:
    """name -> Method class of every method (importing each built-in one's module), in name order."""
    return {name: method_class(name) for name in method_names()}


def build_method(name: str, cfg, schema, image_size: int):
    """A fresh method from (config dataclass, label schema, image size)."""
    return method_class(name)(cfg, schema, image_size)


def saved_method_class(path):
    """The Method class of the model saved at ``path``, by the name in its model.json."""
    try:
        return method_class(read_model_info(path).get("method"))
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def load_model(path, device="cpu"):
    """The model saved at ``path`` (models/NAME, a checkpoint or a run directory), whatever its method."""
    return load_method(path, saved_method_class(path), device=device)


def load_api(path, device: str = "cpu", fold_batch_norm: bool = False, backend: str = "torch"):
    """Open any trained model through its method's API class (``Concealer``, ``Masker``, ``Anonymizer``, ...).

    ``fold_batch_norm=True``: batch norms (and nearest upsampling) folded into their convs, for inference only;
    ``backend``: torch, onnxruntime or auto (the method's fastest where installed) for ``apply`` (see ``ModelAPI``).
    """
    return saved_method_class(path).API.load(path, device=device, fold_batch_norm=fold_batch_norm, backend=backend)
