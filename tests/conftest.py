"""Shared fixtures and fakes: small synthetic data and the registry's tiny models, made once per session."""

from __future__ import annotations

import importlib.util
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


def build_tiny(name: str, schema, size: int = 32):
    """A fresh ``name`` model of its ``Config.tiny()`` (the smallest config with every loss term on)."""
    from conceal.methods import build_method, method_class

    return build_method(name, method_class(name).Config.tiny(), schema, size)


@pytest.fixture(scope="session")
def tiny_method():
    """``tiny_method(name, schema, size=32)``: a fresh tiny model of a registered method."""
    return build_tiny


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, synthetic_small) -> dict[str, Path]:
    """method name -> the model directory of its tiny() model, trained for two steps through the one loop.

    Built once per session for every registered method: enough for export, apply, erase, benchmarks and
    audit smoke tests, in about a second.
    """
    from conceal.config import RunConfig, TrainConfig
    from conceal.data.synthetic import SyntheticOptions
    from conceal.methods import METHODS
    from conceal.modelfile import write_model_files
    from conceal.train import fit

    root = tmp_path_factory.mktemp("tiny_models")
    out = {}
    for name in METHODS:
        torch.manual_seed(0)
        method = build_tiny(name, synthetic_small.schema)
        cfg = RunConfig(method=name, model=method.cfg, train=TrainConfig(epochs=1, batch_size=16, progress=False, threads=1))
        cfg.data.size, cfg.data.options = method.image_size, SyntheticOptions(n=600, seed=1)  # synthetic_small
        fit(method, synthetic_small.subset("train"), synthetic_small.subset("val"), cfg, root / "runs" / name,
            stop_after_steps=2, log=lambda *_: None)
        (root / name).mkdir()
        write_model_files(root / name, method.eval(), cfg)  # a model directory named after its method
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


@pytest.fixture
def benchmark_script(monkeypatch):
    """name -> benchmarks/NAME.py imported as a module, as when run as a script (benchmarks/ importable, for sweep.py)."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
