"""What every method offers the training loop, the model files, export, the CLI and the audit.

A method is an ``nn.Module`` built from (config dataclass, label schema, image size). It owns its
optimizers and its update rule (adversarial methods alternate several), so the one training loop in
``conceal.train`` stays free of per-method branches. Its class is also its spec: the class attributes
listed in ``Method`` are what shared code reads, through ``conceal.methods.registry``, instead of
branching on method names.

Three classes make a method, named as one family (network, user API, export graph), e.g.
``ConcealerNet`` / ``Concealer`` / ``ConcealerGraph``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..config import ConfigError
from ..data.images import check_images
from ..data.schema import LabelSchema
from ..errors import CheckpointError
from ..modelfile import load_method, read_model_info
from .blocks import has_folded_batch_norm, to_tensor_images, to_uint8_images  # noqa: F401  (the APIs import them from here)
from .erasure import CodeEraser

Batch = dict  # {"image": (B, 3, H, W) float in [0, 1], "labels": {name: (B,) float, NaN = unknown}, "identity": (B,) long}


class Method(nn.Module):
    """Base of every method. A subclass declares its spec (all checked by ``register_method``):

    - ``name``: the registry key, written into model.json;
    - ``Config``: its config dataclass (the TOML ``[model]`` section), with a ``tiny()`` classmethod: the
      smallest config that still switches on every loss term, for tests on synthetic faces;
    - ``API``: its user-facing ``ModelAPI`` class (set when that class, naming this one as its
      ``method_class``, is defined);
    - ``releases``: what it hands to the world, which is exactly what the audit attacks: "codes"
      (vectors from encode()) and/or "images" (from apply());
    - ``Graph``: its ``ReleaseGraph`` (the ``apply`` path as plain tensors, with its inputs), for ONNX export;
    - ``shown_losses``: the ``training_step`` log keys the loop puts on the progress bar;
    - ``cli_options``: config field -> help, each a ``conceal train NAME --FIELD`` option;
    - ``audit``: "module:function" of its audit sections (imported only when audited), a function
      (model_path, test, out_dir, judges=, seed=, log=, **options) -> dict of sections;
    - ``audit_release`` (optional): "module:function" giving the keyword options of ``apply`` for the release
      the audit attacks (the concealer's one fixed target); None: the audit attacks ``apply(images)``.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    API: ClassVar[type["ModelAPI"]]
    releases: ClassVar[tuple[str, ...]]
    Graph: ClassVar[type["ReleaseGraph"]]
    shown_losses: ClassVar[tuple[str, ...]]
    cli_options: ClassVar[dict[str, str]]
    audit: ClassVar[str]
    audit_release: ClassVar[str | None] = None
    # The inference backend `conceal apply` runs the release on when it is installed ("torch" or "onnxruntime"):
    # whichever reached the higher share of the matmul peak in benchmarks/PROFILING.md's side-by-side runs
    # (a method whose answer depends on its config, like the concealer's decoder, makes it a property).
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
        rank = getattr(self.cfg, "eraser_rank", 0)
        self.eraser = CodeEraser(self.code_dim, rank) if rank else None  # buffers filled by load or by fitting

    def release_codes(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, code_dim): the codes the method releases (after the eraser, when fitted)."""
        codes = self.raw_codes(images)
        return codes if self.eraser is None else self.eraser(codes)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def saved_weights(self) -> dict[str, torch.Tensor]:
        """The state_dict as model.safetensors stores it (CPU, contiguous); refused once batch norms are folded."""
        if has_folded_batch_norm(self):
            raise CheckpointError(f"this {self.name} model has its batch norms folded for inference (load it without "
                                 "fold_batch_norm to train or save it): its weights would not load as the method's")
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}


class ReleaseGraph(nn.Module):
    """A method's release (what ``apply`` computes) as a module of plain tensors, for ONNX export.

    Takes ``images`` (N, 3, S, S) float32 in [0, 1] (NCHW, RGB) plus the extra ``inputs`` a subclass names,
    and returns float32 ``released`` (N, 3, S, S) in [0, 1], then ``codes`` (N, code_dim) for a method that
    releases codes. Subclasses implement ``forward`` and, with extra inputs, the three methods below.
    """

    inputs: ClassVar[tuple[str, ...]] = ("images",)

    def __init__(self, method: Method):
        super().__init__()
        self.method = method

    @classmethod
    def example_inputs(cls, method: Method, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Random valid inputs of ``batch`` rows (images in [0, 1], and whatever else ``inputs`` names)."""
        s = method.image_size
        return {"images": torch.rand(batch, 3, s, s, generator=generator)}

    @classmethod
    def describe_inputs(cls, method: Method) -> dict[str, str]:
        """Input name -> what it holds (written into the ONNX metadata, printed by ``conceal export``)."""
        s = method.image_size
        return {"images": f"(N, 3, {s}, {s}) float32 RGB in [0, 1]"}

    @classmethod
    def api_feed(cls, api: "ModelAPI", images: np.ndarray, **options) -> dict[str, np.ndarray]:
        """What ``api.apply(images, **options)`` feeds this graph, as numpy: checked (N, S, S, 3) uint8 in."""
        return {"images": np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)}


class ModelAPI:
    """User-facing wrapper of a trained method: numpy uint8 images in, numpy out, batched, no grads.

    Subclasses implement what their method releases: ``encode`` (codes, "codes" in ``releases``) and/or
    ``apply`` (released images). ``conceal apply`` / ``conceal encode`` call these for any method.
    ``apply_options`` names the keyword options ``apply`` takes (the CLI offers ``--as`` only where
    "as_" is one); ``extra_outputs`` what else it can write per image ("mask": ``masks()``).
    """

    method_class: ClassVar[type[Method]]  # the network it wraps; that class's ``API`` is set to this one
    apply_options: ClassVar[tuple[str, ...]] = ()
    extra_outputs: ClassVar[tuple[str, ...]] = ()
    info: dict = {}  # the model's model.json, set by ``load`` (empty for a model built in memory)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "method_class" in vars(cls):  # the pair names each other: Method.API <-> ModelAPI.method_class
            cls.method_class.API = cls

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
        method = load_method(path, cls.method_class, device=device)  # refuses a model of another method
        api = cls(method, fold_batch_norm=fold_batch_norm, backend=backend)
        api.info = read_model_info(path)  # model.json: the training data's crop, which photos align faces to
        return api

    @property
    def image_size(self) -> int:
        return self.method.image_size

    def check_images(self, images: np.ndarray) -> np.ndarray:
        """Accept (N, S, S, 3) or one (S, S, 3) uint8 image at the model's size S."""
        images = np.asarray(images)
        return check_images(images[None] if images.ndim == 3 else images, self.image_size)

    @torch.inference_mode()
    def map_rows(self, rows: np.ndarray, fn, row_shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        """The one batched-inference loop of every API: ``rows`` ``batch_size`` at a time through ``fn``
        (numpy (B, ...) -> numpy (B, *row_shape)), the outputs concatenated ((0, *row_shape) ``dtype`` for none)."""
        out = [fn(rows[i : i + self.batch_size]) for i in range(0, len(rows), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, *row_shape), dtype)

    def map_batches(self, images: np.ndarray, fn, row_shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        """``map_rows`` over checked images, each batch handed to ``fn`` as a (B, 3, S, S) float tensor on the
        model's device."""
        device = self.method.device
        return self.map_rows(self.check_images(images), lambda batch: fn(to_tensor_images(batch, device)), row_shape, dtype)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> the released codes (N, code_dim) float32 (after the eraser, when fitted); deterministic."""
        if "codes" not in self.method.releases:
            raise NotImplementedError(f"{self.method.name} releases no codes")
        return self.map_batches(images, lambda x: self.method.release_codes(x).float().cpu().numpy(), (self.method.code_dim,))

    def apply(self, images: np.ndarray, **options) -> np.ndarray:
        """(N, H, W, 3) uint8 -> the released images, (N, H, W, 3) uint8. By default the network's forward
        is the release (the masker's m_topK ⊙ x, the anonymizer's reconstruction); on onnxruntime when
        opened with that backend. A method whose release takes options (the concealer's ``as_``) overrides it."""
        if self.onnx is not None:
            return self.apply_onnx(images, **options)
        s = self.image_size
        return self.map_batches(images, lambda x: to_uint8_images(self.method(x, **options)), (s, s, 3), np.uint8)

    def apply_onnx(self, images: np.ndarray, **options) -> np.ndarray:
        """``apply`` on onnxruntime: the same graph, inputs and uint8 rounding as the torch path (within 1 level)."""
        from ..export import api_inputs

        def release(batch: np.ndarray) -> np.ndarray:
            released = self.onnx.released(api_inputs(self, batch, **options))  # (B, 3, S, S) float32
            return np.rint(np.clip(released, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(0, 2, 3, 1)

        s = self.image_size
        return self.map_rows(self.check_images(images), release, (s, s, 3), np.uint8)

    def check_options(self, **options) -> None:
        """Validate ``apply`` options before any file is read (raise LabelError/ConfigError, one line).

        Here: only the options ``apply_options`` names; a method with options checks their values too."""
        unknown = sorted(set(options) - set(self.apply_options))
        if unknown:  # named as the CLI's flags (as_ -> --as), the words the CLI and the service both show
            flags = ", ".join("--" + name.rstrip("_").replace("_", "-") for name in unknown)
            raise ConfigError(f"{flags} is not an option of {self.method.name} models")
