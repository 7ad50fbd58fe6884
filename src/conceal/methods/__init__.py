"""Method registry: name -> Method class (with its Config dataclass). Add new methods here."""

from __future__ import annotations

from ..data.schema import LabelSchema
from .anonymizer import AIA, Anonymizer
from .base import Method, ModelAPI
from .concealer import ConcealerConfig, Concealer, ConcealVAE
from .masker import MaskGenerator, Masker

METHODS: dict[str, type[Method]] = {
    ConcealVAE.name: ConcealVAE,
    MaskGenerator.name: MaskGenerator,
    AIA.name: AIA,
}


# name -> user-facing API class (numpy in, numpy out) used by `conceal apply/encode/audit/demo`
APIS: dict[str, type[ModelAPI]] = {
    ConcealVAE.name: Concealer,
    MaskGenerator.name: Masker,
    AIA.name: Anonymizer,
}


def load_api(path, device: str = "cpu", fold_batch_norm: bool = False, backend: str = "torch") -> ModelAPI:
    """Open any trained model (models/NAME or a run directory) through its method's API class.

    ``fold_batch_norm=True``: batch norms (and nearest upsampling) folded into their convs, for inference only;
    ``backend``: torch, onnxruntime or auto (the method's fastest where installed) for ``apply`` (see ``ModelAPI``).
    """
    from ..train.checkpoint import read_model_info

    name = read_model_info(path)["method"]
    return APIS[name].load(path, device=device, fold_batch_norm=fold_batch_norm, backend=backend)


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def build_method(name: str, cfg, schema: LabelSchema, image_size: int) -> Method:
    """Factory used by training and by checkpoint loading (config dataclass + schema -> fresh model)."""
    return method_class(name)(cfg, schema, image_size)


__all__ = ["APIS", "METHODS", "Method", "ModelAPI", "load_api", "ConcealVAE", "ConcealerConfig", "Concealer", "build_method", "method_class"]
