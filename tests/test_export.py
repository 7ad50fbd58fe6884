"""ONNX export: onnxruntime reproduces torch for every registered method; `conceal export` end to end."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from conceal.cli import main
from conceal.export import api_inputs, example_inputs, export_onnx, graph_of, input_names, max_difference, onnx_session
from conceal.methods import METHODS, load_api

TOLERANCE = 1e-4


def calibrated(method):
    """The tiny method with BatchNorm statistics of one batch, as a trained model has, in eval mode.

    With init statistics the features shrink layer by layer to ~1e-3, so an untrained masker's soft mask
    is almost flat (0.455..0.457) and whole groups of pixels tie exactly (all-zero ReLU features): float
    rounding, not the graph, would decide which pixels make the top K%. A positive shift before the
    masker's last ReLU removes those ties, so the comparison checks the graph.
    """
    for module in method.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average: one batch sets the statistics
    inputs = example_inputs(method, 16, seed=1)
    with torch.no_grad():
        graph_of(method).train()(*(inputs[n] for n in input_names(method)))
        if method.name == "masker":
            [*_, last_norm] = (m for m in method.masker.modules() if isinstance(m, torch.nn.BatchNorm2d))
            last_norm.bias.fill_(3.0)
    return method.eval()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_onnxruntime_matches_torch(name, synthetic_small, tmp_path, tiny_method):
    torch.manual_seed(0)
    method = calibrated(tiny_method(name, synthetic_small.schema))
    path = export_onnx(method, tmp_path / f"{name}.onnx")
    session = onnx_session(path, threads=1)
    if name == "masker":  # the precondition of an exact top-K comparison: no near-tie at the K% boundary
        with torch.no_grad():
            mask = method.masker(example_inputs(method, 5)["images"]).flatten(1)
        ranked = mask.sort(dim=1, descending=True).values
        k = round(method.cfg.keep * mask.shape[1])
        assert (ranked[:, k - 1] - ranked[:, k]).min() > 1e-5
    for batch in (1, 5):  # the batch axis is dynamic
        assert max_difference(method, session, batch=batch) < TOLERANCE


def test_concealer_graph_renders_the_attributes_like_the_api(tiny_models, synthetic_small, tmp_path):
    model = load_api(tiny_models["concealer"])
    path = export_onnx(model.method, tmp_path / "c.onnx")
    images = synthetic_small.images[:4]
    as_ = {"gender": "female", "age": 40}  # race unspecified
    feed = api_inputs(model, images, as_=as_)
    assert feed["unspecified"].tolist() == [[False, False, True]] * 4  # age, gender, race
    released, codes = onnx_session(path, threads=1).run(None, feed)
    np.testing.assert_allclose(codes, model.encode(images), atol=TOLERANCE)
    as_uint8 = np.clip(released, 0, 1).transpose(0, 2, 3, 1) * 255
    assert np.abs(as_uint8 - model.apply(images, as_=as_)).max() <= 1  # rounding to uint8 is the caller's


def test_export_cli_writes_a_self_describing_model(tiny_models, tmp_path, capsys):
    out = tmp_path / "deploy" / "masker.onnx"
    assert main(["export", str(tiny_models["masker"]), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "onnxruntime vs torch" in printed
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["conceal.method"] == "masker" and meta["conceal.image_size"] == "32"
    assert json.loads(meta["conceal.outputs"]) == ["released"]
    assert not list(out.parent.glob(".*tmp"))  # written atomically


def test_export_cli_bad_model_is_one_line_error(tmp_path, capsys):
    rc = main(["export", str(tmp_path / "nowhere"), "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("conceal: error: no model found")
    assert not (tmp_path / "m.onnx").exists()


def test_graph_outputs_are_the_release(tiny_models, synthetic_small):
    """The exported graph computes exactly what the method's forward releases."""
    from conceal.methods import load_model

    for name in ("masker", "anonymizer"):
        method = load_model(tiny_models[name])
        x = example_inputs(method, 2)["images"]
        with torch.no_grad():
            released = graph_of(method)(x)
            released = released[0] if isinstance(released, tuple) else released
            assert torch.equal(released, method(x))
