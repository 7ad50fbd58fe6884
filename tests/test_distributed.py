"""Training under torchrun: two gloo processes on synthetic faces train one model (the same weights in both),
with the one-process run's batches, rank-0 checkpoints that load and resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from conceal.train import distributed
from conceal.train.distributed import World

SRC = Path(__file__).resolve().parents[1] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_processes_split_the_one_process_batches():
    order = np.random.default_rng(0).permutation(103)
    one, two = World(), [World(r, 2) for r in range(2)]
    assert distributed.batches_per_epoch(103, 10, one) == 10 and distributed.batches_per_epoch(103, 5, two[0]) == 10
    for b in range(10):  # batch b of one process with B = 10 is the two processes' halves of B = 5
        halves = np.concatenate([distributed.batch_rows(order, b, 5, w) for w in two])
        assert np.array_equal(halves, distributed.batch_rows(order, b, 10, one))
    assert distributed.batches_per_epoch(9, 5, two[0]) == 0  # fewer rows than one global batch


def _fit_rank(rank: int, world: int, port: int, run_dir: str, steps: int, resume: bool, out: str) -> None:
    """One training process, as torchrun would start it: the environment, then fit()."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from conceal.config import RunConfig, TrainConfig
    from conceal.data.synthetic import SyntheticFaces
    from conceal.methods import METHODS, build_method
    from conceal.train import fit

    data = SyntheticFaces(n=200, seed=1, size=32).arrays()
    cfg = RunConfig(method="masker", train=TrainConfig(epochs=2, batch_size=8, progress=False, device="cpu", seed=0))
    cfg.data.size, cfg.model = 32, METHODS["masker"].Config.tiny()
    torch.manual_seed(rank + 100)  # different initial weights per process: the broadcast must make them rank 0's
    method = build_method("masker", METHODS["masker"].Config.tiny(), data.schema, 32)
    state = fit(method, data.subset("train"), data.subset("val"), cfg, run_dir, resume=resume, stop_after_steps=steps, log=lambda *_: None)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in method.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    Path(f"{out}/rank{rank}.json").write_text(json.dumps({"step": state["step"], "sums": state.get("partial_sums", {})}))
    distributed.teardown(distributed.from_environment())


def _run(tmp_path: Path, name: str, steps: int, resume: bool = False) -> Path:
    out = tmp_path / name
    out.mkdir()
    mp.spawn(_fit_rank, args=(2, free_port(), str(tmp_path / "run"), steps, resume, str(out)), nprocs=2, join=True)
    return out


@pytest.mark.slow
def test_two_gloo_processes_train_one_model_and_resume(tmp_path):
    from safetensors.torch import load_file

    from conceal.train.checkpoint import load_model

    first = _run(tmp_path, "first", steps=5)  # masker: two optimizers, an obfuscator step every 4th
    weights = [load_file(first / f"rank{r}.safetensors") for r in range(2)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key  # gradients, buffers and start all agree
    logs = [json.loads((first / f"rank{r}.json").read_text()) for r in range(2)]
    assert logs[0]["step"] == logs[1]["step"] == 5
    assert logs[0]["sums"] == logs[1]["sums"] and all(np.isfinite(v) for v in logs[0]["sums"].values())  # the processes' mean

    saved = load_model(tmp_path / "run")  # rank 0's checkpoint loads as a model, and holds the trained weights
    for key, value in saved.state_dict().items():
        assert torch.equal(value, weights[0][key]), key

    second = _run(tmp_path, "second", steps=3, resume=True)
    logs = [json.loads((second / f"rank{r}.json").read_text()) for r in range(2)]
    assert logs[0]["step"] == logs[1]["step"] == 8
    after = [load_file(second / f"rank{r}.safetensors") for r in range(2)]
    assert all(torch.equal(after[0][k], after[1][k]) for k in after[0])
    assert any(not torch.equal(after[0][k], weights[0][k]) for k in after[0])  # it trained on


@pytest.mark.slow
def test_torchrun_trains_through_python_m_conceal(tmp_path):
    """The command users type: torchrun -m conceal train (here via python -m torch.distributed.run)."""
    run = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "conceal", "train", "anonymizer", "--dataset", "synthetic", "--size", "32", "--epochs", "1", "--batch-size", "16",
           "--set", "data.synthetic_n=200", "--set", "model.pretrain_steps=2", "--set", "train.threads=1", "-o", str(run), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("epoch 1/1") == 1 and done.stdout.count("run directory") == 1  # rank 0 logs, the other is silent
    from conceal.train.checkpoint import load_model

    method = load_model(run)
    assert all(torch.isfinite(p).all() for p in method.parameters())
