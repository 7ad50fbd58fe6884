"""Building blocks shared by the methods: conv stacks, batch-norm folding, label encoding, attribute heads, gradient reversal."""

from __future__ import annotations

import itertools

import numpy as np

import torch
import torch.nn.functional as F
from torch import nn

from ..data.schema import LabelSchema


CONTINUOUS_SCALE = 10.0


def conv_encoder(in_channels: int, width: int, n_down: int, max_channels: int = 512) -> nn.Sequential:
    """(B, C, H, W) -> (B, width * 2**(n_down-1), H / 2**n_down, W / 2**n_down): strided 4x4 convs, BN, LeakyReLU."""
    layers: list[nn.Module] = []
    ch = in_channels
    for i in range(n_down):
        out = min(width * 2**i, max_channels)
        layers += [nn.Conv2d(ch, out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, True)]
        ch = out
    return nn.Sequential(*layers)


UPSAMPLING = ("transpose", "nearest")  # conv_decoder's 2x stages


def upsample_stage(in_channels: int, out_channels: int, upsampling: str = "transpose") -> list[nn.Module]:
    """One 2x stage of ``conv_decoder``, then BN + ReLU. ``transpose``: a 4x4 stride-2 transposed conv (its uneven
    kernel overlap paints a checkerboard, Odena et al. 2016); ``nearest``: nearest 2x upsampling then a 3x3 conv
    (resize-conv: every output pixel sees the same number of taps, so no checkerboard; ~2.25x the multiply-adds)."""
    if upsampling == "transpose":
        conv: list[nn.Module] = [nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)]
    elif upsampling == "nearest":
        conv = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)]
    else:
        raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLING)}, not {upsampling!r}")
    return conv + [nn.BatchNorm2d(out_channels), nn.ReLU(True)]


def conv_decoder(out_channels: int, width: int, n_up: int, max_channels: int = 512, upsampling: str = "transpose") -> nn.Sequential:
    """Mirror of ``conv_encoder``: (B, width * 2**(n_up-1), h, w) -> (B, out_channels, h * 2**n_up, w * 2**n_up), in [0, 1].
    ``upsampling``: see ``upsample_stage`` (the default keeps the layout, so the state_dict, of existing models)."""
    layers: list[nn.Module] = []
    chans = [min(width * 2**i, max_channels) for i in reversed(range(n_up))]
    for i, ch in enumerate(chans):
        last = i == len(chans) - 1
        out = width // 2 if last else chans[i + 1]
        layers += upsample_stage(ch, out, upsampling)
    layers += [nn.Conv2d(width // 2, out_channels, 3, padding=1), nn.Sigmoid()]
    return nn.Sequential(*layers)


FOLDED = "batch_norm_folded"  # attribute set on an nn.Sequential whose batch norms were folded (checked before saving)


def _memory_format(weight: torch.Tensor) -> torch.memory_format:
    channels_last = weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last and not weight.is_contiguous() else torch.contiguous_format


def fold_batch_norm(module: nn.Module) -> int:
    """Fold each BatchNorm2d that directly follows a Conv2d/ConvTranspose2d in an nn.Sequential into that conv.

    For inference only: in eval mode BN is an affine map per channel (running statistics), so conv then BN is
    one conv with weight w·γ/√(σ²+ε) and bias (b − μ)·γ/√(σ²+ε) + β (``torch.nn.utils.fusion.fuse_conv_bn_eval``),
    and the forward skips one pass over every activation. The BN becomes ``nn.Identity`` and the conv gains a
    bias, so the state_dict changes: a folded module can be neither trained (no batch statistics any more) nor
    saved as the method's weights (``write_model_files`` refuses it). Outputs agree to float rounding (~1e-6).
    The conv weights keep their memory format (channels_last stays channels_last). Pairs that cannot be folded
    (a BN without running statistics, a grouped transposed conv) are left as they are. Returns how many were folded.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if any(m.training for m in module.modules()):
        raise ValueError("fold_batch_norm needs a module in eval mode (batch norm must use its running statistics): call .eval() first")
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in itertools.pairwise(names):
            conv, bn = seq._modules[first], seq._modules[second]
            transpose = isinstance(conv, nn.ConvTranspose2d)
            if not (isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d)):
                continue
            if bn.running_mean is None or bn.running_var is None or bn.num_features != conv.out_channels or (transpose and conv.groups != 1):
                continue
            fused = fuse_conv_bn_eval(conv, bn, transpose=transpose)
            fused.weight = nn.Parameter(fused.weight.detach().contiguous(memory_format=_memory_format(conv.weight)), fused.weight.requires_grad)
            seq._modules[first], seq._modules[second] = fused, nn.Identity()
            setattr(seq, FOLDED, True)
            folded += 1
    return folded


# Rows (columns) of a nearest-2x-upsampled map that a 3x3 conv's taps d = -1, 0, 1 read, seen from the low-res
# map: output row 2i + a reads input rows i + e. PHASE_TAPS[a][e + 1, d + 1] = 1 where tap d lands on offset e.
PHASE_TAPS = torch.tensor([[[1, 0, 0], [0, 1, 1], [0, 0, 0]],   # a = 0: d = -1 -> i - 1; d = 0, 1 -> i
                           [[0, 0, 0], [1, 1, 0], [0, 0, 1]]],  # a = 1: d = -1, 0 -> i; d = 1 -> i + 1
                          dtype=torch.float64)


PHASE_CONV_MAX_CHANNELS = 4  # fold_nearest_upsampling rewrites only convs with at most this many output channels
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh)  # commute with a pixel shuffle


def fold_nearest_upsampling(module: nn.Module, max_out_channels: int = PHASE_CONV_MAX_CHANNELS) -> int:
    """Rewrite each nearest 2x ``nn.Upsample`` followed by a 3x3, stride-1, padding-1 ``Conv2d`` with at most
    ``max_out_channels`` outputs in an nn.Sequential as one 3x3 conv on the low-resolution map with 4x the
    output channels, then (after the elementwise activation that follows, if any) ``nn.PixelShuffle(2)``.

    Output pixel (2i + a, 2j + b) of conv(upsample(x)) reads only x's rows i + e and columns j + f for
    e, f in {-1, 0, 1}, with the taps that land on the same input pixel summed: phase (a, b)'s kernel is
    PHASE_TAPS[a] @ w @ PHASE_TAPS[b]^T. The same multiply-adds (9 taps x 4 phases at 1/4 of the pixels), but the
    upsampled map is never written or read, and a conv with 1 output channel (the anonymizer's last) becomes one
    with 4, which the CPU kernels block far better. Wider convs are left alone: measured on the anonymizer
    (onnxruntime profile, benchmarks/PROFILING.md), the pixel shuffle of a 32-channel map cost more (a pass out
    of the blocked layout and back) than the upsampling it saved. The activation goes before the shuffle so the
    runtime can fuse it into the conv. For inference only, like ``fold_batch_norm`` (marks the module as folded).
    Outputs agree to float rounding. Returns how many were folded.
    """
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for i, (first, second) in enumerate(itertools.pairwise(names)):
            up, conv = seq._modules[first], seq._modules[second]
            if not (isinstance(up, nn.Upsample) and up.mode == "nearest" and up.size is None and up.scale_factor in (2, 2.0, (2.0, 2.0))):
                continue
            if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
                    and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
                    and conv.out_channels <= max_out_channels):
                continue
            w = conv.weight.detach().double()  # (C_out, C_in, 3, 3)
            # phases[o, a, b] = A_a @ w[o, i] @ A_b^T, laid out (C_out, 2, 2, C_in, 3, 3) -> channel o·4 + a·2 + b, as PixelShuffle reads it
            phases = torch.einsum("aed,oidk,bfk->oabief", PHASE_TAPS, w, PHASE_TAPS).reshape(4 * conv.out_channels, conv.in_channels, 3, 3)
            low = nn.Conv2d(conv.in_channels, 4 * conv.out_channels, 3, padding=1, bias=conv.bias is not None)
            low.weight = nn.Parameter(phases.to(conv.weight.dtype).contiguous(memory_format=_memory_format(conv.weight)), conv.weight.requires_grad)
            if conv.bias is not None:
                low.bias = nn.Parameter(conv.bias.detach().repeat_interleave(4), conv.bias.requires_grad)
            after = names[i + 2] if i + 2 < len(names) else None
            if after is not None and isinstance(seq._modules[after], ELEMENTWISE):  # [up, conv, act] -> [conv', act, shuffle]
                seq._modules[first], seq._modules[second], seq._modules[after] = low.to(conv.weight.device), seq._modules[after], nn.PixelShuffle(2)
            else:
                seq._modules[first], seq._modules[second] = low.to(conv.weight.device), nn.PixelShuffle(2)
            setattr(seq, FOLDED, True)
            folded += 1
    return folded


class FlattenChannelsLast(nn.Module):
    """(B, C, H, W) -> (B, H * W * C): flattened in (h, w, c) order, a view of a channels_last tensor (no copy);
    the Linear after it has its input columns permuted to match (``fold_flatten_layout``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


class UnflattenChannelsLast(nn.Module):
    """The (B, C, H, W) reshape of a Linear's output whose rows were permuted to (h, w, c) order -> the same
    values as a channels_last (B, C, H, W) tensor, as a view (no copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.reshape(b, h, w, c).permute(0, 3, 1, 2)


def nchw_to_nhwc_index(channels: int, side: int) -> torch.Tensor:
    """Index i of the (h, w, c) flattening -> its position in the (c, h, w) flattening of a (C, side, side) map."""
    return torch.arange(channels * side * side).reshape(channels, side, side).permute(1, 2, 0).reshape(-1)


class FoldedEraser(nn.Module):
    """``CodeEraser``'s x - ((x - mean) @ basis_in) @ basis_out.T as one affine map, x @ W.T + b (one addmm instead
    of two skinny matmuls and two subtractions): the same function to float rounding, for inference."""

    def __init__(self, eraser: nn.Module):
        super().__init__()
        basis_in, basis_out, mean = (t.detach().double() for t in (eraser.basis_in, eraser.basis_out, eraser.mean))
        weight = torch.eye(len(mean), dtype=torch.float64) - basis_out @ basis_in.T  # (d, d): x @ weight.T
        self.register_buffer("weight", weight.float())
        self.register_buffer("bias", (mean @ basis_in @ basis_out.T).float())

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, codes, self.weight.T)


def fold_for_inference(module: nn.Module) -> int:
    """Every inference-only rewrite of this file (``fold_batch_norm``, then ``fold_nearest_upsampling``), and each
    submodule's own (``fold_layout_for_inference()``: the concealer's flatten layouts and eraser); -> how many."""
    n = fold_batch_norm(module) + fold_nearest_upsampling(module)
    return n + sum(m.fold_layout_for_inference() for m in list(module.modules()) if hasattr(m, "fold_layout_for_inference"))


def has_folded_batch_norm(module: nn.Module) -> bool:
    """Whether ``fold_batch_norm`` changed any part of ``module`` (its state_dict is then not the method's)."""
    return any(getattr(m, FOLDED, False) for m in module.modules())


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the gradient by -weight backward (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(x, weight)


def label_dim(schema: LabelSchema) -> int:
    """Width of the label vector: 1 per binary/continuous label, K per categorical (one-hot)."""
    return sum(label.n_classes if label.kind == "categorical" else 1 for label in schema)


class LabelCodec(nn.Module):
    """Labels -> the vector the decoder is conditioned on, with a learned "unspecified" value per label.

    binary -> ±1; categorical -> one-hot; continuous -> scaled to [-1, 1] over its range. A label that is
    NaN (unknown) or masked as unspecified is replaced by its learned vector, so a user can ask for a face
    "with gender unspecified" and training can teach the decoder what that means (attribute dropout).
    """

    def __init__(self, schema: LabelSchema):
        super().__init__()
        self.schema = schema
        self.unspecified = nn.ParameterDict(
            {
                label.name: nn.Parameter(torch.zeros(label.n_classes if label.kind == "categorical" else 1))
                for label in schema
            }
        )

    @property
    def dim(self) -> int:
        return label_dim(self.schema)

    def forward(self, labels: dict[str, torch.Tensor], unspecified: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """labels: name -> (B,) float (NaN = unknown); unspecified: name -> (B,) bool. Returns (B, dim)."""
        parts = []
        for label in self.schema:
            y = labels[label.name]
            missing = torch.isnan(y)
            if unspecified is not None and label.name in unspecified:
                missing = missing | unspecified[label.name]
            y = torch.nan_to_num(y, nan=0.0)
            if label.kind == "binary":
                v = (y * 2 - 1).unsqueeze(1)
            elif label.kind == "categorical":
                v = F.one_hot(y.long().clamp(0, label.n_classes - 1), label.n_classes).float()
            else:
                lo, hi = label.range
                v = ((y - lo) / (hi - lo) * 2 - 1).unsqueeze(1)
            parts.append(torch.where(missing.unsqueeze(1), self.unspecified[label.name].expand_as(v), v))
        return torch.cat(parts, dim=1)


class AttributeHeads(nn.Module):
    """Predicts every label of a schema from features (B, F): a logit, K logits, or a value scaled to [0, 1].

    Used for the concealer's latent critic and its image classifier, and reusable by any method that needs
    an adversary or a task head over a schema.
    """

    def __init__(self, in_features: int, schema: LabelSchema):
        super().__init__()
        self.schema = schema
        self.heads = nn.ModuleDict(
            {label.name: nn.Linear(in_features, label.n_classes if label.kind == "categorical" else 1) for label in schema}
        )

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(features) for name, head in self.heads.items()}

    def losses(self, outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-label mean loss over rows whose label is known (NaN rows are ignored, never guessed)."""
        out = {}
        for label in self.schema:
            y = labels[label.name]
            known = ~torch.isnan(y)
            if not known.any():
                out[label.name] = outputs[label.name].sum() * 0.0  # keeps the graph; contributes nothing
                continue
            pred, y = outputs[label.name][known], y[known]
            if label.kind == "binary":
                out[label.name] = F.binary_cross_entropy_with_logits(pred.squeeze(1), y)
            elif label.kind == "categorical":
                out[label.name] = F.cross_entropy(pred, y.long())
            else:
                # Measured in tenths of the range, so an age off by ~12 years weighs like a coin-flip CE.
                lo, hi = label.range
                out[label.name] = F.mse_loss(CONTINUOUS_SCALE * torch.sigmoid(pred.squeeze(1)), CONTINUOUS_SCALE * (y - lo) / (hi - lo))
        return out

    def predict(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs -> label values in the dataset's units (class index, or value in range)."""
        pred = {}
        for label in self.schema:
            o = outputs[label.name]
            if label.kind == "binary":
                pred[label.name] = (o.squeeze(1) > 0).float()
            elif label.kind == "categorical":
                pred[label.name] = o.argmax(1).float()
            else:
                lo, hi = label.range
                pred[label.name] = lo + torch.sigmoid(o.squeeze(1)) * (hi - lo)
        return pred


def _rbf_kernel(h: torch.Tensor) -> torch.Tensor:
    """(B, d) -> (B, B) sum of RBF kernels at several bandwidths (robust to the unknown right scale)."""
    d2 = torch.cdist(h, h).pow(2) / h.shape[1]  # mean squared difference per dimension
    return sum(torch.exp(-d2 / (2 * s**2)) for s in (0.25, 0.5, 1.0, 2.0))


def independence_mmd(codes: torch.Tensor, labels: dict[str, torch.Tensor], schema: LabelSchema, min_group: int = 4) -> torch.Tensor:
    """How far the codes' distribution differs between label groups (≈ 0 when codes are independent of the labels).

    Per label, the mean over its groups of MMD²(codes of the group, codes of the batch) under a linear plus
    RBF kernel, summed over labels;
    codes are standardised per dimension (so the penalty is scale-free), and self-pairs
    are left out of the within-group means so small groups add no constant floor. Groups: the classes of a
    binary or categorical label, the two halves (below/above the batch median) of a continuous one; groups
    smaller than ``min_group`` are skipped as too noisy. This is the Variational Fair Autoencoder's penalty
    (Louizos et al., 2016): unlike a critic it cannot be fooled, because it compares whole distributions
    rather than one adversary's guesses.
    """
    # Standardised with gradients through the statistics: with detached ones, shrinking every code would
    # lower the penalty's noise floor and collapse the code (seen on UTKFace: KL fell from 50 to 15).
    h = (codes - codes.mean(0)) / (codes.std(0) + 1e-4)  # (B, d)
    k = _rbf_kernel(h)  # (B, B)
    off_diagonal = ~torch.eye(len(h), dtype=torch.bool, device=h.device)
    k_all = k[off_diagonal].mean()
    total = codes.new_zeros(())
    for label in schema:
        y = labels[label.name]
        known = ~torch.isnan(y)
        if label.kind == "continuous":
            group = (y > y[known].median()).long() if known.sum() >= 2 * min_group else torch.zeros_like(y).long()
        else:
            group = torch.nan_to_num(y, nan=-1.0).long()
        terms = []
        for g in group[known].unique():
            member = known & (group == g)
            if member.sum() < min_group:
                continue
            within = k[member][:, member][off_diagonal[member][:, member]].mean()
            # The linear-kernel part, ||mean of the group - mean of the batch||², is what a linear attacker
            # reads; the RBF part alone barely sees a shift in a few of many dimensions.
            mean_shift = (h[member].mean(0) - h.mean(0)).pow(2).sum()
            terms.append(within - 2 * k[member].mean() + k_all + mean_shift)
        if terms:
            total = total + torch.stack(terms).mean()
    return total


LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])  # 4-neighbour, as OpenCV's ksize=1


def laplacian_variance(images: torch.Tensor, pool: int = 1) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B,) variance of the Laplacian of each image's luma (inside the border): the
    classic focus measure (Pech-Pacheco et al. 2000). Blur lowers it; a render's over its input's says how sharp.
    ``pool`` > 1: of the luma after a pool x pool average pool (stride pool), which a checkerboard of period 2 (a
    stride-2 transposed conv's artefact) cannot raise: the pool averages each of its periods away."""
    luma = (images * images.new_tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)  # (B, 1, H, W)
    if pool > 1:
        luma = F.avg_pool2d(luma, pool)
    response = F.conv2d(luma, LAPLACIAN.to(images)[None, None])  # (B, 1, H-2, W-2)
    return response.flatten(1).var(1)


def to_tensor_images(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    # np.array copies: the cache hands out read-only memmaps, which torch refuses to wrap safely.
    return torch.from_numpy(np.array(images, dtype=np.uint8)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8."""
    return images.detach().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def conv_pool_stack(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """(B, C, H, W) -> (B, widths[-1], H / 2**n, W / 2**n): 3x3 conv -> LeakyReLU -> 2x2 average pooling, per width."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.LeakyReLU(0.2, True), nn.AvgPool2d(2)]
        in_channels = width
    return nn.Sequential(*layers)
