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

Concealer v2 (issue 14), all off by default (a config without them trains and loads as before):
- sharp decodes: ``l1_weight`` (summed absolute error beside the summed squared one), and a patch
  discriminator (``discriminator.py``: spectral norm, hinge loss) whose ``adversarial_weight`` and
  ``feature_matching_weight`` terms push decodes off the blurry mean; ``disc_conditional`` makes it a
  projection discriminator on the labels, so a decode must look like the group it was asked to be;
- independence beyond one critic (``independence.py``): an ensemble of ``critics`` code critics with
  staggered restarts every ``critics_restart_every`` steps (Wu et al., ECCV 2018), the encoder pushed
  against the strongest one, and an ``hsic_weight`` penalty;
- depth from the image size: 4 stride-2 stages up to 64 px (as before), one more per doubling (5 at 128),
  so the decoder always starts from a 4x4 map; the training classifier reads decodes at 64 px at most;
- ``decoder_upsampling = "nearest"``: resize-conv stages instead of transposed convs (no checkerboard).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import setting
from ..data.schema import LabelSchema
from .base import Batch, Method, ModelAPI, ReleaseGraph, to_uint8_images
from .blocks import (
    UPSAMPLING, AttributeHeads, LabelCodec, conv_decoder, conv_encoder, independence_mmd, laplacian_variance, reverse_gradient,
)
from .discriminator import PatchDiscriminator, feature_matching_loss, hinge_d_loss, hinge_g_loss
from .independence import CriticEnsemble, hsic

N_DOWN = 4  # stride-2 stages up to 64 px (64 -> 4x4 feature maps); see ``n_down``
CLASSIFIER_SIZE = 64  # the training classifier reads decodes at this size at most (attributes need no more)


def n_down(image_size: int) -> int:
    """Stride-2 stages of the encoder (and decoder) at ``image_size``: 4 up to 64 px, one more per doubling (5 at 128)."""
    return max(N_DOWN, (image_size // 4).bit_length() - 1)


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
    # --- v2 levers (issue 14); the defaults are the 64-px models' behaviour ---
    l2_weight: float = setting(1.0, at_least=0)  # summed squared error (the VAE's Gaussian likelihood)
    l1_weight: float = setting(0.0, at_least=0)  # summed absolute error: its minimiser is a median, less blurry than L2's mean
    # Discriminator terms are means over patches / features; they are multiplied by the pixel count (3·S·S) so
    # that a weight compares with a per-pixel error of the summed reconstruction (0.01 ~ a per-pixel MSE of 0.01).
    adversarial_weight: float = setting(0.0, at_least=0)  # hinge loss of a patch discriminator on decodes; 0 and no feature matching = no discriminator
    feature_matching_weight: float = setting(0.0, at_least=0)  # L1 between the discriminator's features of a decode and of its input
    disc_width: int = setting(32, at_least=1)  # channels of the discriminator's first conv; doubles per stage
    disc_down: int = setting(3, at_least=1)  # its stride-2 stages (3: 38-px patches)
    disc_conditional: bool = False  # projection discriminator on the concealed labels
    disc_start: int = setting(0, at_least=0)  # step from which decodes are pushed by the discriminator (it learns from step 0)
    critics: int = setting(0, at_least=0)  # size of the code-critic ensemble (0 = none)
    critics_weight: float = setting(0.0, at_least=0)  # weight of the strongest critic's confusion loss on the encoder
    critics_restart_every: int = setting(0, at_least=0)  # steps between restarts of one critic (staggered); 0 = never
    hsic_weight: float = setting(0.0, at_least=0)  # weight of the normalised HSIC between codes and labels
    # the decoder's 2x stages: "transpose" (4x4 stride-2 transposed convs: the 64-px models; a checkerboard at 128 px)
    # or "nearest" (nearest 2x upsampling + 3x3 conv, resize-conv: no checkerboard; ~2.25x the decoder's multiply-adds)
    decoder_upsampling: str = setting("transpose", choices=UPSAMPLING)

    @classmethod
    def tiny(cls) -> "ConcealerConfig":
        return cls(latent=8, width=8, critic_weight=1.0, classifier_weight=1.0, l1_weight=1.0, adversarial_weight=0.01,
                   feature_matching_weight=0.1, disc_width=4, disc_down=2, disc_conditional=True, critics=2,
                   critics_weight=1.0, critics_restart_every=2, hsic_weight=1.0)


class ImageAttributeClassifier(nn.Module):
    """Small CNN: (B, 3, H, W) -> attribute outputs. Trained on real faces only; judges decodes in training."""

    def __init__(self, schema: LabelSchema, image_size: int, width: int = 32):
        super().__init__()
        self.size = min(image_size, CLASSIFIER_SIZE)
        self.features = conv_encoder(3, width, N_DOWN)
        feat = min(width * 2 ** (N_DOWN - 1), 512) * (self.size // 2**N_DOWN) ** 2
        self.dropout = nn.Dropout(0.3)
        self.heads = AttributeHeads(feat, schema)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-1] != self.size:  # (B, 3, S, S) -> (B, 3, 64, 64): area = box filter, no aliasing
            x = F.interpolate(x, size=(self.size, self.size), mode="area")
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
    shown_losses = ("loss", "recon", "kl", "critic", "mmd", "cls_decoded", "disc", "confusion")
    cli_options = {"latent": "latent size (48 or 100 in the paper)"}
    audit = "conceal.audit.concealer:audit_concealer"
    audit_release = "conceal.audit.concealer:release_options"  # every face rendered as one fixed target

    @property
    def fastest_backend(self) -> str:
        # Measured side by side (benchmarks/PROFILING.md §8, batch 256, 2 threads): the resize-conv decoder
        # (decoder_upsampling = "nearest", the 128-px model) reads 73% of the matmul peak on onnxruntime against
        # 49% on torch, which spends a quarter of its time writing the upsampled maps; the transposed-conv
        # decoders of the 64-px models are faster on torch (§3-§7).
        return "onnxruntime" if self.cfg.decoder_upsampling == "nearest" else "torch"

    def __init__(self, cfg: ConcealerConfig, schema: LabelSchema, image_size: int = 64):
        super().__init__(cfg, schema, image_size)
        depth = n_down(image_size)
        if image_size % 2**depth:
            raise ValueError(f"concealer image size must be a multiple of {2**depth}, not {image_size}")
        self.concealed = schema.subset(list(cfg.conceal))  # KeyError names the dataset's labels
        top = min(cfg.width * 2 ** (depth - 1), 512)
        self.side = image_size // 2**depth
        self.encoder = conv_encoder(3, cfg.width, depth)
        self.to_moments = nn.Linear(top * self.side**2, 2 * cfg.latent)  # -> (μ, log σ²)
        self.codec = LabelCodec(self.concealed)
        self.from_latent = nn.Sequential(
            nn.Linear(cfg.latent + self.codec.dim, top * self.side**2), nn.ReLU(True)
        )
        self.decoder = conv_decoder(3, cfg.width, depth, upsampling=cfg.decoder_upsampling)
        self.critic = (
            nn.Sequential(nn.Linear(cfg.latent, 256), nn.LeakyReLU(0.2, True), nn.Linear(256, 256), nn.LeakyReLU(0.2, True), AttributeHeads(256, self.concealed))
            if cfg.critic_weight > 0
            else None
        )
        self.classifier = ImageAttributeClassifier(self.concealed, image_size) if cfg.classifier_weight > 0 else None
        uses_disc = cfg.adversarial_weight > 0 or cfg.feature_matching_weight > 0
        self.discriminator = (
            PatchDiscriminator(cfg.disc_width, cfg.disc_down, self.codec.dim if cfg.disc_conditional else 0) if uses_disc else None
        )
        self.critic_ensemble = (
            CriticEnsemble(cfg.latent, self.concealed, cfg.critics, restart_every=cfg.critics_restart_every) if cfg.critics else None
        )
        self.code_dim = cfg.latent
        self.init_eraser()

    # --- the model -----------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> μ, log σ², each (B, latent)."""
        mu, logvar = self.to_moments(self.encoder(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def fold_layout_for_inference(self) -> int:
        """Inference-only rewrites (``blocks.fold_for_inference`` calls this; the model can then not be trained or
        saved, like the batch-norm fold): the encoder's last map is flattened in channels_last order and the decoder's
        first map unflattened into it, with ``to_moments``' input columns and ``from_latent``'s output rows permuted to
        match (three layout copies of each batch gone), and a fitted eraser becomes one affine map. -> how many."""
        from .blocks import FOLDED, FlattenChannelsLast, FoldedEraser, UnflattenChannelsLast, nchw_to_nhwc_index

        if getattr(self, "_layout_folded", False):
            return 0
        top, side = self.to_moments.in_features // self.side**2, self.side
        order = nchw_to_nhwc_index(top, side)
        with torch.no_grad():
            self.to_moments.weight.copy_(self.to_moments.weight[:, order])
            linear = self.from_latent[0]
            linear.weight.copy_(linear.weight[order])
            linear.bias.copy_(linear.bias[order])
        self.encoder.append(FlattenChannelsLast().eval())  # new modules start in training mode: inference only here
        self.decoder.insert(0, UnflattenChannelsLast().eval())
        for m in (self.encoder, self.decoder, self.from_latent):
            setattr(m, FOLDED, True)
        n = 3
        if self.eraser is not None:
            self.eraser = FoldedEraser(self.eraser).eval()
            n += 1
        self._layout_folded = True
        return n

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

    # Parts with an optimizer of their own: the VAE's never updates them, and theirs never update the VAE.
    OWN_OPTIMIZER = ("classifier", "discriminator", "critic_ensemble")

    def configure_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        vae = [p for n, p in self.named_parameters() if n.split(".")[0] not in self.OWN_OPTIMIZER]
        opts = {"vae": torch.optim.Adam(vae, lr=lr, betas=(0.5, 0.999))}
        if self.classifier is not None:
            opts["classifier"] = torch.optim.Adam(self.classifier.parameters(), lr=lr)
        if self.discriminator is not None:
            opts["discriminator"] = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
        if self.critic_ensemble is not None:
            opts["critics"] = torch.optim.Adam(self.critic_ensemble.parameters(), lr=lr)
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
        loss = self.cfg.l2_weight * recon + self.cfg.kl_weight * kl
        logs.update(recon=recon.item(), kl=kl.item())
        if self.cfg.l1_weight > 0:
            l1 = (recon_x - x).abs().sum(dim=(1, 2, 3)).mean()
            loss = loss + self.cfg.l1_weight * l1
            logs["l1"] = l1.item()

        if self.cfg.independence_weight > 0 and not frozen:
            mmd = independence_mmd(mu, y, self.concealed)
            loss = loss + self.cfg.independence_weight * mmd
            logs["mmd"] = mmd.item()

        if self.cfg.hsic_weight > 0 and not frozen:
            dependence = hsic(mu, y, self.concealed)
            loss = loss + self.cfg.hsic_weight * dependence
            logs["hsic"] = dependence.item()

        if self.critic_ensemble is not None and not frozen:
            # The critics learn from detached codes with their own optimizer; the encoder confuses the strongest.
            confusion, critic_logs = self.critic_ensemble.update(mu, y, step, optimizers["critics"])
            loss = loss + self.cfg.critics_weight * confusion
            logs.update(critic_logs)

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
            target_x = self.decode(z, target)
            t_loss = sum(self.classifier.heads.losses(self.classifier(target_x), target).values())
            self.classifier.requires_grad_(True)
            loss = loss + self.cfg.classifier_weight * t_loss
            logs["cls_decoded"] = t_loss.item()

        if self.discriminator is not None:
            # As many fakes as real faces: the reconstructions, or (with the classifier) the first half of them and
            # the second half of the shuffled-target decodes, each with the labels it was decoded with.
            half = len(x) // 2 if self.classifier is not None else len(x)
            fakes, fake_labels = recon_x, y
            if self.classifier is not None:
                fakes = torch.cat([recon_x[:half], target_x[half:]])
                fake_labels = {n: torch.cat([y[n][:half], target[n][half:]]) for n in y}
            loss = loss + self._discriminator_terms(x, y, fakes, fake_labels, half, optimizers["discriminator"], step, logs)

        optimizers["vae"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["vae"].step()
        logs["loss"] = loss.item()
        return logs

    def _condition(self, labels: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The projection discriminator's condition (B, codec.dim), a constant to it; None when unconditional."""
        return self.codec(labels).detach() if self.cfg.disc_conditional else None

    def _discriminator_terms(self, real: torch.Tensor, real_labels: dict, fakes: torch.Tensor, fake_labels: dict, n_recon: int,
                             optimizer: torch.optim.Optimizer, step: int, logs: dict) -> torch.Tensor:
        """One discriminator step on real (B, 3, S, S) vs detached fakes (B, 3, S, S), whose first ``n_recon`` rows
        reconstruct the first real ones; then the generator's adversarial + feature-matching terms (scaled per
        pixel; 0 before ``disc_start``) against the updated discriminator, whose parameters get no gradient from them."""
        disc = self.discriminator
        real_cond, fake_cond = self._condition(real_labels), self._condition(fake_labels)
        real_logits, _ = disc(real, real_cond)
        fake_logits, _ = disc(fakes.detach(), fake_cond)
        d_loss = hinge_d_loss(real_logits, fake_logits)
        optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        optimizer.step()
        logs.update(disc=d_loss.item(), disc_real=real_logits.mean().item(), disc_fake=fake_logits.mean().item())
        if step < self.cfg.disc_start:
            return fakes.new_zeros(())
        disc.requires_grad_(False)
        fake_logits, fake_features = disc(fakes, fake_cond)
        adversarial = hinge_g_loss(fake_logits)
        terms = self.cfg.adversarial_weight * adversarial
        logs["adversarial"] = adversarial.item()
        if self.cfg.feature_matching_weight > 0:
            with torch.no_grad():
                _, real_features = disc(real[:n_recon], None if real_cond is None else real_cond[:n_recon])
            matching = feature_matching_loss(real_features, [f[:n_recon] for f in fake_features])  # reconstructions only
            terms = terms + self.cfg.feature_matching_weight * matching
            logs["feature_matching"] = matching.item()
        disc.requires_grad_(True)
        return terms * real[0].numel()  # per pixel, as the summed reconstruction

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
            # variance of the Laplacian of decodes over that of their inputs (1 = as sharp; the 64-px model: ~0.13)
            "sharpness": (laplacian_variance(recon_x).mean() / laplacian_variance(x).mean().clamp_min(1e-12)).item(),
            # the same after a 2x2 average pool of both: a transposed conv's checkerboard cannot inflate this one
            "sharpness_pooled": (laplacian_variance(recon_x, 2).mean() / laplacian_variance(x, 2).mean().clamp_min(1e-12)).item(),
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
        if self.onnx is not None:  # the release graph (encode, then decode as the target) on onnxruntime
            return self.apply_onnx(images, as_=as_ or {})
        return self.conceal(images, as_ or {})

    def check_options(self, as_: dict[str, Any] | None = None) -> None:
        self.attribute_tensors(as_ or {}, 1)


