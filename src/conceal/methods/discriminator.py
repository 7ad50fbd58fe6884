"""A patch discriminator for sharp decodes: spectral norm, hinge loss, feature matching, projection conditioning.

Pixel losses (L2, L1) are minimised by the mean of all faces a code could have come from, which is a
blurry face; a discriminator that judges local patches as real or decoded penalises exactly that blur.
What the field uses without pretrained networks (which could not be shipped here):

- PatchGAN (Isola et al., pix2pix 2017): a few strided convs, one logit per overlapping patch;
- spectral normalisation of every weight (Miyato et al., 2018), which keeps the discriminator 1-Lipschitz
  enough for a small batch on a CPU to train stably, with no batch norm;
- the hinge loss (Lim & Ye 2017; Miyato et al.);
- feature matching (Salimans et al. 2016; pix2pixHD, Wang et al. 2018): the decode's discriminator
  features must match those of its own input, a dense, paired signal that trains far faster than the
  adversarial term alone;
- optional projection conditioning (Miyato & Koyama, 2018): logit += <embed(labels), features>, so a
  decode must look like a face of the group it was asked to be, not just like a face.

The module is method-agnostic (images and an optional condition vector in), for any method that renders faces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """(B, 3, S, S) images in [0, 1] (+ condition (B, cond_dim)) -> patch logits (B, 1, S/2**n_down, S/2**n_down)
    and the feature maps after each stage (for feature matching).

    Stage i: a spectral-normed 4x4 stride-2 conv to min(width * 2**i, 8 * width) channels, LeakyReLU 0.2; then a
    3x3 conv to one logit per patch. A logit sees a 38-px patch at n_down = 3 (78 px at 4).
    """

    def __init__(self, width: int = 32, n_down: int = 3, cond_dim: int = 0):
        super().__init__()
        stages, ch = [], 3
        for i in range(n_down):
            out = min(width * 2**i, 8 * width)
            stages.append(nn.Sequential(spectral_norm(nn.Conv2d(ch, out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, True)))
            ch = out
        self.stages = nn.ModuleList(stages)
        self.to_logit = spectral_norm(nn.Conv2d(ch, 1, 3, padding=1))
        # Projection: a condition vector -> one weight per feature channel; logit += <that, feature> at each patch.
        self.embed = spectral_norm(nn.Linear(cond_dim, ch, bias=False)) if cond_dim else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, features = x * 2 - 1, []  # [-1, 1], centred
        for stage in self.stages:
            h = stage(h)
            features.append(h)
        logits = self.to_logit(h)  # (B, 1, h, w)
        if self.embed is not None:
            if cond is None:
                raise ValueError("this discriminator is conditional: pass the condition vector")
            logits = logits + (self.embed(cond)[:, :, None, None] * h).sum(1, keepdim=True)
        return logits, features


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean relu(1 - D(real)) + mean relu(1 + D(fake)); 2 at a blind D, 0 once it separates by a margin."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge loss: -mean D(fake)."""
    return -fake_logits.mean()


def feature_matching_loss(real_features: list[torch.Tensor], fake_features: list[torch.Tensor]) -> torch.Tensor:
    """Mean over stages of the L1 distance between a decode's discriminator features and its input's
    (the input's detached: only the generator is pulled)."""
    return torch.stack([(f - r.detach()).abs().mean() for r, f in zip(real_features, fake_features)]).mean()
