"""A name -> class registry whose built-in classes are imported only when first asked for.

The methods (``conceal.methods.registry``) and the datasets (``conceal.data``) are each one of these: a
class is its own spec, ``builtin`` says where each built-in one lives ("module:Class"), so listing the
names imports nothing, and a plugin adds its class with ``register``.
"""

from __future__ import annotations

import importlib
from typing import Callable


class Registry:
    def __init__(self, kind: str, builtin: dict[str, str], check: Callable[[type], None], error: type[Exception] = ValueError):
        self.kind = kind  # "method", "dataset": what the messages call an entry
        self.builtin = builtin
        self.check = check  # raises TypeError for a class that lacks part of its spec
        self.error = error  # raised for an unknown name
        self.registered: dict[str, type] = {}

    def register(self, cls: type) -> type:
        self.check(cls)
        if self.registered.get(cls.name, cls) is not cls:
            raise ValueError(f"a {self.kind} named {cls.name!r} is registered already ({self.registered[cls.name].__name__})")
        self.registered[cls.name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Forget a registered class (a built-in one comes back when next asked for)."""
        self.registered.pop(name, None)

    def names(self) -> list[str]:
        """Every name, the built-in ones first; imports nothing."""
        return [*self.builtin, *(name for name in self.registered if name not in self.builtin)]

    def get(self, name: str) -> type:
        try:
            if name not in self.registered and name in self.builtin:
                module, attribute = self.builtin[name].split(":")
                self.register(getattr(importlib.import_module(module), attribute))
            return self.registered[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name from a config file
            raise self.error(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}") from None
