"""Seconds per training step of 128-px concealer candidates on one core (issue 14: size the network for a ~90 min run).

    OMP_NUM_THREADS=1 python benchmarks/concealer_v2_probe.py --root ../shared/datasets/utkface/UTKFace \
        --config configs/concealer-utkface-128.toml --width 16 24 32 --batch 32 --seconds 50

Each candidate trains on real UTKFace 128-px faces (the preprocessing cache) for ``--seconds`` after 2 warm-up
steps; prints s/step and parameters. Side by side in one run, so the ratios hold even on a shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from conceal.config import build_run_config
from conceal.data import open_dataset
from conceal.methods import ConcealerNet
from conceal.train.loop import make_batch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--config", default="configs/concealer-utkface-128.toml")
    ap.add_argument("--width", type=int, nargs="+", default=[16, 24, 32])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=50)
    ap.add_argument("--set", action="append", default=[], help="config overrides, as for conceal train")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = open_dataset("utkface", args.root).arrays(size=128, progress=False).subset("train")
    rng = np.random.default_rng(0)
    for width in args.width:
        cfg = build_run_config("concealer", args.config, args.set, ConcealerNet.Config)
        model_cfg = dataclasses.replace(cfg.model, width=width)
        torch.manual_seed(0)
        method = ConcealerNet(model_cfg, data.schema, 128).train()
        opts = method.configure_optimizers(cfg.train.lr)
        vae_params = sum(p.numel() for p in opts["vae"].param_groups[0]["params"])
        steps, began = 0, None
        while True:
            batch = make_batch(data, np.sort(rng.choice(len(data), args.batch, replace=False)), torch.device("cpu"))
            method.training_step(batch, opts, step=10**6)  # past disc_start: every term on
            steps += 1
            if steps == 2:
                began = time.perf_counter()
            if began and time.perf_counter() - began > args.seconds:
                break
        per_step = (time.perf_counter() - began) / (steps - 2)
        print(f"width {width}: {per_step:.2f} s/step at batch {args.batch} ({vae_params / 1e6:.2f} M VAE parameters, "
              f"{steps - 2} steps timed); {args.batch / per_step:.1f} img/s", flush=True)


if __name__ == "__main__":
    main()
