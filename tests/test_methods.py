"""Every registered method: shapes, finite losses, gradients reach every parameter, save/load, resume."""

from __future__ import annotations

import dataclasses
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conceal.config import ConfigError, RunConfig, TrainConfig
from conceal.methods import METHODS, build_method, load_model
from conceal.methods.discriminator import PatchDiscriminator
from conceal.train import fit
from conceal.train.loop import epoch_order, make_batch


@pytest.mark.parametrize("name", sorted(METHODS))
def test_training_step_is_finite_and_reaches_every_parameter(name, synthetic_small, tiny_method):
    torch.manual_seed(0)
    method = tiny_method(name, synthetic_small.schema)
    optimizers = method.configure_optimizers(1e-3)
    batch = make_batch(synthetic_small, np.arange(16), torch.device("cpu"))
    for p in method.parameters():
        p.grad = None
    logs = method.training_step(batch, optimizers, 0)
    assert logs and all(np.isfinite(v) for v in logs.values()), logs
    # A hinge-loss discriminator's output bias gets d/db = -P(D(real) < 1) + P(D(fake) > -1): exactly 0 while
    # every logit is inside the margin, as at the first step. It must be in the graph (a finite gradient), not non-zero.
    inside_margin = {
        f"{prefix}.to_logit.bias" if prefix else "to_logit.bias"
        for prefix, module in method.named_modules()
        if isinstance(module, PatchDiscriminator)
    }
    no_grad = [
        n for n, p in method.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or (n not in inside_margin and not p.grad.abs().sum() > 0)
    ]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    val = method.validation_step(batch)
    assert all(np.isfinite(v) for v in val.values()), val


@pytest.mark.parametrize("name", sorted(METHODS))
def test_save_load_reproduces_outputs(name, synthetic_small, tmp_path, tiny_method):
    cfg = RunConfig(method=name, train=TrainConfig(epochs=1, batch_size=32, progress=False))
    cfg.data.size, cfg.model = 32, METHODS[name].Config.tiny()
    data = synthetic_small
    method = tiny_method(name, data.schema)
    fit(method, data.subset("train"), data.subset("val"), cfg, tmp_path, log=lambda *_: None)
    loaded = load_model(tmp_path)
    method.eval()
    batch = make_batch(data, np.arange(8), torch.device("cpu"))
    with torch.no_grad():
        labels = {k: batch["labels"][k] for k in method.concealed.names}
        assert torch.equal(method(batch["image"], labels), loaded(batch["image"], labels))


def test_shapes_of_concealer(synthetic_small, tiny_method):
    method = tiny_method("concealer", synthetic_small.schema)
    x = torch.rand(4, 3, 32, 32)
    mu, logvar = method.encode(x)
    assert mu.shape == logvar.shape == (4, 8)
    labels = {"age": torch.full((4,), 30.0), "gender": torch.ones(4), "race": torch.zeros(4)}
    out = method.decode(mu, labels)
    assert out.shape == (4, 3, 32, 32) and out.min() >= 0 and out.max() <= 1


def test_resume_reproduces_the_uninterrupted_run(synthetic_small, tmp_path, tiny_method):
    def run(directory, stop_after=None, resume=False):
        cfg = RunConfig(method="concealer", train=TrainConfig(epochs=2, batch_size=32, progress=False, seed=3))
        cfg.data.size, cfg.model = 32, METHODS["concealer"].Config.tiny()
        torch.manual_seed(123)  # model init; a resumed run overwrites weights from the checkpoint anyway
        method = tiny_method("concealer", synthetic_small.schema)
        return fit(method, synthetic_small.subset("train"), synthetic_small.subset("val"), cfg, directory,
                   resume=resume, stop_after_steps=stop_after, log=lambda *_: None)

    whole = run(tmp_path / "whole")
    stopped = run(tmp_path / "split", stop_after=20)  # mid-epoch 2 (15 batches per epoch)
    assert stopped["stopped"] == "steps" and stopped["epoch"] == 1
    resumed = run(tmp_path / "split", resume=True)
    assert resumed["step"] == whole["step"]
    a = load_file(tmp_path / "whole" / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "split" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["history"][-1]["train"] == pytest.approx(whole["history"][-1]["train"])


def test_epoch_order_groups_faces_of_one_person(synthetic_small):
    # 5 people with 1, 2, 5, 8 and 9 faces, and 7 faces of unknown identity, in a shuffled dataset.
    identity = np.r_[np.repeat(np.arange(5), [1, 2, 5, 8, 9]), -np.ones(7, np.int64)]
    data = dataclasses.replace(synthetic_small.select(np.arange(len(identity))),
                               identity=np.random.default_rng(0).permutation(identity))
    order = epoch_order(data, seed=1, epoch=2, faces_per_identity=4)
    assert np.array_equal(np.sort(order), np.arange(len(identity)))  # every face, once
    assert np.array_equal(order, epoch_order(data, seed=1, epoch=2, faces_per_identity=4))  # resumable
    assert not np.array_equal(order, epoch_order(data, seed=1, epoch=3, faces_per_identity=4))
    # Groups of up to 4 consecutive faces of one person: at least sum(n - ceil(n / 4)) = 16 neighbours
    # share a (known) person; plain shuffling puts few together.
    def neighbours(order):
        ids = data.identity[order]
        return int(np.sum((ids[1:] == ids[:-1]) & (ids[1:] >= 0)))
    assert neighbours(order) >= 16
    assert neighbours(epoch_order(data, 1, 2, 0)) < 8
    for bad in (1, -2):
        with pytest.raises(ValueError, match="faces_per_identity"):
            epoch_order(data, 1, 2, bad)
        with pytest.raises(ConfigError, match="faces_per_identity"):  # the CLI's --set says so in one line
            TrainConfig(faces_per_identity=bad)


def test_init_weights_copies_what_fits_and_names_the_rest(tiny_models, synthetic_small, tiny_method):
    from conceal.train import init_weights

    saved = load_file(tiny_models["anonymizer"] / "model.safetensors")
    cfg = dataclasses.replace(METHODS["anonymizer"].Config.tiny(), siamese_widths=(4, 4, 4))  # a different utility network
    method = build_method("anonymizer", cfg, synthetic_small.schema, 32)
    line = init_weights(method, tiny_models["anonymizer"])
    assert "freshly initialised" in line and line.endswith(": siamese")
    own = method.state_dict()
    assert all(torch.equal(own[k], v) for k, v in saved.items() if not k.startswith("siamese."))
    # Never half a module: the Siamese tensors whose shapes happen to match (its last bias) stay fresh too.
    same_shape = [k for k in own if k.startswith("siamese.") and own[k].shape == saved[k].shape]
    assert same_shape and not any(torch.equal(own[k], saved[k]) for k in same_shape)
    with pytest.raises(ConfigError, match="none of its weights fit"):
        init_weights(tiny_method("masker", synthetic_small.schema), tiny_models["anonymizer"])


CODE_RELEASING = sorted(name for name, cls in METHODS.items() if "codes" in cls.releases)


@pytest.mark.parametrize("name", CODE_RELEASING)
def test_conceal_erase_fits_an_eraser_that_reloads(name, tiny_models, synthetic_small, tmp_path):
    """`conceal erase` on any code-releasing method: a low-rank eraser, saved and reloaded exactly, and a
    linear attacker fitted on the erased training codes does no better than chance on its own data."""
    from conceal.audit.attackers import score_estimator, vector_attackers
    from conceal.cli import main
    from conceal.methods import load_api

    out = tmp_path / "erased"
    rc = main(["erase", str(tiny_models[name]), "--dataset", "synthetic", "-o", str(out)])
    assert rc == 0
    before, after = load_api(tiny_models[name]), load_api(out)
    assert 0 < after.method.cfg.eraser_rank < after.method.code_dim
    train = synthetic_small.subset("train")
    images = train.images[:64]
    assert np.array_equal(after.encode(images), load_api(out).encode(images))  # reload reproduces
    assert not np.array_equal(before.encode(images), after.encode(images))
    gender = train.labels["gender"]
    codes = after.encode(train.images)
    label = train.schema["gender"]
    fitted = score_estimator(vector_attackers(label, seed=0)["linear"], codes, gender, codes, gender, label)  # on its own data
    assert fitted["balanced_accuracy"] < 0.6


def test_erase_refuses_a_model_without_codes(tiny_models, tmp_path, capsys):
    from conceal.cli import main

    assert main(["erase", str(tiny_models["masker"]), "-o", str(tmp_path / "x")]) == 2
    assert "releases images, not codes" in capsys.readouterr().err


def _with_random_batch_norm_statistics(method):
    """Running statistics and affine parameters far from their init (mean 0, var 1, γ 1, β 0), so folding has work to do."""
    g = torch.Generator().manual_seed(1)
    for bn in method.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            n = bn.num_features
            bn.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            bn.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
            bn.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            bn.bias.data.copy_(0.6 * torch.rand(n, generator=g) - 0.3)
    return method


def _conv_bn_pairs(module) -> int:
    convs = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    return sum(isinstance(a, convs) and isinstance(b, torch.nn.BatchNorm2d)
               for seq in module.modules() if isinstance(seq, torch.nn.Sequential)
               for a, b in zip(seq, list(seq)[1:]))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_fold_batch_norm_keeps_the_release(name, synthetic_small, tiny_method):
    """Folding every (conv, BN) pair of a method's release graph changes its outputs by float rounding only,
    leaves no BatchNorm2d in the folded Sequentials and keeps the conv weights channels_last."""
    import copy

    from conceal.export import example_inputs, graph_of, input_names
    from conceal.methods.blocks import fold_batch_norm, has_folded_batch_norm

    torch.manual_seed(0)
    method = _with_random_batch_norm_statistics(tiny_method(name, synthetic_small.schema))
    if hasattr(method.cfg, "keep"):
        # The masker's top-K is a hard selection: rounding could swap two pixels of near-equal mask value.
        method.cfg.keep = 1.0
    method.eval().to(memory_format=torch.channels_last)
    folded = copy.deepcopy(method)
    pairs = _conv_bn_pairs(method)
    assert fold_batch_norm(folded) == pairs and _conv_bn_pairs(folded) == 0
    assert has_folded_batch_norm(folded) == (pairs > 0) and not has_folded_batch_norm(method)
    for seq in folded.modules():
        if getattr(seq, "batch_norm_folded", False):
            assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in seq)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last)
               for m in folded.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))
    inputs = example_inputs(method, 8)
    args = [inputs[n] for n in input_names(method)]
    with torch.inference_mode():
        before, after = graph_of(method)(*args), graph_of(folded)(*args)
    before, after = (before, after) if isinstance(before, tuple) else ((before,), (after,))
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4)
    assert fold_batch_norm(folded) == 0  # nothing left to fold


def test_fold_batch_norm_refuses_a_training_module(synthetic_small, tiny_method):
    from conceal.methods.blocks import fold_batch_norm

    method = tiny_method("concealer", synthetic_small.schema).train()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(method)
    with pytest.raises(ValueError, match="eval mode"):  # one part still training is enough
        method.eval().decoder.train()
        fold_batch_norm(method)
    assert _conv_bn_pairs(method) > 0  # untouched


@pytest.mark.parametrize("name", sorted(METHODS))
def test_folded_api_applies_like_the_unfolded_one_and_cannot_be_saved(name, tiny_models, synthetic_small, tmp_path):
    from conceal.methods import load_api
    from conceal.errors import CheckpointError
    from conceal.modelfile import write_model_files

    plain, folded = load_api(tiny_models[name]), load_api(tiny_models[name], fold_batch_norm=True)
    assert _conv_bn_pairs(folded.method) == 0
    images = synthetic_small.images[:8]
    a, b = plain.apply(images).astype(int), folded.apply(images).astype(int)
    # uint8 rounding: at most one level (the masker's top-K could swap two near-equal pixels: allow a few)
    assert np.abs(a - b).max() <= 1 or (np.abs(a - b) > 1).mean() < 0.01
    if "codes" in plain.method.releases:
        np.testing.assert_allclose(folded.encode(images), plain.encode(images), rtol=0, atol=1e-4)
    if _conv_bn_pairs(plain.method):
        with pytest.raises(CheckpointError, match="folded"):
            write_model_files(tmp_path, folded.method, RunConfig(method=name, model=folded.method.cfg))
        assert not (tmp_path / "model.safetensors").exists()


def test_concealer_layout_fold_keeps_the_release_with_an_eraser(synthetic_small, tiny_method):
    """The concealer's inference rewrites (flatten/unflatten in channels_last order, the eraser as one affine
    map): the same released images and codes to float rounding, no layout copy left around the linear layers."""
    import copy

    from conceal.export import example_inputs, graph_of, input_names
    from conceal.methods.blocks import FoldedEraser, fold_batch_norm, fold_for_inference, has_folded_batch_norm
    from conceal.methods.erasure import CodeEraser

    torch.manual_seed(0)
    method = tiny_method("concealer", synthetic_small.schema).eval()
    method.eraser = CodeEraser(method.cfg.latent, 2)
    for buffer in (method.eraser.mean, method.eraser.basis_in, method.eraser.basis_out):
        buffer.normal_()
    method.eval().to(memory_format=torch.channels_last)
    plain, folded = copy.deepcopy(method), copy.deepcopy(method)
    fold_batch_norm(plain)
    assert fold_for_inference(folded) >= 4 and isinstance(folded.eraser, FoldedEraser) and has_folded_batch_norm(folded)
    assert folded.fold_layout_for_inference() == 0  # once only
    inputs = example_inputs(method, 4)
    args = [inputs[n].contiguous(memory_format=torch.channels_last) if inputs[n].dim() == 4 else inputs[n] for n in input_names(method)]
    with torch.inference_mode():
        (a, codes_a), (b, codes_b) = graph_of(plain)(*args), graph_of(folded)(*args)
        flat = folded.encoder(args[0])
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    torch.testing.assert_close(codes_b, codes_a, rtol=0, atol=1e-4)
    assert flat.dim() == 2 and flat.is_contiguous()  # the flatten of a channels_last map is a view
