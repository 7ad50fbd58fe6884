"""Every model shipped in models/: safetensors weights that load without running code, a card that gives the
command that produced it and its measured numbers, and a committed audit report (timm's habit: one
parametrized test over everything registered)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conceal.methods import load_api

MODELS = Path(__file__).resolve().parents[1] / "models"
SHIPPED = sorted(p.name for p in MODELS.iterdir() if (p / "model.safetensors").is_file())


def test_models_are_shipped():
    assert len(SHIPPED) >= 3 and not list(MODELS.rglob("*.pt")) and not list(MODELS.rglob("*.pth")) and not list(MODELS.rglob("*.pkl"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_has_card_config_and_audit(name):
    folder = MODELS / name
    card = (folder / "README.md").read_text()
    assert "conceal audit" in card and ("conceal train" in card or "conceal erase" in card)
    assert (folder / "config.toml").is_file() and json.loads((folder / "model.json").read_text())["format"].startswith("conceal-model/")
    report = json.loads((folder / "audit" / "report.json").read_text())
    assert report["provenance"]["method"] == json.loads((folder / "model.json").read_text())["method"]
    assert (folder / "audit" / "report.md").is_file()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_and_releases(name):
    model = load_api(MODELS / name)
    s = model.image_size
    images = np.random.default_rng(0).integers(0, 256, size=(2, s, s, 3), dtype=np.uint8)
    if "images" in model.method.releases:
        released = model.apply(images)
        assert released.shape == (2, s, s, 3) and released.dtype == np.uint8
    if "codes" in model.method.releases:
        codes = model.encode(images)
        assert codes.shape == (2, model.method.code_dim) and np.isfinite(codes).all()
