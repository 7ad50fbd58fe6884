"""Before/after of the inference rewrites, side by side: each shipped model's batch-256 release on torch and
onnxruntime, with and without ``blocks.fold_for_inference``, every call between two matmul bursts.

    PYTHONPATH=src python benchmarks/inference_backends.py models/anonymizer-lfw-leace models/masker-lfw-gender

Prints, per model and backend, the paired efficiency (the call's GFLOP/s over the mean of the bursts right
before and after it; median and range over the rounds) and images/s (median). Backends are interleaved within
each round, so a machine whose speed moves slows all of them alike. Recorded in benchmarks/PROFILING.md.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from conceal.bench import flops_per_image, matmul_burst
from conceal.export import _export, example_inputs, graph_of, input_names, onnx_session
from conceal.methods.blocks import fold_batch_norm, fold_for_inference
from conceal.train.checkpoint import load_model


def onnx_runner(method, inputs):
    import io

    buffer = io.BytesIO()
    _export(method, buffer)
    session = onnx_session(buffer.getvalue())
    feed = {n: inputs[n].numpy() for n in input_names(method)}
    return lambda: session.run(None, feed)


def torch_runner(method, inputs):
    graph = graph_of(method).to(memory_format=torch.channels_last)
    args = [inputs[n].contiguous(memory_format=torch.channels_last) if inputs[n].dim() == 4 else inputs[n] for n in input_names(method)]
    return lambda: graph(*args)


def paired_rounds(runners: dict, flops: float, batch: int, rounds: int, burst: float = 0.25) -> tuple[dict, dict]:
    """Warm each runner up, then ``rounds`` rounds of every runner in turn, each call between two 2048² matmul
    bursts -> (name -> paired efficiencies: the call's GFLOP/s over the bursts' mean, name -> seconds per call)."""
    ratios: dict[str, list[float]] = {k: [] for k in runners}
    seconds: dict[str, list[float]] = {k: [] for k in runners}
    with torch.inference_mode():
        for fn in runners.values():
            fn()
        for _ in range(rounds):
            for name, fn in runners.items():
                before = matmul_burst(2048, burst)
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                seconds[name].append(dt)
                ratios[name].append(batch * flops / dt / 1e9 / ((before + matmul_burst(2048, burst)) / 2))
    return ratios, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--burst", type=float, default=0.25, help="seconds of each matmul burst")
    parser.add_argument("--apply-only", action="store_true", help="only the backend `conceal apply` runs (Method.fastest_backend, "
                        "after fold_for_inference): where each model stands, without the before columns")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average at start: {os.getloadavg()}; {args.threads} threads, batch {args.batch}, {args.rounds} rounds")
    for path in args.models:
        method = load_model(path).eval()
        bn_only, rewritten = copy.deepcopy(method), copy.deepcopy(method)
        fold_batch_norm(bn_only)
        fold_for_inference(rewritten)
        inputs = example_inputs(method, args.batch)
        runners = {
            "torch channels_last + folded BN (before)": torch_runner(bn_only, inputs),
            "torch channels_last + fold_for_inference": torch_runner(rewritten, inputs),
            "onnxruntime (before: unfolded graph)": onnx_runner(method, inputs),
            "onnxruntime + fold_for_inference": onnx_runner(rewritten, inputs),
        }
        if args.apply_only:
            runners = {k: v for k, v in runners.items() if k.endswith("fold_for_inference")
                       and k.startswith("onnxruntime" if method.fastest_backend == "onnxruntime" else "torch")}
        flops = flops_per_image(method)
        ratios, seconds = paired_rounds(runners, flops, args.batch, args.rounds, args.burst)
        print(f"\n{path} ({flops / 1e6:.1f} MFLOPs / image)")
        for name in runners:
            r = ratios[name]
            print(f"  {name:45s} paired {100 * statistics.median(r):5.1f}% [{100 * min(r):.0f}-{100 * max(r):.0f}]  "
                  f"{args.batch / statistics.median(seconds[name]):6.0f} img/s", flush=True)
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
