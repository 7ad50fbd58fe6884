"""What `conceal apply` runs: each method on its fastest backend (onnxruntime where it wins, torch otherwise),
with the inference rewrites (blocks.fold_for_inference), releases what the plain torch model releases, within
one grey level; and without onnxruntime it falls back to torch."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch
from test_shipped_models import MODELS, SHIPPED

from conceal.methods import load_api
from conceal.methods.blocks import fold_for_inference, fold_nearest_upsampling

pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs the export extra")


def faces(size: int, n: int = 24) -> np.ndarray:
    from conceal.data.synthetic import SyntheticFaces

    return SyntheticFaces(n=n, seed=3, size=size).arrays().images  # (n, size, size, 3) uint8


def test_nearest_upsampling_folds_into_a_phase_conv_exactly():
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Conv2d(5, 6, 3, padding=1), torch.nn.LeakyReLU(0.2), torch.nn.Upsample(scale_factor=2),
                              torch.nn.Conv2d(6, 3, 3, padding=1), torch.nn.Sigmoid(), torch.nn.Upsample(scale_factor=2, mode="bilinear"),
                              torch.nn.Conv2d(3, 2, 3, padding=1)).eval()
    folded = copy.deepcopy(seq)
    assert fold_nearest_upsampling(folded, max_out_channels=3) == 1  # the bilinear one is not a nearest upsampling: left alone
    assert isinstance(folded[4], torch.nn.PixelShuffle) and isinstance(folded[3], torch.nn.Sigmoid) and folded[2].out_channels == 12
    x = torch.rand(2, 5, 7, 9)  # odd sides: the borders' zero padding must come out the same
    with torch.no_grad():
        assert torch.allclose(folded(x), seq(x), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_apply_on_the_fastest_backend_matches_torch_within_one_level(name):
    reference = load_api(MODELS / name)  # plain torch, unfolded: what the audits measured
    fast = load_api(MODELS / name, fold_batch_norm=True, backend="auto")
    # anonymizers, maskers and the resize-conv concealer run on onnxruntime; the transposed-conv concealers on torch
    wants_onnx = reference.method.name != "concealer" or reference.method.cfg.decoder_upsampling == "nearest"
    assert fast.backend == reference.method.fastest_backend == ("onnxruntime" if wants_onnx else "torch")
    assert (fast.onnx is not None) == wants_onnx
    images = faces(reference.image_size)
    options = {"as_": {"gender": "female"}} if reference.method.name == "concealer" else {}
    want, got = reference.apply(images, **options).astype(int), fast.apply(images, **options).astype(int)
    assert got.shape == want.shape
    off = np.abs(got - want) > 1
    if reference.method.name != "masker":
        assert not off.any()
    else:
        # The masker's top-K% is a hard selection: where two soft-mask values at the K% boundary differ by
        # less than float rounding, the backends may release a different one of the two pixels. Only such
        # swaps may differ by more than a level: one output there is black, and they are a sliver of the pixels.
        assert ((got[off] == 0) | (want[off] == 0)).all()
        assert off.any(axis=3).mean() < 1e-3


def test_without_onnxruntime_apply_falls_back_to_torch(tiny_models, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else find_spec(n, *a))
    model = load_api(tiny_models["masker"], fold_batch_norm=True, backend="auto")
    assert model.backend == "torch" and model.onnx is None
    images = faces(model.image_size, 3)
    assert model.apply(images).shape == images.shape


def test_concealer_stays_on_torch(tiny_models):
    assert load_api(tiny_models["concealer"], fold_batch_norm=True, backend="auto").backend == "torch"


def test_a_resize_conv_concealer_applies_on_onnxruntime_as_on_torch():
    from conceal.data.synthetic import SYNTHETIC_SCHEMA
    from conceal.methods.concealer import Concealer, ConcealerConfig, ConcealerNet

    torch.manual_seed(0)
    net = ConcealerNet(ConcealerConfig(latent=8, width=8, decoder_upsampling="nearest"), SYNTHETIC_SCHEMA, image_size=32).eval()
    plain, fast = Concealer(copy.deepcopy(net)), Concealer(net, fold_batch_norm=True, backend="auto")
    assert fast.backend == "onnxruntime" and fast.onnx is not None
    images = faces(32, 6)
    for as_ in ({}, {"gender": "female", "age": 40}):
        assert np.abs(fast.apply(images, as_=as_).astype(int) - plain.apply(images, as_=as_).astype(int)).max() <= 1


def test_tiny_anonymizer_rewrite_keeps_the_release(tiny_models):
    plain = load_api(tiny_models["anonymizer"])
    method = copy.deepcopy(plain.method)
    assert fold_for_inference(method) >= 1  # its decoder's narrow convs follow nearest upsamplings
    images = faces(plain.image_size, 4)
    fast = load_api(tiny_models["anonymizer"], fold_batch_norm=True, backend="onnxruntime")
    assert np.abs(fast.apply(images).astype(int) - plain.apply(images).astype(int)).max() <= 1
