"""Method registry: name -> Method class (with its Config dataclass). Add new methods here."""

from __future__ import annotations

from ..data.schema import LabelSchema
from .base import Method
from .concealer import ConcealerConfig, Concealer, ConcealVAE

METHODS: dict[str, type[Method]] = {
    ConcealVAE.name: ConcealVAE,
}


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def build_method(name: str, cfg, schema: LabelSchema, image_size: int) -> Method:
    """Factory used by training and by checkpoint loading (config dataclass + schema -> fresh model)."""
    return method_class(name)(cfg, schema, image_size)


__all__ = ["METHODS", "Method", "ConcealVAE", "ConcealerConfig", "Concealer", "build_method", "method_class"]
