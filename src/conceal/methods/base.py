"""What every method offers the training loop, the checkpoint code, the CLI and the audit.

A method is an ``nn.Module`` built from (config dataclass, label schema, image size). It owns its
optimizers and its update rule (adversarial methods alternate several), so the one training loop in
``conceal.train`` stays free of per-method branches.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..data.schema import LabelSchema

Batch = dict  # {"image": (B, 3, H, W) float in [0, 1], "labels": {name: (B,) float, NaN = unknown}, "identity": (B,) long}


class Method(nn.Module):
    name: ClassVar[str]
    Config: ClassVar[type]
    # What the method hands to the world, which is exactly what the audit attacks:
    # "codes" (vectors from encode()) and/or "images" (from apply()).
    releases: ClassVar[tuple[str, ...]] = ()
    # The inference backend `conceal apply` runs the release on when it is installed ("torch" or "onnxruntime"):
    # whichever reached the higher share of the matmul peak in benchmarks/PROFILING.md's side-by-side runs.
    fastest_backend: ClassVar[str] = "torch"

    def __init__(self, cfg, schema: LabelSchema, image_size: int):
        super().__init__()
        self.cfg = cfg
        self.schema = schema
        self.image_size = image_size

    def configure_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def training_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, float]:
        """One update (zero_grad/backward/step inside); returns the loss terms to log."""
        raise NotImplementedError

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    # --- released codes (methods with "codes" in ``releases``) ---------------------------------------
    # Such a method defines ``raw_codes``, ``code_dim`` and ``concealed`` (the labels its codes must not
    # carry) and calls ``init_eraser`` once built; ``conceal erase`` (erasure.fit_code_eraser) fits the
    # post-hoc eraser, and every release path goes through ``release_codes``.

    def raw_codes(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, code_dim) codes as trained, before any eraser."""
        raise NotImplementedError(f"{self.name} releases no codes")

    def init_eraser(self) -> None:
        from .erasure import CodeEraser

        rank = getattr(self.cfg, "eraser_rank", 0)
        self.eraser = CodeEraser(self.code_dim, rank) if rank else None  # buffers filled by load or by fitting

    def release_codes(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, code_dim): the codes the method releases (after the eraser, when fitted)."""
        codes = self.raw_codes(images)
        return codes if self.eraser is None else self.eraser(codes)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class ModelAPI:
    """User-facing wrapper of a trained method: numpy uint8 images in, numpy out, batched, no grads.

    Subclasses implement what their method releases: ``encode`` (codes, "codes" in ``releases``) and/or
    ``apply`` (released images). ``conceal apply`` / ``conceal encode`` call these for any method.
    """

    method_class: type[Method]
    info: dict = {}  # the model's model.json, set by ``load`` (empty for a model built in memory)

    def __init__(self, method: Method, batch_size: int = 256, fold_batch_norm: bool = False, backend: str = "torch"):
        # channels_last (NHWC) conv weights: inputs from to_tensor_images are NHWC in memory already, and
        # measured on CPU (default configs, batch 64) apply ran 1.3x (concealer) to 2x (anonymizer) faster.
        self.method = method.eval().to(memory_format=torch.channels_last)
        self.batch_size = batch_size
        # Folding each eval-mode batch norm into its conv (blocks.fold_batch_norm) took the concealer's batch-256
        # inference from 821 to 1,125 img/s in one `conceal bench` run (benchmarks/PROFILING.md; uint8 outputs within 1 level). It is opt-in, and done in place on the one
        # module, not on a private inference copy: a folded method has no BN weights, so it must never be
        # trained or saved again (`conceal erase` loads through load_api, fits an eraser and saves
        # ``method``), and only the caller knows that. A copy would double the weights in memory and could go
        # stale if ``method`` changed after it was made; in place, ``self.method`` is what inference runs, and
        # write_model_files refuses it. `conceal apply` / `conceal encode` pass True.
        # The same goes for the other inference rewrites (blocks.fold_for_inference: nearest upsampling + conv
        # as a phase conv + pixel shuffle, which the anonymizer's decoder has).
        if fold_batch_norm:
            from .blocks import fold_for_inference

            fold_for_inference(self.method)
        # backend: "torch", "onnxruntime", or "auto" = the method's fastest_backend when onnxruntime is
        # installed, else torch. Only ``apply`` runs on onnxruntime; encode and the rest stay on torch.
        if backend not in ("torch", "onnxruntime", "auto"):
            raise ValueError(f"backend must be torch, onnxruntime or auto, not {backend!r}")
        if backend == "auto":
            import importlib.util

            backend = method.fastest_backend if importlib.util.find_spec("onnxruntime") else "torch"
        self.backend = backend
        self.onnx = None
        if backend == "onnxruntime":
            from ..export import OnnxRelease

            self.onnx = OnnxRelease(self.method)

    @classmethod
    def load(cls, path, device: str = "cpu", fold_batch_norm: bool = False, backend: str = "torch"):
        """Open a trained model; ``fold_batch_norm=True`` for inference only (faster; the model can then not be
        trained or saved: see ``__init__``); ``backend`` of ``apply`` (see ``__init__``)."""
        from ..train.checkpoint import load_model, read_model_info

        method = load_model(path, device=device)
        if not isinstance(method, cls.method_class):
            raise TypeError(f"{path} holds a {method.name} model, not a {cls.method_class.name}")
        api = cls(method, fold_batch_norm=fold_batch_norm, backend=backend)
        api.info = read_model_info(path)  # model.json: the training data's crop, which photos align faces to
        return api

    @property
    def image_size(self) -> int:
        return self.method.image_size

    def check_images(self, images: np.ndarray) -> np.ndarray:
        """Accept (N, S, S, 3) or one (S, S, 3) uint8 image at the model's size S."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        s = self.image_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3) or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 of shape (N, {s}, {s}, 3), not {images.dtype} {images.shape}")
        return images

    def encode(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{self.method.name} releases no codes")

    def apply(self, images: np.ndarray, **options) -> np.ndarray:
        raise NotImplementedError

    def apply_onnx(self, images: np.ndarray, **options) -> np.ndarray:
        """``apply`` on onnxruntime: the same graph, inputs and uint8 rounding as the torch path (within 1 level)."""
        from ..export import api_inputs

        images, out = self.check_images(images), []
        for i in range(0, len(images), self.batch_size):
            released = self.onnx.released(api_inputs(self, images[i : i + self.batch_size], **options))  # (B, 3, S, S) float32
            out.append(np.rint(np.clip(released, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(0, 2, 3, 1))
        s = self.image_size
        return np.concatenate(out) if out else np.zeros((0, s, s, 3), np.uint8)

    def check_options(self, **options) -> None:
        """Validate ``apply`` options before any file is read (raise LabelError/ValueError, one line)."""


def to_tensor_images(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    # np.array copies: the cache hands out read-only memmaps, which torch refuses to wrap safely.
    return torch.from_numpy(np.array(images, dtype=np.uint8)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8."""
    return images.detach().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
