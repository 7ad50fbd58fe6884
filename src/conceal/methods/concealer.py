"""Concealer: BAFO, "Learning to Conceal" (Hanukoglu et al., AAAI 2020), plus two levers the paper lacks.

The paper's method: a VAE whose sampled latent z is concatenated with the labels to conceal (age,
gender, race) before decoding. The decoder is handed the labels, so the encoder has no reason to keep
them in z; the code can then be decoded as any attributes the user picks.

Measured on UTKFace, that alone leaves the labels readable in z and lets the decoder half-ignore the
labels it is given (see the concealer issue). Two optional levers, both off in the paper's config:
- ``critic_weight`` (λ): a latent critic predicts the labels from μ; its gradient reaches the encoder
  reversed (Fader Networks), pushing the labels out of the code.
- ``classifier_weight``: an attribute classifier trained on real faces must recognise the requested
  attributes in decode(z, target) for shuffled targets (as AttGAN/StarGAN do), which forces the
  decoder to honour every label, age included.
- ``independence_weight``: an MMD penalty between the codes of label groups (Variational Fair
  Autoencoder); non-adversarial, so it cannot be fooled the way a critic can.
And ``attr_dropout``: each label is replaced by a learned "unspecified" value with this probability,
so a face can be rendered without committing to, say, a gender.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import setting
from ..data.schema import LabelSchema
from .base import Batch, Method, ModelAPI, ReleaseGraph, to_uint8_images
from .blocks import AttributeHeads, LabelCodec, conv_decoder, conv_encoder, independence_mmd, reverse_gradient

N_DOWN = 4  # 64 -> 4x4 feature maps; image size must be a multiple of 16


@dataclass
class ConcealerConfig:
    latent: int = setting(48, at_least=1)  # the paper's two sizes: 48 and 100
    width: int = setting(32, at_least=1)  # channels of the first conv; doubles per stage (32 -> 256)
    conceal: tuple[str, ...] = ("age", "gender", "race")  # labels handed to the decoder instead of kept in z
    kl_weight: float = setting(1.0, at_least=0)  # β; the paper's Discussion proposes a heavier penalty
    attr_dropout: float = setting(0.1, at_least=0, at_most=1)  # probability of training a label as "unspecified"
    critic_weight: float = setting(0.0, at_least=0)  # λ of the latent critic; 0 = the paper's method
    classifier_weight: float = setting(0.0, at_least=0)  # weight of the attribute-classifier loss on decodes; 0 = the paper's method
    independence_weight: float = setting(0.0, at_least=0)  # weight of the MMD penalty between label groups' codes; 0 = the paper's method
    eraser_rank: int = setting(0, at_least=0)  # rank of the post-hoc code eraser fitted by `conceal erase`; 0 = none

    @classmethod
    def tiny(cls) -> "ConcealerConfig":
        return cls(latent=8, width=8, critic_weight=1.0, classifier_weight=1.0)


class ImageAttributeClassifier(nn.Module):
    """Small CNN: (B, 3, H, W) -> attribute outputs. Trained on real faces only; judges decodes in training."""

    def __init__(self, schema: LabelSchema, image_size: int, width: int = 32):
        super().__init__()
        self.features = conv_encoder(3, width, N_DOWN)
        feat = min(width * 2 ** (N_DOWN - 1), 512) * (image_size // 2**N_DOWN) ** 2
        self.dropout = nn.Dropout(0.3)
        self.heads = AttributeHeads(feat, schema)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.dropout(self.features(x).flatten(1)))


class ConcealerGraph(ReleaseGraph):
    """images (N, 3, S, S), labels (N, L) float, unspecified (N, L) bool -> released (N, 3, S, S), codes (N, latent).

    Column j of ``labels``/``unspecified`` is the j-th label of the model's concealed schema, in the
    dataset's units (class index, 0/1, or a number in range; NaN = unknown = unspecified).
    """

    inputs = ("images", "labels", "unspecified")

    def forward(self, images: torch.Tensor, labels: torch.Tensor, unspecified: torch.Tensor):
        names = self.method.concealed.names
        codes = self.method.release_codes(images)  # μ (after the eraser, if any): what `conceal encode` releases
        columns = {name: labels[:, j] for j, name in enumerate(names)}
        masks = {name: unspecified[:, j] for j, name in enumerate(names)}
        return self.method.decode(codes, columns, masks), codes

    @classmethod
    def example_inputs(cls, method, batch, generator):
        inputs = super().example_inputs(method, batch, generator)
        columns = []
        for label in method.concealed:
            if label.kind == "continuous":
                lo, hi = label.range
                columns.append(lo + (hi - lo) * torch.rand(batch, generator=generator))
            else:
                columns.append(torch.randint(0, label.n_classes, (batch,), generator=generator).float())
        inputs["labels"] = torch.stack(columns, dim=1)  # (N, L)
        inputs["unspecified"] = torch.rand(batch, len(columns), generator=generator) < 0.3  # (N, L) bool
        return inputs

    @classmethod
    def describe_inputs(cls, method):
        out = super().describe_inputs(method)
        cols = []
        for label in method.concealed:
            if label.kind == "continuous":
                cols.append(f"{label.name} (number in {label.range[0]:g}..{label.range[1]:g})")
            else:
                cols.append(f"{label.name} (class index: {', '.join(f'{i}={c}' for i, c in enumerate(label.classes))})")
        out["labels"] = f"(N, {len(cols)}) float32, columns: " + "; ".join(cols) + "; NaN = unspecified"
        out["unspecified"] = f"(N, {len(cols)}) bool, same columns: true = render this attribute as unspecified"
        return out

    @classmethod
    def api_feed(cls, api, images, as_=None):
        feed = super().api_feed(api, images)
        labels, unspecified = api.attribute_tensors(as_ or {}, len(images))
        names = api.schema.names
        feed["labels"] = torch.stack([labels[n] for n in names], dim=1).cpu().numpy().astype(np.float32)
        feed["unspecified"] = torch.stack([unspecified[n] for n in names], dim=1).cpu().numpy()
        return feed


class ConcealerNet(Method):
    """The concealer's network: the paper's BAFO VAE (encoder, label-conditioned decoder, critic, image classifier)."""

    name = "concealer"
    Config = ConcealerConfig
    Graph = ConcealerGraph
    releases = ("codes", "images")
    shown_losses = ("loss", "recon", "kl", "critic", "mmd", "cls_decoded")
    cli_options = {"latent": "latent size (48 or 100 in the paper)"}
    audit = "conceal.audit.concealer:audit_concealer"

    def __init__(self, cfg: ConcealerConfig, schema: LabelSchema, image_size: int = 64):
        super().__init__(cfg, schema, image_size)
        if image_size % 2**N_DOWN:
            raise ValueError(f"concealer image size must be a multiple of {2**N_DOWN}, not {image_size}")
        self.concealed = schema.subset(list(cfg.conceal))  # KeyError names the dataset's labels
        top = min(cfg.width * 2 ** (N_DOWN - 1), 512)
        self.side = image_size // 2**N_DOWN
        self.encoder = conv_encoder(3, cfg.width, N_DOWN)
        self.to_moments = nn.Linear(top * self.side**2, 2 * cfg.latent)  # -> (μ, log σ²)
        self.codec = LabelCodec(self.concealed)
        self.from_latent = nn.Sequential(
            nn.Linear(cfg.latent + self.codec.dim, top * self.side**2), nn.ReLU(True)
        )
        self.decoder = conv_decoder(3, cfg.width, N_DOWN)
        self.critic = (
            nn.Sequential(nn.Linear(cfg.latent, 256), nn.LeakyReLU(0.2, True), nn.Linear(256, 256), nn.LeakyReLU(0.2, True), AttributeHeads(256, self.concealed))
            if cfg.critic_weight > 0
            else None
        )
        self.classifier = ImageAttributeClassifier(self.concealed, image_size) if cfg.classifier_weight > 0 else None
        self.code_dim = cfg.latent
        self.init_eraser()

    # --- the model -----------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> μ, log σ², each (B, latent)."""
        mu, logvar = self.to_moments(self.encoder(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def raw_codes(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> μ (B, latent): deterministic; ``release_codes`` adds the eraser, when fitted."""
        return self.encode(x)[0]

    def decode(self, z: torch.Tensor, labels: dict[str, torch.Tensor], unspecified: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """z (B, latent) + labels (name -> (B,)) -> images (B, 3, H, W) in [0, 1]."""
        h = self.from_latent(torch.cat([z, self.codec(labels, unspecified)], dim=1))
        # z.shape[0], not len(z): the ONNX exporter traces shape[0] as the dynamic batch, len() as a constant.
        # -1 on the batch axis, constants elsewhere: an exported graph then also takes an empty batch
        return self.decoder(h.reshape(-1, int(h.shape[1]) // self.side**2, self.side, self.side))

    def forward(self, x: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """Deterministic reconstruction with the given labels (μ, no sampling)."""
        return self.decode(self.encode(x)[0], labels)

    # --- training ------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> "ConcealerNet":
        """Training after `conceal erase` (``conceal train --init-from`` an erased model) adapts the decoder to
        erased codes. The encoder stays frozen, batch-norm statistics included: the eraser was fitted to it,
        and a moving encoder could put the erased labels back into the code in other directions."""
        super().train(mode)
        if self.eraser is not None:
            self.encoder.eval()
        return self

    def configure_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        vae = [p for n, p in self.named_parameters() if not n.startswith("classifier.")]
        opts = {"vae": torch.optim.Adam(vae, lr=lr, betas=(0.5, 0.999))}
        if self.classifier is not None:
            opts["classifier"] = torch.optim.Adam(self.classifier.parameters(), lr=lr)
        return opts

    def _labels(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {name: batch["labels"][name] for name in self.concealed.names}

    def training_step(self, batch: Batch, optimizers: dict, step: int) -> dict[str, float]:
        x, y = batch["image"], self._labels(batch)
        logs: dict[str, float] = {}

        if self.classifier is not None:  # 1. the classifier learns the attributes from real faces
            self.classifier.train()
            flipped = torch.where(torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5, x, x.flip(3))
            cls_loss = sum(self.classifier.heads.losses(self.classifier(flipped), y).values())
            optimizers["classifier"].zero_grad(set_to_none=True)
            cls_loss.backward()
            optimizers["classifier"].step()
            logs["cls_real"] = cls_loss.item()

        # 2. the VAE (and critic) update
        frozen = self.eraser is not None  # after `conceal erase`: only the decoder learns (see ``train``)
        with torch.set_grad_enabled(not frozen):
            mu, logvar = self.encode(x)
        if frozen:
            mu = self.eraser(mu)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        drop = {n: torch.rand(len(x), device=x.device) < self.cfg.attr_dropout for n in y}
        recon_x = self.decode(z, y, drop)
        recon = (recon_x - x).pow(2).sum(dim=(1, 2, 3)).mean()  # summed over pixels: the VAE's Gaussian likelihood
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        loss = recon + self.cfg.kl_weight * kl
        logs.update(recon=recon.item(), kl=kl.item())

        if self.cfg.independence_weight > 0 and not frozen:
            mmd = independence_mmd(mu, y, self.concealed)
            loss = loss + self.cfg.independence_weight * mmd
            logs["mmd"] = mmd.item()

        if self.critic is not None and not frozen:
            # The critic minimises its loss; the reversed gradient makes the encoder maximise it, times λ.
            c_loss = sum(self.critic[-1].losses(self.critic(reverse_gradient(mu, self.cfg.critic_weight)), y).values())
            loss = loss + c_loss
            logs["critic"] = c_loss.item()

        if self.classifier is not None:
            # Shuffled targets keep realistic label combinations; the classifier is frozen for this term.
            perm = torch.randperm(len(x), device=x.device)
            target = {n: v[perm] for n, v in y.items()}
            self.classifier.eval()
            self.classifier.requires_grad_(False)
            t_loss = sum(self.classifier.heads.losses(self.classifier(self.decode(z, target)), target).values())
            self.classifier.requires_grad_(True)
            loss = loss + self.cfg.classifier_weight * t_loss
            logs["cls_decoded"] = t_loss.item()

        optimizers["vae"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["vae"].step()
        logs["loss"] = loss.item()
        return logs

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        x, y = batch["image"], self._labels(batch)
        mu, logvar = self.encode(x)
        codes = mu if self.eraser is None else self.eraser(mu)  # what the decoder gets at release
        recon_x = self.decode(codes, y)
        mse = (recon_x - x).pow(2).mean(dim=(1, 2, 3))
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        logs = {
            "recon": (recon_x - x).pow(2).sum(dim=(1, 2, 3)).mean().item(),
            "kl": kl.item(),
            "psnr": (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean().item(),
        }
        if self.classifier is not None:
            # How often decodes with shuffled targets are read as the target, by the training classifier
            # (a training signal only; the audit's independent judges give the real number).
            perm = torch.arange(len(x) - 1, -1, -1, device=x.device)
            target = {n: v[perm] for n, v in y.items()}
            pred = self.classifier.heads.predict(self.classifier(self.decode(codes, target)))
            for label in self.concealed:
                if label.kind != "continuous":
                    logs[f"cls_{label.name}_agree"] = (pred[label.name] == target[label.name]).float().mean().item()
                else:
                    logs[f"cls_{label.name}_mae"] = (pred[label.name] - target[label.name]).abs().mean().item()
        return logs


class Concealer(ModelAPI):
    """The user-facing API of a trained concealer.

    >>> model = Concealer.load("models/concealer-utkface-64")
    >>> codes = model.encode(images)                       # (N, 48): carries no age/gender/race
    >>> faces = model.decode(codes, {"gender": "female", "age": 40})
    >>> faces = model.conceal(images, as_={"gender": "female", "age": 40})

    Images are (N, H, W, 3) uint8 at the model's size (``image_size``), or one (H, W, 3) image.
    """

    method_class = ConcealerNet
    method: ConcealerNet
    apply_options = ("as_",)

    @property
    def schema(self) -> LabelSchema:
        """The attributes this model renders (a subset of the training data's labels)."""
        return self.method.concealed

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> concealed codes μ (N, latent) float32; deterministic."""
        return self.map_batches(images, lambda x: self.method.release_codes(x).float().cpu().numpy(), (self.method.cfg.latent,))

    def attribute_tensors(self, attributes: dict[str, Any], n: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """User attributes -> label tensors + "unspecified" masks for n rows.

        Each value is a class name/index or a number, or "unspecified"; a label not given at all is
        unspecified too. Values are checked against the schema with one-line errors.
        """
        labels, unspecified = {}, {}
        given = {k: v for k, v in attributes.items() if not (isinstance(v, str) and v.strip().lower() == "unspecified")}
        parsed = self.schema.parse(given)
        for k in attributes:
            if k not in self.schema:
                self.schema.parse({k: None})  # raises the unknown-attribute error
        for label in self.schema:
            value = parsed.get(label.name, float("nan"))
            labels[label.name] = torch.full((n,), value, device=self.method.device)
            unspecified[label.name] = torch.full((n,), label.name not in parsed, device=self.method.device)
        return labels, unspecified

    def decode(self, codes: np.ndarray, attributes: dict[str, Any]) -> np.ndarray:
        """codes (N, latent) + attributes {"gender": "female", "age": 40, ...} -> (N, H, W, 3) uint8."""
        codes = np.asarray(codes, dtype=np.float32)
        if codes.ndim != 2 or codes.shape[1] != self.method.cfg.latent:
            raise ValueError(f"codes must have shape (N, {self.method.cfg.latent}), not {codes.shape}")

        def render(batch: np.ndarray) -> np.ndarray:  # (B, latent) -> (B, S, S, 3) uint8
            labels, unspecified = self.attribute_tensors(attributes, len(batch))
            return to_uint8_images(self.method.decode(torch.from_numpy(batch).to(self.method.device), labels, unspecified))

        s = self.image_size
        return self.map_rows(codes, render, (s, s, 3), np.uint8)

    def conceal(self, images: np.ndarray, as_: dict[str, Any]) -> np.ndarray:
        """Re-render faces with the chosen attributes: decode(encode(images), as_)."""
        return self.decode(self.encode(images), as_)

    def apply(self, images: np.ndarray, as_: dict[str, Any] | None = None) -> np.ndarray:
        return self.conceal(images, as_ or {})

    def check_options(self, as_: dict[str, Any] | None = None) -> None:
        self.attribute_tensors(as_ or {}, 1)


