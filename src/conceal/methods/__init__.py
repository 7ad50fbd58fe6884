"""The methods and their registry (``registry``: name -> Method class, each class its method's spec).

Each method is a family of three classes in its own module: the network (a ``Method``), its user API
(a ``ModelAPI``) and its export graph (a ``ReleaseGraph``):

- concealer: ``ConcealerNet`` / ``Concealer`` / ``ConcealerGraph`` (the paper's BAFO VAE, Hanukoglu et al. 2020);
- masker: ``MaskerNet`` / ``Masker`` / ``MaskerGraph`` (the paper's mask generator, Gupta et al. 2021);
- anonymizer: ``AnonymizerNet`` / ``Anonymizer`` / ``AnonymizerGraph`` (the paper's AIA, Mosallanezhad et al. 2020).

The networks were named ``ConcealVAE``, ``MaskGenerator`` and ``AIA`` before; no model file stores a
class name (model.json names the method), so every saved model loads under the new names.

Importing this package imports no torch; the classes below load their module when first named.
"""

from __future__ import annotations

import importlib

from .registry import (
    build_method, load_api, load_model, method_class, method_names, methods, register_method, unregister_method,
)

# Class -> the module it is imported from when first named (``from conceal.methods import Concealer``).
_CLASSES = {
    "Method": "base", "ModelAPI": "base", "ReleaseGraph": "base",
    "ConcealerNet": "concealer", "Concealer": "concealer", "ConcealerConfig": "concealer",
    "MaskerNet": "masker", "Masker": "masker",
    "AnonymizerNet": "anonymizer", "Anonymizer": "anonymizer",
}


def __getattr__(name: str):
    if name == "METHODS":  # name -> Method class of every method (imports each built-in one)
        return methods()
    if name in _CLASSES:
        return getattr(importlib.import_module(f".{_CLASSES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_CLASSES, "METHODS", "build_method", "load_api", "load_model", "method_class", "method_names", "methods",
           "register_method", "unregister_method"]
