"""Masker: "Adversarial Mask Generation for Preserving Visual Privacy" (Gupta et al., FG 2021).

A masker learns which K% of the pixels a task needs; every other pixel is zeroed before the image is
released. Only task labels are needed (no labels of what is to be hidden): whatever the task does not
need is simply not released.

- The masker, a small U-Net, produces a soft mask m in (0, 1), (B, 1, H, W).
- Per image, the top K% pixels of m keep their soft values and the rest are zeroed: m_topK.
  The predictor sees x_p = m_topK ⊙ x (what is released); the obfuscator sees x_o = (m − m_topK) ⊙ x,
  the part of the mask that is *not* released.
- Predictor and obfuscator are one classifier Φ: 4 conv blocks (conv, BN, ReLU, 2×2 max-pool), a dense
  layer with BN and ReLU, and the task output.
- Alternation (a pure function of the step number, so a resumed run is exact): ``predictor_steps``
  predictor batches update Φ and the masker on CE(Φ(x_p), y); then, in the ``adversarial`` variant, one
  obfuscator batch updates the masker only, on the cross-entropy between Φ(x_o) and the uniform
  distribution, so the mass of m outside the released pixels carries nothing Φ can use, which pushes
  the task information into the top K%. ``non_adversarial`` skips the obfuscator batch.
  ``obfuscator_weight`` / ``obfuscator_task_weight`` add the task's CE to that batch's masker loss, and
  ``masker_lr_scale`` slows the masker against Φ (defaults: the paper's rule, uniform term only, one lr).

Choices the paper leaves open, made here:
- Φ's softmax output is ``AttributeHeads`` over the task label: K logits for a categorical task, one
  logit for a binary one (a 2-class softmax over logits (0, l) is exactly a sigmoid of l).
- During the obfuscator batch Φ runs in eval mode with frozen parameters, so neither its weights nor
  its BN running statistics move (as a frozen Keras model behaves), and it is judged with the
  statistics of the released images it was trained on.
- Every training step logs both CE terms (the one not optimised is measured without gradient), so the
  loop's per-epoch means are means over all batches rather than diluted by the alternation.
- Derived task labels (UTKFace's age groups) are computed by the method from the batch's labels
  (``DERIVED_LABELS``); the data and its cache stay untouched.

Measured on synthetic faces (smile, 32 px, 1,500 faces, 400 steps of 32, keep 0.25; the smile is drawn
in a 7x10 px mouth box): training is fragile at this scale. Only the selected pixels get a gradient
from the predictor, and the obfuscator lowers m on informative pixels that are not (yet) selected,
which keeps them out of the release. Of seeds 0-3 (adversarial), one put the released mask on the
mouth (mean m_topK 0.30 there vs 0.15 elsewhere; held-out smile accuracy 0.82), one learned smile
(0.82) with the mask elsewhere, and two had not learned it after 400 steps (nor, for the two tried,
after 1,000: the mask left the mouth entirely). The non-adversarial variant learned smile in 4 of 6
seeds. The seed that learned smile with the mask away from the mouth shows a leak of this design
worth knowing: the masker sees the whole image, so *where* it puts the mask can itself carry the
label, which only an attacker on the released images measures.

Also here: the image baselines the audit compares against (``original``, ``block_center``,
``blur_center``, ``pixelate``), pure functions on uint8 images.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import nn

from ..config import setting
from ..data.images import check_images
from ..data.schema import Label, LabelSchema
from .base import Batch, Method, ModelAPI, ReleaseGraph
from .blocks import AttributeHeads

CLASSIFIER_BLOCKS = 4  # Φ halves the image 4 times: the image size must be a multiple of 16
UNET_LEVELS = 3  # resolutions the masker works at (full, 1/2, 1/4)
VARIANTS = ("adversarial", "non_adversarial")


@dataclass
class MaskerConfig:
    task: str = "gender"  # the label the released pixels must keep: a dataset label or one of DERIVED_LABELS
    keep: float = setting(0.25, above=0, at_most=1)  # K: fraction of each image's pixels released
    variant: str = setting("adversarial", choices=VARIANTS)  # adversarial | non_adversarial (no obfuscator batches)
    predictor_steps: int = setting(3, at_least=1)  # predictor batches before each obfuscator batch
    masker_width: int = setting(16, at_least=1)  # channels of the U-Net's first level; doubles per level
    classifier_width: int = setting(32, at_least=1)  # channels of Φ's first conv block; doubles per block
    dense: int = setting(128, at_least=1)  # width of Φ's dense layer
    # The obfuscator batch's masker loss: obfuscator_weight · CE(uniform, Φ(x_o)) + obfuscator_task_weight ·
    # CE(Φ(x_p), y), Φ frozen. The defaults (1, 0) are the paper's (the uniform term alone); a task weight keeps the
    # masker from trading the task away in that batch. With Adam one term's scale alone changes almost nothing:
    # what counts is the ratio of the two.
    obfuscator_weight: float = setting(1.0, at_least=0)
    obfuscator_task_weight: float = setting(0.0, at_least=0)
    masker_lr_scale: float = setting(1.0, above=0)  # the masker's learning rate = this x train.lr (Φ keeps train.lr)

    @classmethod
    def tiny(cls) -> "MaskerConfig":
        return cls(task="smile", masker_width=4, classifier_width=4, dense=8)


# --- derived task labels ------------------------------------------------------------------------


@dataclass(frozen=True)
class BinnedLabel:
    """A categorical label made by binning a continuous one: class i holds values in [edges[i-1], edges[i])."""

    label: Label
    source: str  # the continuous label it is computed from
    edges: tuple[float, ...]

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """(B,) source values (NaN = unknown) -> (B,) class indices as float (NaN stays NaN)."""
        edges = torch.tensor(self.edges, dtype=values.dtype, device=values.device)
        classes = torch.bucketize(values, edges, right=True).to(values.dtype)
        return torch.where(torch.isnan(values), values, classes)


AGE_GROUP = BinnedLabel(Label("age_group", "categorical", ("0-12", "13-19", "20-39", "40-59", "60+")), "age", (13, 20, 40, 60))
DERIVED_LABELS: dict[str, BinnedLabel] = {AGE_GROUP.label.name: AGE_GROUP}


def resolve_task(schema: LabelSchema, task: str) -> Label:
    """The task label: a classification label of the dataset, or a derived one whose source it has."""
    if task in DERIVED_LABELS:
        schema[DERIVED_LABELS[task].source]  # KeyError names the dataset's labels
        return DERIVED_LABELS[task].label
    if task not in schema:
        raise KeyError(f"no label {task!r}; this dataset has: {', '.join(schema.names)}; derived: {', '.join(DERIVED_LABELS)}")
    label = schema[task]
    if label.kind == "continuous":
        raise ValueError(f"masker task {task!r} is continuous; pick a class label or a derived one ({', '.join(DERIVED_LABELS)})")
    return label


# --- the mask -----------------------------------------------------------------------------------


def top_k_mask(mask: torch.Tensor, keep: float, ties_by_index: bool = False) -> torch.Tensor:
    """(B, 1, H, W) soft mask -> the same with all but its round(keep·H·W) largest values per image zeroed.

    Exactly k pixels survive per image, ties included. With ``ties_by_index`` (the release: eval mode, the
    exported graph), among equal values the lower (row-major) index wins:
    torch's ``topk`` leaves ties unordered, and a flat region of the mask (a flat background) at the K%
    boundary then released different pixels in torch and onnxruntime, whose TopK breaks ties that way
    (measured on masker-fer-emotion: 9.8% of pixels differed). So the selection ranks, in float64, each value
    minus 1e-14 x its index: equal values are ordered by index, distinct float32 values keep their order (the
    largest shift, 2.3e-11 at 48 x 48, is below float32's spacing above ~1e-4), and both backends agree.
    The selection carries no gradient; the kept values do.
    """
    pixels = int(mask.shape[2]) * int(mask.shape[3])  # int(): H·W is fixed per model, a constant in an exported graph
    flat = mask.reshape(-1, pixels)  # (B, H·W)
    k = max(1, round(keep * pixels))
    # One zero row appended and dropped again: onnxruntime's TopK dies with SIGFPE on zero rows, so the
    # exported graph could not take an empty batch otherwise. Rows are independent: nothing else changes.
    padded = torch.cat([flat, flat.new_zeros(1, pixels)])  # (B + 1, H·W)
    ranked = padded
    if ties_by_index:  # (B + 1, H·W) float64; training keeps torch's own topk, as the shipped models were trained
        ranked = padded.double() - torch.arange(pixels, dtype=torch.float64, device=mask.device) * 1e-14
    selected = torch.zeros_like(padded).scatter_(1, ranked.topk(k, dim=1).indices, 1.0)[:-1]
    return (flat * selected).view_as(mask)


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """3x3 conv (same size), BN, ReLU: the unit of both the U-Net and Φ."""
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(True)]


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn_relu(in_channels, out_channels), *conv_bn_relu(out_channels, out_channels))


class MaskUNet(nn.Module):
    """(B, 3, H, W) -> soft mask (B, 1, H, W) in (0, 1): a U-Net with ``UNET_LEVELS`` levels."""

    def __init__(self, width: int):
        super().__init__()
        channels = [width * 2**i for i in range(UNET_LEVELS)]  # e.g. 16, 32, 64
        self.down = nn.ModuleList(double_conv(c_in, c_out) for c_in, c_out in zip([3, *channels[:-1]], channels))
        # Bilinear upsampling, not a stride-2 transposed conv: the latter's checkerboard would decide
        # which of two neighbouring pixels is released.
        self.merge = nn.ModuleList(double_conv(channels[i + 1] + channels[i], channels[i]) for i in range(UNET_LEVELS - 1))
        self.to_mask = nn.Conv2d(channels[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, level in enumerate(self.down):
            x = level(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)  # (B, width·2^i, H/2^i, W/2^i)
        for i in reversed(range(UNET_LEVELS - 1)):
            up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = self.merge[i](torch.cat([up, skips[i]], dim=1))
        return torch.sigmoid(self.to_mask(x))


class TaskClassifier(nn.Module):
    """Φ: 4 × (conv, BN, ReLU, 2×2 max-pool), dense + BN + ReLU, task output. (B, 3, H, W) -> {task: logits}."""

    def __init__(self, task: LabelSchema, image_size: int, width: int, dense: int):
        super().__init__()
        channels = [width * 2**i for i in range(CLASSIFIER_BLOCKS)]  # e.g. 32, 64, 128, 256
        blocks: list[nn.Module] = []
        for c_in, c_out in zip([3, *channels[:-1]], channels):
            blocks += [*conv_bn_relu(c_in, c_out), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks)
        side = image_size // 2**CLASSIFIER_BLOCKS
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * side**2, dense, bias=False), nn.BatchNorm1d(dense), nn.ReLU(True))
        self.heads = AttributeHeads(dense, task)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.dense(self.features(x)))


def class_logits(output: torch.Tensor, label: Label) -> torch.Tensor:
    """A head's output -> (B, n_classes) softmax logits; a binary head's one logit l becomes (0, l)."""
    return F.pad(output, (1, 0)) if label.kind == "binary" else output


def uniform_cross_entropy(output: torch.Tensor, label: Label) -> torch.Tensor:
    """Mean cross-entropy between the uniform distribution and the softmax of a head's output."""
    return -F.log_softmax(class_logits(output, label), dim=1).mean()


@contextmanager
def frozen(module: nn.Module):
    """The module in eval mode without parameter gradients, so neither weights nor BN statistics move."""
    was_training = module.training
    module.eval().requires_grad_(False)
    try:
        yield module
    finally:
        module.requires_grad_(True).train(was_training)


class MaskerGraph(ReleaseGraph):
    """images (N, 3, S, S) -> released m_topK ⊙ x (N, 3, S, S)."""

    def forward(self, images: torch.Tensor):
        return self.method(images)


class MaskerNet(Method):
    """The masker's network: the paper's mask generator (a U-Net) and the task classifier it is trained against."""

    name = "masker"
    Config = MaskerConfig
    Graph = MaskerGraph
    releases = ("images",)
    fastest_backend = "onnxruntime"  # 97% of the matmul peak vs torch's 47% (benchmarks/PROFILING.md)
    shown_losses = ("loss", "task_ce", "uniform_ce")
    cli_options = {"keep": "fraction K of pixels the mask keeps", "task": "the label the released pixels must keep"}
    audit = "conceal.audit.masker:audit_masker"

    def __init__(self, cfg: MaskerConfig, schema: LabelSchema, image_size: int = 64):
        super().__init__(cfg, schema, image_size)
        if image_size % 2**CLASSIFIER_BLOCKS:
            raise ValueError(f"masker image size must be a multiple of {2**CLASSIFIER_BLOCKS}, not {image_size}")
        if cfg.variant not in VARIANTS:
            raise ValueError(f"masker variant must be one of {', '.join(VARIANTS)}, not {cfg.variant!r}")
        if not 0 < cfg.keep <= 1:
            raise ValueError(f"masker keep must be in (0, 1], not {cfg.keep}")
        if cfg.predictor_steps < 1:
            raise ValueError(f"masker predictor_steps must be at least 1, not {cfg.predictor_steps}")
        if cfg.obfuscator_weight < 0 or cfg.obfuscator_task_weight < 0 or cfg.masker_lr_scale <= 0:
            raise ValueError("masker obfuscator weights must be at least 0 and masker_lr_scale above 0")
        self.task_label = resolve_task(schema, cfg.task)
        self.task = LabelSchema((self.task_label,))
        # What the masker hides: every label but the task (and the task's source, e.g. age for age
        # groups). Nothing is told about them; they go because the task does not need them.
        kept = {cfg.task, getattr(DERIVED_LABELS.get(cfg.task), "source", cfg.task)}
        self.concealed = schema.subset([name for name in schema.names if name not in kept])
        self.masker = MaskUNet(cfg.masker_width)
        self.classifier = TaskClassifier(self.task, image_size, cfg.classifier_width, cfg.dense)

    # --- the model -----------------------------------------------------------------------------

    def masks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> soft mask m and its released part m_topK, each (B, 1, H, W)."""
        mask = self.masker(x)
        return mask, top_k_mask(mask, self.cfg.keep, ties_by_index=not self.training)

    def forward(self, x: torch.Tensor, labels: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The released images m_topK ⊙ x, (B, 3, H, W). The release needs no labels: ``labels`` is
        accepted (and ignored) so every method's forward reads (images, labels)."""
        return self.masks(x)[1] * x

    def task_targets(self, batch: Batch) -> dict[str, torch.Tensor]:
        """{task: (B,) class index as float, NaN = unknown}, derived from the batch's labels if needed."""
        labels = batch["labels"]
        derived = DERIVED_LABELS.get(self.cfg.task)
        return {self.cfg.task: derived(labels[derived.source]) if derived else labels[self.cfg.task]}

    def is_obfuscator_step(self, step: int) -> bool:
        """Every (predictor_steps + 1)-th batch, in the adversarial variant only."""
        period = self.cfg.predictor_steps + 1
        return self.cfg.variant == "adversarial" and step % period == period - 1

    # --- training ------------------------------------------------------------------------------

    def configure_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        return {
            "masker": torch.optim.Adam(self.masker.parameters(), lr=lr * self.cfg.masker_lr_scale),
            "classifier": torch.optim.Adam(self.classifier.parameters(), lr=lr),
        }

    def training_step(self, batch: Batch, optimizers: dict, step: int) -> dict[str, float]:
        x, y = batch["image"], self.task_targets(batch)
        mask, released = self.masks(x)
        predictor_input, obfuscator_input = released * x, (mask - released) * x  # each (B, 3, H, W)

        if self.is_obfuscator_step(step):
            cfg = self.cfg
            with frozen(self.classifier):
                uniform_ce = uniform_cross_entropy(self.classifier(obfuscator_input)[cfg.task], self.task_label)
                with torch.set_grad_enabled(cfg.obfuscator_task_weight > 0):  # unweighted: measured only, no graph
                    task_ce = self.classifier.heads.losses(self.classifier(predictor_input), y)[cfg.task]
                # with the defaults (1, 0) exactly the paper's loss: 1·u + 0·t == u in floating point
                loss = cfg.obfuscator_weight * uniform_ce + cfg.obfuscator_task_weight * task_ce
            optimizers["masker"].zero_grad(set_to_none=True)
            loss.backward()
            optimizers["masker"].step()
            return {"loss": loss.item(), "task_ce": task_ce.item(), "uniform_ce": uniform_ce.item()}

        with frozen(self.classifier), torch.no_grad():  # measured only, before Φ's BN sees this batch
            uniform_ce = uniform_cross_entropy(self.classifier(obfuscator_input)[self.cfg.task], self.task_label)
        loss = self.classifier.heads.losses(self.classifier(predictor_input), y)[self.cfg.task]
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers.values():
            opt.step()
        return {"loss": loss.item(), "task_ce": loss.item(), "uniform_ce": uniform_ce.item()}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        """Φ's task CE/accuracy on the released pixels and on the unreleased rest of the mask."""
        x, y = batch["image"], self.task_targets(batch)
        mask, released = self.masks(x)
        logs = {}
        for part, images in (("task", released * x), ("rest", (mask - released) * x)):
            output = self.classifier(images)
            logs[f"{part}_ce"] = self.classifier.heads.losses(output, y)[self.cfg.task].item()
            known = ~torch.isnan(y[self.cfg.task])
            if known.any():
                predicted = self.classifier.heads.predict(output)[self.cfg.task]
                logs[f"{part}_acc"] = (predicted[known] == y[self.cfg.task][known]).float().mean().item()
            if part == "rest":
                logs["uniform_ce"] = uniform_cross_entropy(output[self.cfg.task], self.task_label).item()
        return logs


class Masker(ModelAPI):
    """The user-facing API of a trained masker.

    >>> model = Masker.load("runs/masker-lfw-gender")
    >>> released = model.apply(images)   # (N, H, W, 3) uint8: all but the top K% pixels are black
    >>> masks = model.masks(images)      # (N, H, W) uint8: the released mask m_topK, scaled to 0..255
    """

    method_class = MaskerNet
    method: MaskerNet
    extra_outputs = ("mask",)

    def masks(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> the released masks m_topK, (N, H, W) uint8 (255 = fully kept)."""
        s = self.image_size
        release = lambda x: self.method.masks(x)[1].squeeze(1).mul(255).round().byte().cpu().numpy()  # noqa: E731
        return self.map_batches(images, release, (s, s), np.uint8)


# --- baseline releases ---------------------------------------------------------------------------
# What the masker is compared with in the audit. Each takes (N, H, W, 3) uint8 and returns a new array
# of the same shape; "fraction" is a share of the pixels, like the masker's keep, so a 0.25 centre
# block covers as many pixels as a 0.25 mask releases.


def center_box(height: int, width: int, fraction: float) -> tuple[slice, slice]:
    """Rows and columns of the centred box with the image's aspect that covers ``fraction`` of its pixels."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    scale = math.sqrt(fraction)
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (height - h) // 2, (width - w) // 2
    return slice(top, top + h), slice(left, left + w)


def original(images: np.ndarray) -> np.ndarray:
    """The identity release: what leaks with no protection at all."""
    return check_images(images).copy()


def block_center(images: np.ndarray, fraction: float) -> np.ndarray:
    """Black out the centred box covering ``fraction`` of the pixels (where an aligned face is)."""
    out = check_images(images).copy()
    rows, cols = center_box(out.shape[1], out.shape[2], fraction)
    out[:, rows, cols] = 0
    return out


def blur_center(images: np.ndarray, fraction: float, sigma: float) -> np.ndarray:
    """Gaussian-blur (standard deviation ``sigma`` px) the centred box covering ``fraction`` of the pixels.

    The whole image is blurred and the box pasted back, so the box's pixels near its border are
    blurred with their true neighbours rather than against a cut edge.
    """
    out = check_images(images).copy()
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, not {sigma}")
    rows, cols = center_box(out.shape[1], out.shape[2], fraction)
    for img in out:
        blurred = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=sigma)))
        img[rows, cols] = blurred[rows, cols]
    return out


def pixelate(images: np.ndarray, cells: int) -> np.ndarray:
    """Average the image over a ``cells`` × ``cells`` grid and show each cell as one flat colour."""
    images = check_images(images)
    if cells < 1:
        raise ValueError(f"cells must be at least 1, not {cells}")
    out = images.copy()
    size = (images.shape[2], images.shape[1])  # PIL's (width, height)
    for img in out:
        cell_means = Image.fromarray(img).resize((cells, cells), Image.Resampling.BOX)
        img[:] = np.asarray(cell_means.resize(size, Image.Resampling.NEAREST))
    return out


__all__ = [
    "AGE_GROUP", "DERIVED_LABELS", "MaskerNet", "Masker", "MaskerConfig", "MaskerGraph", "block_center", "blur_center", "center_box",
    "original", "pixelate", "top_k_mask",
]
