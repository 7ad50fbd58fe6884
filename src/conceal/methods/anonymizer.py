"""Anonymizer: AIA, "Toward Privacy and Utility Preserving Image Representation" (Mosallanezhad et al., 2020).

The released representation g is the code of a grayscale autoencoder. Two other networks judge it:
- an adversary (eq. 6: one tanh hidden layer, sigmoid output) that infers the private attribute
  (gender) from g, trained with BCE;
- a Siamese network (three conv layers of 4, 8, 8 channels, FC -> 500 -> 128 embedding) for the
  utility task, 1-to-1 face verification, trained with the contrastive loss of eq. 7.

Schedule, as the paper's, and a pure function of the step number so a resumed run is exact:
- steps < ``pretrain_steps``: each component learns on its own: the autoencoder on L_AE, the adversary
  on detached codes, the Siamese network on detached reconstructions (no gradient crosses components);
- afterwards the autoencoder is fine-tuned on L_AE + α·L_Siamese − β·L_Adv, while the adversary keeps
  training on the current codes before every autoencoder update (alternating updates), so the encoder
  always faces an adversary that has caught up with it rather than a frozen one it can learn to fool.

Choices the paper leaves open, made here:
- The Siamese network reads the decoder's reconstruction of g (a 1-channel image), as the paper's
  Siamese network takes images; gradients flow through the decoder into g, so the representation must
  keep what tells people apart.
- Verification pairs come from each random training batch: every image is paired with a shifted,
  mirrored copy of itself (a positive that always exists), plus every pair of images whose identities
  collide in the batch (a positive across photos) and every other pair (a negative; an unknown identity
  counts as someone else).
  Positive and negative terms are averaged separately and summed, so the ~B²/2 negatives do not drown
  the ~B positives. With plain shuffling a batch of 64 LFW faces holds ~21 photo pairs of one person,
  13 of them of the most photographed man; ``train.faces_per_identity = 4`` builds batches of 4 faces per person instead (measured on
  LFW with the Original's fixed reconstructions: the paper's network 0.70-0.75 verification accuracy
  either way, a wider one (32, 64, 128; FC 256) with identity batches 0.77-0.78 -- see
  benchmarks/anonymizer_utility_network.md and models/anonymizer-lfw-wide-leace).
  The shifted copy is reconstructed without gradient: it is a target, and a second training pass through
  the decoder would double the cost of a step.
- Every variant trains the adversary and the Siamese network, so their validation numbers (how much
  gender the training adversary reads, how well the Siamese network verifies) compare across variants;
  in ``original`` they simply never push back on the autoencoder.
- The Siamese network pools after each conv (like the encoder); unpooled, its FC layer would hold
  8·64·64·500 = 16M weights at 64 px.

Measured on synthetic faces (32 px, 100 pretraining + 200 fine-tuning steps, 5 seeds, a fresh logistic
regression on standardised codes of 600 unseen faces, identity-disjoint halves; on LFW:
benchmarks/anonymizer_compare.md): the paper's objective fools its own adversary but does not hide gender
from a fresh attacker.
Original 0.76-0.80 balanced accuracy, AIA 0.79-0.87, AIA without utility 0.79-0.82; verification
(Siamese embeddings, threshold fitted on other people) 0.79-0.81 for Original, 0.70-0.73 for AIA. In
shorter exploratory runs, β of 0.1 or 1, five adversary updates per step, a Linear bottleneck (code_size
64), a maximum-entropy ("confusion") objective or a standardised adversary input did not change that
reliably either: the encoder keeps gender and moves it where the online adversary is not looking.

Levers against a data-rich attacker (issue 20; the blocks of ``independence.py``, shared with the concealer),
each off at weight 0 and active from fine-tuning on, in every variant:
- ``critics``: an ensemble of code critics on g with staggered restarts (Wu et al., ECCV 2018); the encoder
  confuses the strongest (``critics_weight``); they read the private label;
- ``image_critics``: the same ensemble of small CNNs on the reconstruction, which is released too
  (``image_critics_weight``); they learn only from detached reconstructions, so they never move the autoencoder;
- ``hsic_weight``: the normalised HSIC between g and the private label, non-adversarial.

Baselines: ``variant = "original"`` (plain autoencoder, α = β = 0), ``"aia_no_utility"`` (α = 0), and the
paper's Random baseline, ``random_baseline(codes, seed)``, applied to released codes after the fact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import setting
from ..data.schema import LabelSchema
from .base import Batch, Method, ModelAPI, ReleaseGraph
from .blocks import AttributeHeads, conv_pool_stack
from .independence import CriticEnsemble, hsic, image_critic

VARIANTS = ("aia", "original", "aia_no_utility")
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights: RGB -> gray


@dataclass
class AnonymizerConfig:
    variant: str = setting("aia", choices=VARIANTS)  # aia | original (plain autoencoder, α = β = 0) | aia_no_utility (α = 0)
    private: str = "gender"  # the label the adversary must not infer from g
    encoder_widths: tuple[int, ...] = setting((8, 12), at_least=1)  # conv -> LeakyReLU -> avg-pool blocks; each halves the side
    code_size: int | None = setting(None, at_least=1)  # Linear from the flattened feature map to g; None: g is the flattened map
    decoder_widths: tuple[int, ...] = setting((256, 128), at_least=1)  # conv -> LeakyReLU -> upsample blocks, one per encoder block
    adversary_hidden: int = setting(100, at_least=1)  # tanh units of the adversary (eq. 6)
    siamese_widths: tuple[int, ...] = setting((4, 8, 8), at_least=1)
    siamese_hidden: int = setting(500, at_least=1)
    embedding: int = setting(128, at_least=1)
    margin: float = setting(2.0, above=0)  # m of the contrastive loss (eq. 7): negatives are pushed at least this far apart
    shift: int = setting(2, at_least=0)  # pixels the positive copy is shifted by (at any image size)
    alpha: float = setting(0.5, at_least=0)  # weight of L_Siamese in fine-tuning (forced to 0 by variants original, aia_no_utility)
    beta: float = setting(0.5, at_least=0)  # weight of −L_Adv in fine-tuning (forced to 0 by variant original)
    pretrain_steps: int = setting(500, at_least=0)  # steps in which every component learns on its own; then fine-tuning
    eraser_rank: int = setting(0, at_least=0)  # rank of the post-hoc code eraser fitted by `conceal erase`; 0 = none
    critics: int = setting(0, at_least=0)  # code critics on g (an ensemble with restarts); 0 = none
    critics_weight: float = setting(0.0, at_least=0)  # weight of the strongest code critic's confusion on the encoder
    critics_restart_every: int = setting(0, at_least=0)  # steps between restarts of one critic (staggered, code and image); 0 = never
    image_critics: int = setting(0, at_least=0)  # CNN critics on the released reconstruction; 0 = none
    image_critics_weight: float = setting(0.0, at_least=0)  # weight of the strongest image critic's confusion on the autoencoder
    image_critic_widths: tuple[int, ...] = setting((16, 32, 64), at_least=1)  # conv -> LeakyReLU -> avg-pool blocks of each image critic
    hsic_weight: float = setting(0.0, at_least=0)  # weight of the normalised HSIC between g and the private label

    @classmethod
    def tiny(cls) -> "AnonymizerConfig":
        # pretrain_steps=0: step 0 already fine-tunes, so the adversarial and Siamese terms reach the encoder.
        return cls(encoder_widths=(4, 6), decoder_widths=(8, 4), code_size=16, adversary_hidden=8, siamese_hidden=16,
                   embedding=8, pretrain_steps=0, critics=2, critics_weight=1.0, critics_restart_every=2, image_critics=2,
                   image_critics_weight=1.0, image_critic_widths=(4, 4), hsic_weight=1.0)


def gray(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) luminance in [0, 1]."""
    weights = images.new_tensor(LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def conv_upsample_stack(in_channels: int, widths: tuple[int, ...], out_channels: int) -> nn.Sequential:
    """(B, C, h, w) -> (B, out_channels, h * 2**n, w * 2**n) in [0, 1].

    3x3 conv -> LeakyReLU -> 2x upsampling per width, then a 3x3 conv to ``out_channels`` and a sigmoid.
    """
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.LeakyReLU(0.2, True), nn.Upsample(scale_factor=2)]
        in_channels = width
    layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.Sigmoid()]
    return nn.Sequential(*layers)


def shifted_mirror(images: torch.Tensor, shift: int) -> torch.Tensor:
    """(B, C, H, W) -> the same images mirrored and moved by ``shift`` px (edges replicated).

    Image i moves diagonally in direction i % 4, so a batch holds four kinds of shift; deterministic, so
    a resumed run sees the same positives.
    """
    h, w = images.shape[-2:]
    padded = F.pad(images.flip(3), (shift, shift, shift, shift), mode="replicate")
    out = torch.empty_like(images)
    for k, (dy, dx) in enumerate(((0, 0), (0, 2 * shift), (2 * shift, 0), (2 * shift, 2 * shift))):
        out[k::4] = padded[k::4, :, dy : dy + h, dx : dx + w]
    return out


def pair_masks(identity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """identity (B,) long, -1 = unknown -> (same, different) (B, B) bool over pairs i < j of distinct images.

    Same: both identities known and equal. Different: everything else. An image of unknown identity is
    taken to show someone other than every other image: in a random batch a collision is rare and costs a
    little noise, whereas leaving such images out would give a dataset without identities (UTKFace) no
    negatives at all, and the Siamese network would collapse to one point.
    """
    upper = torch.ones(len(identity), len(identity), dtype=torch.bool, device=identity.device).triu(1)
    same = (identity[:, None] == identity[None, :]) & (identity >= 0)[:, None]
    return upper & same, upper & ~same


def contrastive_loss(
    anchors: torch.Tensor, views: torch.Tensor, identity: torch.Tensor, margin: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 7 over a batch's pairs: ½·D² for the same person, ½·max(0, m − D)² for different people.

    anchors (B, E): embeddings of the images; views (B, E): of their shifted mirrors (positive i <-> i).
    Returns the loss (positive mean + negative mean) and the distances per pair kind, for metrics.
    """
    eps = 1e-9  # keeps the sqrt differentiable at D = 0
    view_dist = ((anchors - views).pow(2).sum(1) + eps).sqrt()  # (B,)
    all_dist = ((anchors[:, None] - anchors[None, :]).pow(2).sum(2) + eps).sqrt()  # (B, B)
    same, different = pair_masks(identity)
    positive = torch.cat([view_dist, all_dist[same]])  # (B + P,)
    negative = all_dist[different]  # (N,)
    pos_term = 0.5 * positive.pow(2).mean()
    neg_term = 0.5 * (margin - negative).clamp_min(0).pow(2).mean() if len(negative) else positive.sum() * 0.0
    return pos_term + neg_term, {"positive": positive, "negative": negative}


def random_baseline(codes: np.ndarray, seed: int = 0) -> np.ndarray:
    """The paper's Random baseline: codes scaled to [0, 1], then half of all entries replaced by U[0, 1].

    codes (N, d) -> (N, d) float32. Each feature is min-max scaled over the given codes, so the noise has
    the range of the values it replaces; exactly ``codes.size // 2`` entries are replaced.
    """
    codes = np.asarray(codes, dtype=np.float64)
    lo, hi = codes.min(axis=0), codes.max(axis=0)
    scaled = (codes - lo) / np.where(hi > lo, hi - lo, 1.0)  # a constant feature becomes 0
    rng = np.random.default_rng(seed)
    replaced = rng.choice(codes.size, size=codes.size // 2, replace=False)
    flat = scaled.reshape(-1)
    flat[replaced] = rng.uniform(0.0, 1.0, size=len(replaced))
    return flat.reshape(codes.shape).astype(np.float32)


class SiameseNet(nn.Module):
    """(B, 1, H, W) -> (B, embedding): the utility network of the paper (conv 4, 8, 8; FC 500; 128)."""

    def __init__(self, image_size: int, widths: tuple[int, ...], hidden: int, embedding: int):
        super().__init__()
        self.features = conv_pool_stack(1, widths)
        side = image_size // 2 ** len(widths)
        self.head = nn.Sequential(nn.Linear(widths[-1] * side**2, hidden), nn.LeakyReLU(0.2, True), nn.Linear(hidden, embedding))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))


class AnonymizerGraph(ReleaseGraph):
    """images (N, 3, S, S) -> released reconstruction (N, 3, S, S) (gray, replicated), codes g (N, code_dim)."""

    def forward(self, images: torch.Tensor):
        codes = self.method.release_codes(images)  # g (after the eraser, if any): what `conceal encode` releases
        # expand() would export as a view the runtime may not copy; repeat gives a real (N, 3, S, S).
        return self.method.decode(codes).repeat(1, 3, 1, 1), codes


class AnonymizerNet(Method):
    """The anonymizer's network: the paper's AIA (autoencoder, gender adversary, Siamese utility network)."""

    name = "anonymizer"
    Config = AnonymizerConfig
    Graph = AnonymizerGraph
    releases = ("codes", "images")
    fastest_backend = "onnxruntime"  # with the phase-conv decoder: see benchmarks/PROFILING.md
    shown_losses = ("loss", "recon", "siamese", "adversary")
    cli_options = {"alpha": "weight of the utility (Siamese) loss (the paper's α)",
                   "beta": "weight of the adversary's loss (the paper's β)"}
    audit = "conceal.audit.anonymizer:audit_anonymizer"

    def __init__(self, cfg: AnonymizerConfig, schema: LabelSchema, image_size: int = 64):
        super().__init__(cfg, schema, image_size)
        if cfg.variant not in VARIANTS:
            raise ValueError(f"anonymizer variant must be one of {', '.join(VARIANTS)}, not {cfg.variant!r}")
        if len(cfg.decoder_widths) != len(cfg.encoder_widths):
            raise ValueError(
                f"anonymizer needs one decoder block per encoder block ({len(cfg.encoder_widths)}), not {len(cfg.decoder_widths)}"
            )
        for widths in (cfg.encoder_widths, cfg.siamese_widths) + ((cfg.image_critic_widths,) if cfg.image_critics else ()):
            if image_size % 2 ** len(widths):
                raise ValueError(f"anonymizer image size must be a multiple of {2 ** len(widths)}, not {image_size}")
        self.concealed = schema.subset([cfg.private])  # KeyError names the dataset's labels
        if self.concealed[cfg.private].kind == "continuous":
            raise ValueError(f"anonymizer: the private label must be binary or categorical; {cfg.private!r} is continuous")

        side = image_size // 2 ** len(cfg.encoder_widths)
        self.feature_shape = (cfg.encoder_widths[-1], side, side)  # (C, h, w) of the encoder's last map
        features = cfg.encoder_widths[-1] * side**2
        self.encoder = conv_pool_stack(1, cfg.encoder_widths)
        self.to_code = nn.Linear(features, cfg.code_size) if cfg.code_size else nn.Identity()
        self.from_code = (
            nn.Sequential(nn.Linear(cfg.code_size, features), nn.LeakyReLU(0.2, True)) if cfg.code_size else nn.Identity()
        )
        self.decoder = conv_upsample_stack(cfg.encoder_widths[-1], cfg.decoder_widths, 1)
        self.code_dim = cfg.code_size or features
        self.adversary = nn.Sequential(  # eq. 6: tanh hidden layer, then a logit per class (sigmoid + BCE for binary)
            nn.Linear(self.code_dim, cfg.adversary_hidden), nn.Tanh(), AttributeHeads(cfg.adversary_hidden, self.concealed)
        )
        self.siamese = SiameseNet(image_size, cfg.siamese_widths, cfg.siamese_hidden, cfg.embedding)
        self.code_critics = (
            CriticEnsemble(self.code_dim, self.concealed, cfg.critics, restart_every=cfg.critics_restart_every)
            if cfg.critics else None
        )
        self.image_critics = (
            CriticEnsemble(0, self.concealed, cfg.image_critics, restart_every=cfg.critics_restart_every,
                           make_critic=lambda: image_critic(1, image_size, self.concealed, cfg.image_critic_widths))
            if cfg.image_critics else None
        )
        self.init_eraser()

    # --- the model -----------------------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> g (B, code_dim)."""
        return self.to_code(self.encoder(gray(images)).flatten(1))

    def raw_codes(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """g (B, code_dim) -> reconstruction (B, 1, H, W) in [0, 1]."""
        # codes.shape[0], not len(codes): the ONNX exporter traces shape[0] as the dynamic batch, len() as a constant.
        return self.decoder(self.from_code(codes).reshape(-1, *self.feature_shape))  # -1: an exported graph takes an empty batch

    def forward(self, images: torch.Tensor, labels: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, 3, H, W) -> the released image: the reconstruction, gray in 3 channels (B, 3, H, W).

        ``labels`` is ignored (the decoder is not conditioned); accepted so callers can treat methods alike.
        """
        return self.decode(self.release_codes(images)).expand(-1, 3, -1, -1)

    @property
    def weights(self) -> tuple[float, float]:
        """(α, β) of the fine-tuning objective after the variant's switches."""
        alpha = 0.0 if self.cfg.variant in ("original", "aia_no_utility") else self.cfg.alpha
        beta = 0.0 if self.cfg.variant == "original" else self.cfg.beta
        return alpha, beta

    def finetuning(self, step: int) -> bool:
        return step >= self.cfg.pretrain_steps

    # --- training ------------------------------------------------------------------------------

    # Parts with an optimizer of their own: the autoencoder's never updates them, and theirs never update it.
    OWN_OPTIMIZER = ("adversary", "code_critics", "image_critics")

    def configure_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        # The Siamese network shares the autoencoder's optimizer: both minimise L_Siamese, never against each other.
        rest = [p for n, p in self.named_parameters() if n.split(".")[0] not in self.OWN_OPTIMIZER]
        opts = {
            "autoencoder": torch.optim.Adam(rest, lr=lr),
            "adversary": torch.optim.Adam(self.adversary.parameters(), lr=lr),
        }
        for part in ("code_critics", "image_critics"):
            if getattr(self, part) is not None:
                opts[part] = torch.optim.Adam(getattr(self, part).parameters(), lr=lr)
        return opts

    def _adversary_loss(self, codes: torch.Tensor, batch: Batch) -> torch.Tensor:
        """BCE (CE) of the adversary reading the private label from codes (B, d); unknown labels are skipped."""
        private = {self.cfg.private: batch["labels"][self.cfg.private]}
        return self.adversary[-1].losses(self.adversary(codes), private)[self.cfg.private]

    def _losses(self, batch: Batch, detach_utility: bool) -> dict[str, torch.Tensor]:
        """Codes, reconstruction and the three losses of a batch (the adversary's on detached codes).

        ``detach_utility``: the Siamese network reads detached reconstructions (it learns on its own).
        """
        x = batch["image"]
        target = gray(x)  # (B, 1, H, W)
        codes = self.encode(x)  # (B, d)
        recon = self.decode(codes)  # (B, 1, H, W)
        with torch.no_grad():
            mirrored = self.decode(self.encode(shifted_mirror(x, self.cfg.shift)))  # (B, 1, H, W), a target
        shown = recon.detach() if detach_utility else recon
        embeddings = self.siamese(torch.cat([shown, mirrored]))  # (2B, E)
        siamese, distances = contrastive_loss(*embeddings.chunk(2), batch["identity"], self.cfg.margin)
        adversary_on_detached = self._adversary_loss(codes.detach(), batch)
        return {
            "codes": codes,
            "recon_x": recon,
            "recon": F.binary_cross_entropy(recon, target),
            "siamese": siamese,
            "adversary": adversary_on_detached,
            **distances,
        }

    def training_step(self, batch: Batch, optimizers: dict, step: int) -> dict[str, float]:
        finetune = self.finetuning(step)
        alpha, beta = self.weights if finetune else (0.0, 0.0)
        out = self._losses(batch, detach_utility=alpha == 0)

        # 1. The adversary catches up with the current codes (every step, every phase).
        optimizers["adversary"].zero_grad(set_to_none=True)
        out["adversary"].backward()
        optimizers["adversary"].step()

        # 2. The autoencoder (and the Siamese network, on its own loss or on the joint one).
        # With α = 0 the Siamese network read detached reconstructions, so its loss trains it alone (weight 1).
        loss = out["recon"] + (alpha or 1.0) * out["siamese"]
        if beta:
            # Against the just-updated adversary, held fixed: the encoder maximises its loss, it does not train it.
            self.adversary.requires_grad_(False)
            fooled = self._adversary_loss(out["codes"], batch)
            self.adversary.requires_grad_(True)
            loss = loss - beta * fooled
        logs: dict[str, float] = {}
        if finetune:
            loss = loss + self._independence_losses(out, batch, optimizers, step, logs)
        optimizers["autoencoder"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["autoencoder"].step()
        return {
            "loss": loss.item(),
            "recon": out["recon"].item(),
            "siamese": out["siamese"].item(),
            "adversary": out["adversary"].item(),
            "finetune": float(finetune),
            **logs,
        }

    def _independence_losses(self, out: dict, batch: Batch, optimizers: dict, step: int, logs: dict) -> torch.Tensor:
        """The issue-20 levers' terms for the autoencoder's loss (each critic ensemble takes its own step first)."""
        private = {self.cfg.private: batch["labels"][self.cfg.private]}
        total = out["recon"].new_zeros(())
        if self.code_critics is not None:  # codes g (B, d)
            confusion, critic_logs = self.code_critics.update(out["codes"], private, step, optimizers["code_critics"])
            total = total + self.cfg.critics_weight * confusion
            logs.update(critic_logs)
        if self.image_critics is not None:  # reconstructions (B, 1, S, S): released too
            confusion, critic_logs = self.image_critics.update(out["recon_x"], private, step, optimizers["image_critics"])
            total = total + self.cfg.image_critics_weight * confusion
            logs.update({f"image_{k}": v for k, v in critic_logs.items()})
        if self.cfg.hsic_weight > 0:
            dependence = hsic(out["codes"], private, self.concealed)
            total = total + self.cfg.hsic_weight * dependence
            logs["hsic"] = dependence.item()
        return total

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        out = self._losses(batch, detach_utility=True)
        mse = (out["recon_x"] - gray(batch["image"])).pow(2).mean(dim=(1, 2, 3))
        logs = {
            "recon": out["recon"].item(),
            "psnr": (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean().item(),
            "siamese": out["siamese"].item(),
            "adversary": out["adversary"].item(),
        }
        if len(out["negative"]):  # verification at the threshold m/2, balanced over same/different pairs
            true_positive = (out["positive"] < self.cfg.margin / 2).float().mean()
            true_negative = (out["negative"] >= self.cfg.margin / 2).float().mean()
            logs["verify_bacc"] = (0.5 * (true_positive + true_negative)).item()
        y = batch["labels"][self.cfg.private]
        known = ~torch.isnan(y)
        if known.any():
            # How often the training adversary reads the private label from g: a training signal only;
            # the audit's fresh attackers give the real numbers.
            predicted = self.adversary[-1].predict(self.adversary(out["codes"]))[self.cfg.private]
            logs["adversary_acc"] = (predicted[known] == y[known]).float().mean().item()
        return logs


class Anonymizer(ModelAPI):
    """The user-facing API of a trained anonymizer (AnonymizerNet).

    >>> model = Anonymizer.load("runs/anonymizer-lfw")
    >>> codes = model.encode(images)       # (N, d) float32: the released representation g
    >>> faces = model.apply(images)        # (N, H, W, 3) uint8: its reconstruction, gray
    >>> emb = model.embed(images)          # (N, 128) Siamese embeddings of the reconstructions (verification)

    Images are (N, H, W, 3) uint8 at the model's size (``image_size``), or one (H, W, 3) image.
    """

    method_class = AnonymizerNet
    method: AnonymizerNet

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> Siamese embeddings (N, E) float32 of the reconstructions: the utility task's view."""
        net = self.method
        return self.map_batches(images, lambda x: net.siamese(net.decode(net.release_codes(x))).float().cpu().numpy(), (net.cfg.embedding,))

