"""A fourth method, registered from this one file, goes through everything the built-in ones do:
``conceal train`` -> model files -> load -> ``conceal apply`` -> ``conceal export`` -> ``conceal audit``,
with no change to shared code. If this test needs an edit elsewhere, a name table has crept back in."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from conceal.audit import run_audit
from conceal.cli import main
from conceal.data.images import write_image
from conceal.methods import Method, ModelAPI, ReleaseGraph, load_api, method_names, register_method, unregister_method


@dataclass
class ToyConfig:
    width: int = 4  # hidden channels of the 1x1-conv "network"
    darken: float = 0.5  # weight of the mean brightness in the loss: the toy's only "privacy" lever

    @classmethod
    def tiny(cls) -> "ToyConfig":
        return cls(width=2)


class ToyGraph(ReleaseGraph):
    def forward(self, images: torch.Tensor):
        return self.method(images)


class ToyDimmer(Method):
    """images -> sigmoid(1x1 conv(ReLU(1x1 conv(images)))): learns to reconstruct, penalised for brightness."""

    name = "toy"
    Config = ToyConfig
    Graph = ToyGraph
    releases = ("images",)
    shown_losses = ("loss",)
    cli_options = {"darken": "weight of the brightness penalty"}
    audit = f"{__name__}:audit_toy"

    def __init__(self, cfg: ToyConfig, schema, image_size: int):
        super().__init__(cfg, schema, image_size)
        self.net = nn.Sequential(nn.Conv2d(3, cfg.width, 1), nn.BatchNorm2d(cfg.width), nn.ReLU(), nn.Conv2d(cfg.width, 3, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(images))

    def configure_optimizers(self, lr: float):
        return {"all": torch.optim.Adam(self.parameters(), lr=lr)}

    def _loss(self, batch):
        out = self(batch["image"])
        return (out - batch["image"]).pow(2).mean() + self.cfg.darken * out.mean()

    def training_step(self, batch, optimizers, step):
        loss = self._loss(batch)
        optimizers["all"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["all"].step()
        return {"loss": loss.item()}

    @torch.no_grad()
    def validation_step(self, batch):
        return {"loss": self._loss(batch).item()}


class Toy(ModelAPI):  # apply is ModelAPI's: the network's forward is the release
    method_class = ToyDimmer  # which makes ToyDimmer.API this class
    method: ToyDimmer


def audit_toy(model_path, test, out_dir, judges=None, seed=0, log=print, **options) -> dict:
    """The audit's own vector attackers, on the toy's releases and on the original images."""
    from conceal.audit.attackers import pixel_baseline

    released = load_api(model_path).apply(test.images)
    attack = {"gender": test.labels["gender"]}
    return {"toy_leakage": {
        source: pixel_baseline(images, attack, test.schema, n_components=8, seeds=(seed,))["gender"]
        for source, images in (("released", released), ("original", test.images))
    }}


@pytest.fixture(scope="module")
def toy():
    register_method(ToyDimmer)
    yield ToyDimmer
    unregister_method(ToyDimmer.name)


def test_a_toy_method_goes_through_every_command(toy, tmp_path, capsys):
    assert "toy" in method_names()
    run = tmp_path / "run"
    assert main(["train", "toy", "--dataset", "synthetic", "--set", "data.synthetic_n=200", "--size", "16", "--epochs", "1",
                 "--batch-size", "32", "--darken", "2", "--set", "train.threads=1", "-o", str(run), "--no-progress"]) == 0
    model = load_api(run)
    assert isinstance(model, Toy) and model.method.cfg.darken == 2.0  # its own CLI option reached its config

    faces = (np.random.default_rng(0).random((3, 16, 16, 3)) * 255).astype(np.uint8)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, face in enumerate(faces):
        write_image(photos / f"p{i}.png", face)
    assert main(["apply", str(run), str(photos), "-o", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    assert main(["apply", str(run), str(photos), "-o", str(tmp_path / "out2"), "--as", "gender=female"]) == 2
    assert "--as is not an option of toy models" in capsys.readouterr().err  # one line, exit 2

    assert main(["export", str(run), "-o", str(tmp_path / "toy.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "input images" in printed and float(printed.rsplit("max |difference|", 1)[1]) < 1e-4

    # The method's own sections through the CLI; the public-model attack of its releases (CNNs, embeddings:
    # minutes at their defaults) at test_audit_public's small settings.
    assert main(["audit", str(run), "--dataset", "synthetic", "--max-images", "80", "--threat-model", "test-halves",
                 "-o", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "toy_leakage" in report and '"method": "toy"' in (tmp_path / "report" / "report.json").read_text()
    run_audit(run, dataset="synthetic", out=tmp_path / "public", judges="off", threat_model="public-model", log=lambda _: None,
              public_options={"cnn_epochs": 1, "cnn_min_steps": 10, "learning_curve": False, "embed_train": 40, "embed_val": 20, "embed_test": 20})
    assert set(json.loads((tmp_path / "public" / "report.json").read_text())["headline"]) == {"images"}
