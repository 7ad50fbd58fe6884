"""Concealer v2 levers (issue 14) on tiny models: the discriminator and critic-ensemble losses, their isolation
from the generator, determinism, save -> load, and that configs without the levers behave as before."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conceal.config import RunConfig, TrainConfig
from conceal.data.schema import UTKFACE_SCHEMA
from conceal.data.synthetic import SyntheticFaces
from conceal.methods import Concealer, ConcealerConfig, ConcealerNet
from conceal.methods.blocks import AttributeHeads, laplacian_variance
from conceal.methods.concealer import n_down
from conceal.methods.discriminator import PatchDiscriminator, feature_matching_loss, hinge_d_loss, hinge_g_loss
from conceal.methods.independence import CriticEnsemble, confusion_losses, hsic
from conceal.train import fit
from conceal.train.loop import make_batch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((Path(__file__).parent / "data" / "concealer_v1_reference.json").read_text())


@pytest.fixture(scope="module")
def faces():
    return SyntheticFaces(n=64, seed=5, size=32).arrays()


def tiny(data, **changes) -> ConcealerNet:
    torch.manual_seed(0)
    return ConcealerNet(dataclasses.replace(ConcealerConfig.tiny(), **changes), data.schema, 32)


def labels(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"age": torch.rand(n, generator=g) * 80, "gender": (torch.rand(n, generator=g) > 0.5).float(),
            "race": torch.randint(0, 5, (n,), generator=g).float()}


def test_patch_discriminator_shapes_gradients_and_losses():
    torch.manual_seed(0)
    disc = PatchDiscriminator(width=4, n_down=2, cond_dim=3)
    real, fake = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32, requires_grad=True)
    cond = torch.randn(4, 3)
    logits, features = disc(real, cond)
    assert logits.shape == (4, 1, 8, 8) and [f.shape[1:] for f in features] == [(4, 16, 16), (8, 8, 8)]
    fake_logits, fake_features = disc(fake, cond)
    d_loss = hinge_d_loss(logits, fake_logits)
    g_terms = hinge_g_loss(fake_logits) + feature_matching_loss(features, fake_features)
    assert torch.isfinite(d_loss) and torch.isfinite(g_terms)
    d_loss.backward(retain_graph=True)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in disc.parameters())
    g_terms.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0 and torch.isfinite(fake.grad).all()
    with pytest.raises(ValueError, match="conditional"):
        disc(real)
    # the hinge is 0 once real and fake are separated by the margin, and the condition changes the logit
    assert hinge_d_loss(torch.full((2,), 1.5), torch.full((2,), -1.5)) == 0
    assert not torch.allclose(disc(real, cond)[0], disc(real, -cond)[0])


def test_confusion_is_zero_at_the_prior_guess_and_positive_when_the_critic_reads_the_label():
    schema = UTKFACE_SCHEMA.subset(["age", "gender", "race"])
    heads = AttributeHeads(4, schema)
    y = labels(8)
    gender_share = y["gender"].mean()
    race_share = torch.nn.functional.one_hot(y["race"].long(), 5).float().mean(0)
    # a blind critic: the batch's label frequencies for every row, whatever the face (UTKFace age range 0..116)
    blind = {"gender": torch.logit(gender_share.clamp(1e-6, 1 - 1e-6)).expand(8, 1),
             "race": race_share.clamp_min(1e-12).log().expand(8, 5), "age": torch.logit((y["age"].mean() / 116).expand(8, 1))}
    sure = {"gender": 20 * (y["gender"][:, None] * 2 - 1), "race": 20 * torch.nn.functional.one_hot(y["race"].long(), 5).float(),
            "age": torch.logit((y["age"] / 116).clamp(0.01, 0.99))[:, None]}
    for name, value in confusion_losses(heads, blind, y).items():
        assert abs(value.item()) < 1e-4, name
    for name, value in confusion_losses(heads, sure, y).items():
        assert value.item() > 0.5, name


def test_confusion_does_not_push_a_blind_critic_on_an_imbalanced_label():
    """LFW is ~81% male: a critic that predicts that prior reads nothing and scores 0; the uniform guess
    (what the loss used to aim at) is not what a blind critic says, so it scores above 0."""
    heads = AttributeHeads(4, UTKFACE_SCHEMA.subset(["gender"]))
    y = {"gender": torch.tensor([0.0] * 13 + [1.0] * 3)}  # 19% positive
    prior = {"gender": torch.logit(torch.tensor(3 / 16)).expand(16, 1)}
    uniform = {"gender": torch.zeros(16, 1)}
    assert abs(confusion_losses(heads, prior, y)["gender"].item()) < 1e-5
    assert confusion_losses(heads, uniform, y)["gender"].item() > 0.1


def test_hsic_sees_dependence_and_has_gradients():
    g = torch.Generator().manual_seed(0)
    y = labels(128)
    independent = torch.randn(128, 6, generator=g, requires_grad=True)
    dependent = independent.detach() + 3 * y["gender"][:, None]
    schema = UTKFACE_SCHEMA.subset(["gender"])
    free, tied = hsic(independent, y, schema), hsic(dependent, y, schema)
    assert tied > 3 * free and 0 <= free < 0.1
    free.backward()
    assert torch.isfinite(independent.grad).all() and independent.grad.abs().sum() > 0


def test_critic_ensemble_restarts_one_critic_at_a_time_and_forgets_its_optimizer_state():
    schema = UTKFACE_SCHEMA.subset(["age", "gender", "race"])
    torch.manual_seed(0)
    ensemble = CriticEnsemble(6, schema, n_critics=2, hidden=8, restart_every=4)
    opt = torch.optim.Adam(ensemble.parameters(), lr=1e-2)
    codes, y = torch.randn(16, 6), labels(16)
    loss = ensemble.critic_loss(codes, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    before = [[p.clone() for p in c.parameters()] for c in ensemble.critics]
    assert [ensemble.restart_due(s, opt) for s in range(1, 4)] == [None, 1, None]  # critic 1 at step 2 (staggered)
    assert all(torch.equal(a, b) for a, b in zip(before[0], ensemble.critics[0].parameters()))
    assert not any(torch.equal(a, b) for a, b in zip(before[1], ensemble.critics[1].parameters()))
    assert all(p not in opt.state for p in ensemble.critics[1].parameters()) and all(p in opt.state for p in ensemble.critics[0].parameters())
    assert ensemble.restart_due(4, opt) == 0
    opt.zero_grad(set_to_none=True)
    enc = ensemble.encoder_loss(codes.requires_grad_(), y)
    enc.backward()  # the encoder's term: gradient to the codes only
    assert torch.isfinite(enc) and codes.grad.abs().sum() > 0 and all(p.grad is None for p in ensemble.parameters())


def test_discriminator_step_never_updates_the_generator_and_the_generator_terms_never_reach_the_discriminator(faces):
    vae = tiny(faces)
    opts = vae.configure_optimizers(1e-2)
    disc_params = set(vae.discriminator.parameters())
    assert not disc_params & {p for g in opts["vae"].param_groups for p in g["params"]}
    assert {p for g in opts["discriminator"].param_groups for p in g["params"]} == disc_params
    batch = make_batch(faces, np.arange(8), torch.device("cpu"))
    x, y = batch["image"], vae._labels(batch)
    fakes = vae.decode(vae.encode(x)[0], y)  # (8, 3, 32, 32), in the generator's graph
    generator = {n: p.clone() for n, p in vae.named_parameters() if p not in disc_params}
    disc_before = [p.clone() for p in vae.discriminator.parameters()]
    terms = vae._discriminator_terms(x, y, fakes, y, 4, opts["discriminator"], step=10, logs={})
    # the discriminator step: its weights moved, the generator's did not and got no gradient
    assert any(not torch.equal(a, b) for a, b in zip(disc_before, vae.discriminator.parameters()))
    assert all(torch.equal(p, generator[n]) and p.grad is None for n, p in vae.named_parameters() if p not in disc_params)
    disc_grads = [p.grad.clone() for p in vae.discriminator.parameters()]
    terms.backward()  # the generator's adversarial + feature-matching terms
    assert torch.isfinite(terms) and terms.item() != 0
    assert all(torch.equal(g, p.grad) for g, p in zip(disc_grads, vae.discriminator.parameters()))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in vae.decoder.parameters())
    # before disc_start the discriminator still learns, and the generator gets nothing from it
    vae.cfg = dataclasses.replace(vae.cfg, disc_start=5)
    logs = {}
    assert vae._discriminator_terms(x, y, fakes.detach(), y, 4, opts["discriminator"], step=4, logs=logs).item() == 0
    assert "disc" in logs and "adversarial" not in logs


def test_every_v2_term_is_finite_and_logged(faces):
    vae = tiny(faces)
    opts = vae.configure_optimizers(1e-3)
    batch = make_batch(faces, np.arange(16), torch.device("cpu"))
    logs = [vae.training_step(batch, opts, step) for step in range(3)][-1]
    for key in ("l1", "hsic", "critics", "confusion", "disc", "adversarial", "feature_matching", "loss"):
        assert np.isfinite(logs[key]), key
    val = vae.validation_step(batch)
    assert 0 < val["sharpness"] < 10 and np.isfinite(val["psnr"])


def test_training_is_seeded_and_save_load_reproduces_outputs(faces, tmp_path):
    cfg = RunConfig(method="concealer", train=TrainConfig(epochs=1, batch_size=16, progress=False, threads=1))
    cfg.data.size, cfg.model = 32, ConcealerConfig.tiny()
    weights = []
    for run in ("a", "b"):
        vae = tiny(faces)
        fit(vae, faces.subset("train"), faces.subset("val"), cfg, tmp_path / run, stop_after_steps=3, log=lambda *_: None)
        weights.append(vae.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    images = faces.images[:4]
    saved = Concealer.load(tmp_path / "a")
    fresh = Concealer(vae)
    assert np.array_equal(saved.encode(images), fresh.encode(images))
    assert np.array_equal(saved.apply(images, as_={"gender": "female"}), fresh.apply(images, as_={"gender": "female"}))


def test_depth_follows_the_image_size():
    assert [n_down(s) for s in (32, 48, 64, 96, 128, 256)] == [4, 4, 4, 4, 5, 6]
    vae = ConcealerNet(dataclasses.replace(ConcealerConfig.tiny(), disc_width=2), UTKFACE_SCHEMA, 128)
    x = torch.rand(2, 3, 128, 128)
    mu, _ = vae.encode(x)
    out = vae.decode(mu, labels(2))
    assert out.shape == (2, 3, 128, 128) and vae.side == 4
    assert set(vae.classifier(out)) == {"age", "gender", "race"}  # read at 64 px
    with pytest.raises(ValueError, match="multiple of 32"):
        ConcealerNet(ConcealerConfig(), UTKFACE_SCHEMA, 144)  # 5 stages at 144 px: 144 / 32 is not whole


def test_laplacian_variance_falls_with_blur():
    x = torch.rand(2, 3, 32, 32)
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    assert (laplacian_variance(blurred) < 0.2 * laplacian_variance(x)).all()


def test_the_shipped_64_px_model_behaves_as_before_v2():
    """Outputs and training losses recorded with the code before the v2 levers (tests/data/concealer_v1_reference.json)."""
    model = Concealer.load(REPO / "models" / "concealer-utkface-64")
    assert model.method.discriminator is None and model.method.critic_ensemble is None
    assert model.method.cfg.decoder_upsampling == "transpose"
    images = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(model.encode(images), REFERENCE["codes"], atol=1e-4)
    released = model.apply(images, as_={"gender": "female", "age": 40})
    np.testing.assert_allclose(released.reshape(2, -1).mean(1), REFERENCE["released_mean"], atol=1e-3)
    assert released[:, 0, :4, 0].tolist() == REFERENCE["released_first_row"]
    # training a config without the levers: the same loss terms, step by step
    data = SyntheticFaces(n=64, seed=5, size=32).arrays()
    torch.manual_seed(0)
    vae = ConcealerNet(ConcealerConfig(latent=8, width=8, critic_weight=1.0, classifier_weight=1.0, independence_weight=1.0), data.schema, 32)
    opts = vae.configure_optimizers(1e-3)
    batch = make_batch(data, np.arange(16), torch.device("cpu"))
    for step, want in enumerate(REFERENCE["train_logs"]):
        got = vae.training_step(batch, opts, step)
        assert set(got) == set(want)
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-4), (step, k)


def test_audit_sharpness_and_face_detector_measures():
    from conceal.audit.metrics import faces_found, sharpness, sharpness_ratio
    from conceal.faces.detect import DetectorUnavailable

    images = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    flat = np.full_like(images, 128)
    assert sharpness(images).shape == (3,) and sharpness_ratio(images, flat) == 0 and sharpness_ratio(images, images) == pytest.approx(1)
    try:
        found = faces_found(flat)
    except DetectorUnavailable as error:
        pytest.skip(str(error))
    assert found.dtype == bool and found.shape == (3,) and not found.any()  # grey squares hold no face


def test_frontier_plan_and_baselines(tmp_path, benchmark_script):
    frontier = benchmark_script("concealer_frontier")
    commands = frontier.plan(tmp_path / "base", "critics_weight", [0, 1, 2, 4, 8], 2, tmp_path / "out", 60, "ROOT")
    assert len(commands) == 10 and commands[0][:3] == ["conceal", "train", "concealer"] and "model.critics_weight=0" in commands[0]
    assert commands[1][:2] == ["conceal", "audit"] and "public-model" in commands[1]
    (tmp_path / "out" / "critics_weight-1" / "checkpoint").mkdir(parents=True)
    assert "--resume" in frontier.plan(tmp_path / "base", "critics_weight", [0, 1, 2, 4, 8], 2, tmp_path / "out", 60, "ROOT")[2]
    erased = frontier.plan(tmp_path / "base", "covariance_rank", [0, 8, 16, 24, 32], 2, tmp_path / "out", 60, "ROOT")
    assert erased[2][:2] == ["conceal", "erase"] and erased[2][erased[2].index("--covariance-rank") + 1] == "8"
    assert erased[3][2] == str(tmp_path / "out" / "erase-cov8")  # the audit reads the erased model
    with pytest.raises(SystemExit, match="at least 5"):
        frontier.plan(tmp_path, "critics_weight", [0, 1], 2, tmp_path, 60, "ROOT")
    with pytest.raises(SystemExit, match="must be one of"):
        frontier.plan(tmp_path, "eraser", [0, 1, 2, 3, 4], 2, tmp_path, 60, "ROOT")
    images = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)  # the finest pixelation: 2-px cells
    for kind, strengths in frontier.BASELINES.items():
        released = [frontier.baseline_release(kind, s, images) for s in strengths]
        assert all(r.shape == images.shape and r.dtype == np.uint8 for r in released)
        assert not np.array_equal(released[-1], images)


def test_frontier_collect_reads_points_and_baselines(tmp_path, benchmark_script):
    frontier = benchmark_script("concealer_frontier")

    def entry(score, chance=0.5):
        return {"score": score, "chance": chance}

    fid = {"psnr": {"mean": 18.0}, "ssim": {"mean": 0.5}, "sharpness_ratio": {"reconstruction": 0.4},
           "identity": {"reconstruction": {"same_person_rate": {"mean": 0.4}}, "different_person": {"same_person_rate": {"mean": 0.02}}}}
    point = tmp_path / "erase-cov8"
    (point / "audit").mkdir(parents=True)
    (point / "audit" / "report.json").write_text(json.dumps({"headline": {
        "codes": {"gender": entry(0.69), "race": entry(0.67), "age": entry(14.0, 15.6)},
        "images": {"gender": entry(0.65), "race": entry(0.62), "age": entry(14.9, 15.6)}}}))
    (tmp_path / "fidelity").mkdir()
    (tmp_path / "fidelity" / "erase-cov8.json").write_text(json.dumps(fid))
    (tmp_path / "baselines").mkdir()
    (tmp_path / "baselines" / "blur-0.125.json").write_text(json.dumps({"headline": {"images": {
        "gender": entry(0.7), "race": entry(0.7), "age": entry(13.0, 15.6)}}, "fidelity": {**fid, "identity": {"skipped": "no judge"}}}))
    rows = frontier.collect([point], tmp_path / "fidelity", tmp_path / "baselines")
    assert [r["point"] for r in rows] == ["erase-cov8", "blur-0.125"]
    assert rows[0]["codes_gender"] == 0.69 and rows[0]["age_mean_guess"] == 15.6 and rows[0]["same_person"] == 0.4
    assert rows[1]["codes_gender"] is None and rows[1]["images_gender"] == 0.7 and rows[1]["same_person"] is None
    table = frontier.markdown(rows)
    assert "| erase-cov8 | 0.690 / 0.670 / 14.00 |" in table and "| blur-0.125 | — / — / — | 0.700 / 0.700 / 13.00 |" in table
    frontier.figure(rows, tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").stat().st_size > 0


@pytest.mark.parametrize("upsampling", ["transpose", "nearest"])
def test_decoder_upsampling_shapes_save_load_and_folding(faces, tmp_path, upsampling):
    from conceal.methods.blocks import fold_for_inference

    vae = tiny(faces, decoder_upsampling=upsampling)
    kinds = {type(m).__name__ for m in vae.decoder}
    assert ("ConvTranspose2d" in kinds) == (upsampling == "transpose") and ("Upsample" in kinds) == (upsampling == "nearest")
    mu, _ = vae.encode(torch.rand(3, 3, 32, 32))
    assert vae.decode(mu, labels(3)).shape == (3, 3, 32, 32)
    cfg = RunConfig(method="concealer", train=TrainConfig(epochs=1, batch_size=16, progress=False, threads=1))
    cfg.data.size, cfg.model = 32, dataclasses.replace(ConcealerConfig.tiny(), decoder_upsampling=upsampling)
    fit(vae, faces.subset("train"), faces.subset("val"), cfg, tmp_path / "run", stop_after_steps=2, log=lambda *_: None)
    images = faces.images[:4]
    saved, fresh = Concealer.load(tmp_path / "run"), Concealer(vae)
    assert saved.method.cfg.decoder_upsampling == upsampling
    assert np.array_equal(saved.apply(images, as_={"gender": "male", "age": 30}), fresh.apply(images, as_={"gender": "male", "age": 30}))
    # the inference rewrites (batch norm folded; nearest + a 4-channel 3x3 conv as one low-res conv + pixel shuffle)
    net = saved.method.eval()
    z, y = torch.randn(4, net.cfg.latent), labels(4)
    with torch.no_grad():
        want = net.decode(z, y)
        assert fold_for_inference(net.decoder) >= 1
        torch.testing.assert_close(net.decode(z, y), want, atol=1e-5, rtol=0)


def test_unknown_decoder_upsampling_is_one_line_error():
    from conceal.config import ConfigError, from_dict

    assert from_dict(ConcealerConfig, {}).decoder_upsampling == "transpose"  # a config without it: the 64-px models' decoder
    with pytest.raises(ConfigError, match="decoder_upsampling must be one of transpose, nearest"):
        from_dict(ConcealerConfig, {"decoder_upsampling": "bilinear"}, "model")


def test_pooled_sharpness_is_not_fooled_by_a_checkerboard():
    from conceal.audit.metrics import sharpness_ratio

    smooth = np.repeat(np.linspace(60, 200, 32)[None, :, None], 32, 0).repeat(3, 2)[None]  # (1, 32, 32, 3) ramp
    checker = (np.indices((32, 32)).sum(0) % 2 * 24 - 12)[None, :, :, None]  # period-2 pattern, ±12 levels
    inputs = np.clip(smooth + np.random.default_rng(0).normal(0, 20, (1, 32, 32, 3)), 0, 255).astype(np.uint8)
    render = np.clip(smooth + checker, 0, 255).astype(np.uint8)  # no detail, only the checkerboard
    assert sharpness_ratio(inputs, render) > 0.5 and sharpness_ratio(inputs, render, pool=2) < 0.05


def test_eraser_holdout_attack_reads_signal_and_not_noise(benchmark_script):
    holdout = benchmark_script("concealer_eraser_holdout")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    signal = rng.normal(size=(400, 4)) + 3 * y[:, None]  # gender written in every column
    noise = rng.normal(size=(400, 4))
    assert holdout.attack(signal[:300], y[:300], signal[300:], y[300:], "binary") > 0.9
    assert holdout.attack(noise[:300], y[:300], noise[300:], y[300:], "binary") < 0.7
    classes = rng.integers(0, 3, 400)
    three = rng.normal(size=(400, 4)) + 3 * np.eye(3)[classes][:, [0, 1, 2, 0]]
    assert holdout.attack(three[:300], classes[:300], three[300:], classes[300:], "categorical") > 0.9
