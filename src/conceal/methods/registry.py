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

from ..errors import CheckpointError
from ..modelfile import load_method, read_model_info
from ..registry import Registry

BUILTIN = {
    "concealer": "conceal.methods.concealer:ConcealerNet",
    "masker": "conceal.methods.masker:MaskerNet",
    "anonymizer": "conceal.methods.anonymizer:AnonymizerNet",
}

# Class attributes every registered Method declares (checked by register_method; see base.Method).
FACETS = ("name", "Config", "API", "releases", "Graph", "shown_losses", "cli_options", "audit")


def _check(cls) -> None:
    """Every facet is checked here, so a method missing one fails when registered, not halfway through an
    export or an audit."""
    missing = [f for f in FACETS if not hasattr(cls, f)]  # Method itself only annotates them
    if missing:
        raise TypeError(f"method class {cls.__name__} does not declare {', '.join(missing)}")
    if not dataclasses.is_dataclass(cls.Config) or not callable(getattr(cls.Config, "tiny", None)):
        raise TypeError(f"{cls.__name__}.Config must be a dataclass with a tiny() classmethod")
    unknown = set(cls.cli_options) - {f.name for f in dataclasses.fields(cls.Config)}
    if unknown:
        raise TypeError(f"{cls.__name__}.cli_options names no config field: {', '.join(sorted(unknown))}")


_REGISTRY = Registry("method", BUILTIN, _check)
register_method = _REGISTRY.register  # Method class (its API class names it as ``method_class``) -> itself
unregister_method = _REGISTRY.unregister  # forget a registered method (a built-in one comes back when next asked for)
method_class = _REGISTRY.get  # name -> Method class (ValueError for an unknown name)


def method_names() -> list[str]:
    """Every method's name, sorted; imports no method module."""
    return sorted(_REGISTRY.names())


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
