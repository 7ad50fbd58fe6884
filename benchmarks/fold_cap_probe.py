"""How far to fold nearest upsampling + conv into phase convs, side by side: one model's batch-256 release on torch
with ``fold_nearest_upsampling``'s output-channel cap at several values, and on onnxruntime with the default cap and
with every stage folded; every call between two matmul bursts (paired efficiency, as inference_backends.py).

    PYTHONPATH=src python benchmarks/fold_cap_probe.py models/concealer-utkface-128 --rounds 4

Recorded in benchmarks/PROFILING.md §8.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics

import torch
from inference_backends import onnx_runner, paired_rounds, torch_runner

from conceal.bench import flops_per_image
from conceal.export import example_inputs
from conceal.methods import blocks
from conceal.train.checkpoint import load_model

CAPS = (4, 8, 16, 64, 10**6)  # 4 is the default (PHASE_CONV_MAX_CHANNELS); 10**6 folds every stage


def folded(method, cap: int):
    """A copy with fold_for_inference's rewrites, the phase-conv fold capped at ``cap`` output channels."""
    method = copy.deepcopy(method)
    blocks.fold_batch_norm(method)
    blocks.fold_nearest_upsampling(method, max_out_channels=cap)
    for m in list(method.modules()):
        if hasattr(m, "fold_layout_for_inference"):
            m.fold_layout_for_inference()
    return method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"load average at start: {os.getloadavg()}")
    method = load_model(args.model).eval()
    inputs = example_inputs(method, args.batch)
    runners = {}
    for cap in CAPS:
        runners[f"torch, cap {cap}"] = torch_runner(folded(method, cap), inputs)
    for cap in (CAPS[0], CAPS[-1]):
        runners[f"onnxruntime, cap {cap}"] = onnx_runner(folded(method, cap), inputs)
    ratios, seconds = paired_rounds(runners, flops_per_image(method), args.batch, args.rounds)
    for name in runners:
        r = ratios[name]
        print(f"{name:24s} paired {100 * statistics.median(r):5.1f}% [{100 * min(r):.0f}-{100 * max(r):.0f}]  "
              f"{args.batch / statistics.median(seconds[name]):6.0f} img/s")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
