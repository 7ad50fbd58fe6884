"""Shared fixtures: small synthetic data and one tiny trained model, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# The suite's models are tiny: one thread avoids oversubscribing the 2 cores CI has (measured: a tiny
# training went from 28 s to 3 s on a busy machine).
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never write into the user's real cache from tests."""
    monkeypatch.setenv("CONCEAL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def synthetic_small():
    """600 synthetic faces at 32x32 (FaceArrays)."""
    from conceal.data.synthetic import SyntheticFaces

    return SyntheticFaces(n=600, seed=1, size=32).arrays()


def _train_with_cli(tmp_path_factory, name: str, args: list[str]) -> Path:
    """``conceal train ARGS -o RUN --no-progress`` into a fresh session directory; returns the run directory."""
    from conceal.cli import main

    run = tmp_path_factory.mktemp(name)
    assert main(["train", *args, "-o", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A concealer trained for one short epoch on synthetic faces through the CLI (a run directory)."""
    return _train_with_cli(tmp_path_factory, "tiny_run", [
        "concealer", "--dataset", "synthetic", "--set", "data.synthetic_n=400", "--size", "32",
        "--epochs", "1", "--batch-size", "32", "--latent", "8", "--set", "model.width=8",
        "--set", "model.critic_weight=1", "--set", "model.classifier_weight=1",
    ])


@pytest.fixture(scope="session")
def tiny_saved_models(tmp_path_factory, synthetic_small) -> dict[str, Path]:
    """method name -> a model directory holding an untrained tiny model of it (test_methods' TINY configs).

    Saved with the checkpoint code, not trained: enough for export, apply and benchmarks, in milliseconds.
    """
    from test_methods import tiny_method

    from conceal.config import RunConfig
    from conceal.methods import METHODS
    from conceal.train.checkpoint import write_model_files

    root = tmp_path_factory.mktemp("tiny_models")
    out = {}
    for name in METHODS:
        torch.manual_seed(0)
        method = tiny_method(name, synthetic_small.schema).eval()
        cfg = RunConfig(method=name, model=method.cfg)
        cfg.data.size = method.image_size
        (root / name).mkdir()
        write_model_files(root / name, method, cfg)
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def masker_run(tmp_path_factory) -> Path:
    """A tiny masker (task smile, K 0.25) trained for one short epoch on 600 synthetic faces (a run directory)."""
    return _train_with_cli(tmp_path_factory, "masker_run", [
        "masker", "--dataset", "synthetic", "--set", "model.task=smile", "--set", "data.synthetic_n=600",
        "--size", "32", "--epochs", "1", "--batch-size", "32", "--set", "model.masker_width=4",
        "--set", "model.classifier_width=4", "--set", "model.dense=8", "--set", "train.threads=1",
    ])
