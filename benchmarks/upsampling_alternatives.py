"""Is there a faster CPU form of the concealer decoder's ConvTranspose2d(k=4, s=2, p=1)? (benchmarks issue)

Usage: python benchmarks/upsampling_alternatives.py [--threads 2] [--batch 256]
The profiler puts ~40% of the concealer's inference in its transposed convolutions. Two exact rewrites
(same outputs within 1e-5) are timed against it, NCHW and channels_last, at the decoder's four shapes:
- sub-pixel: one 3×3 conv to 4·C_out channels + PixelShuffle(2) (2.25× the multiply-adds: the zero taps);
- phases: one 2×2 conv over the padded input (the four output phases as channels, no wasted taps), then
  an interleave.
Prints ms per batch (median of 5 after a warm-up) and the max abs difference from the transposed conv.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

# Which tap of the 4-tap transposed kernel lands on output phase a from input offset d (o = 2i + k - 1).
SUBPIXEL_TAPS = {0: {0: 3, 1: 1}, 1: {1: 2, 2: 0}}  # phase -> {3×3 window index: kernel tap}
PHASE_TAPS = {(0, 0): 3, (0, 1): 1, (1, 0): 2, (1, 1): 0}  # (phase, 2×2 window index) -> kernel tap


def subpixel(deconv: nn.ConvTranspose2d) -> nn.Module:
    w = deconv.weight.detach()  # (C_in, C_out, 4, 4)
    c_in, c_out = w.shape[:2]
    k = torch.zeros(c_out, 2, 2, c_in, 3, 3)
    for a in (0, 1):
        for b in (0, 1):
            for di, ki in SUBPIXEL_TAPS[a].items():
                for dj, kj in SUBPIXEL_TAPS[b].items():
                    k[:, a, b, :, di, dj] = w[:, :, ki, kj].t()
    conv = nn.Conv2d(c_in, 4 * c_out, 3, padding=1, bias=False)
    conv.weight.data = k.reshape(4 * c_out, c_in, 3, 3)
    return nn.Sequential(conv, nn.PixelShuffle(2))


class Phases(nn.Module):
    def __init__(self, deconv: nn.ConvTranspose2d):
        super().__init__()
        w = deconv.weight.detach()
        c_in, self.c_out = w.shape[:2]
        k = torch.zeros(self.c_out, 2, 2, c_in, 2, 2)
        for a in (0, 1):
            for b in (0, 1):
                for r in (0, 1):
                    for c in (0, 1):
                        k[:, a, b, :, r, c] = w[:, :, PHASE_TAPS[a, r], PHASE_TAPS[b, c]].t()
        self.conv = nn.Conv2d(c_in, 4 * self.c_out, 2, bias=False)
        self.conv.weight.data = k.reshape(4 * self.c_out, c_in, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, h, w) -> (B, C_out, 2h, 2w)
        n, _, h, w = x.shape
        z = self.conv(F.pad(x, (1, 1, 1, 1))).view(n, self.c_out, 2, 2, h + 1, w + 1)
        out = x.new_empty(n, self.c_out, h, 2, w, 2)
        for a in (0, 1):
            for b in (0, 1):
                out[:, :, :, a, :, b] = z[:, :, a, b, a : a + h, b : b + w]
        return out.view(n, self.c_out, 2 * h, 2 * w)


def median_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--batch", type=int, default=256)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"batch {args.batch}, {args.threads} threads, torch {torch.__version__}")
    print("| C_in → C_out @ side | transposed conv | + channels_last | sub-pixel | + channels_last | phases | + channels_last | max diff |")
    print("|---|---|---|---|---|---|---|---|")
    cl = torch.channels_last
    for c_in, c_out, side in ((256, 128, 4), (128, 64, 8), (64, 32, 16), (32, 16, 32)):  # the concealer's decoder, width 32
        deconv = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False).eval()
        rewrites = [deconv, subpixel(deconv).eval(), Phases(deconv).eval()]
        x = torch.randn(args.batch, c_in, side, side)
        x_cl = x.contiguous(memory_format=cl)
        cells = []
        with torch.inference_mode():
            ref = deconv(x)
            diff = max((m(x) - ref).abs().max().item() for m in rewrites[1:])
            for m in rewrites:
                cells.append(median_ms(lambda: m(x)))
                m_cl = m.to(memory_format=cl)
                cells.append(median_ms(lambda: m_cl(x_cl)))
                m.to(memory_format=torch.contiguous_format)
        print(f"| {c_in} → {c_out} @ {side} | " + " | ".join(f"{c:.1f}" for c in cells) + f" | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
