"""Anonymizer (AIA): shapes, phases, pairs, the Random baseline, the API, resume, and verification after fine-tuning on synthetic faces."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import balanced_accuracy_score

from conceal.audit.attackers import split_halves
from conceal.cli import main
from conceal.config import ConfigError, RunConfig, TrainConfig
from conceal.data.synthetic import SyntheticFaces
from conceal.methods import load_api
from conceal.methods.anonymizer import Anonymizer, AnonymizerNet, AnonymizerConfig, contrastive_loss, pair_masks, random_baseline
from conceal.train import fit
from conceal.modelfile import write_model_files
from conceal.train.loop import make_batch

SMALL = dict(encoder_widths=(4, 6), decoder_widths=(8, 4), code_size=16, adversary_hidden=8, siamese_hidden=16, embedding=8)


def small_aia(schema, size=32, **changes) -> AnonymizerNet:
    torch.manual_seed(0)
    return AnonymizerNet(AnonymizerConfig(**(SMALL | changes)), schema, size)


def test_shapes(synthetic_small):
    method = small_aia(synthetic_small.schema)
    x = torch.rand(5, 3, 32, 32)
    codes = method.encode(x)
    assert codes.shape == (5, 16) == (5, method.code_dim)
    recon = method.decode(codes)
    assert recon.shape == (5, 1, 32, 32) and recon.min() >= 0 and recon.max() <= 1
    released = method(x)
    assert released.shape == (5, 3, 32, 32) and torch.equal(released[:, 0], released[:, 2])
    assert method.siamese(recon).shape == (5, 8)
    # Without code_size, g is the flattened map of the last encoder block: 6 channels x 8 x 8.
    assert small_aia(synthetic_small.schema, code_size=None).encode(x).shape == (5, 6 * 8 * 8)


@pytest.mark.parametrize(
    "changes, error",
    [
        (dict(variant="fancy"), ValueError),
        (dict(decoder_widths=(8,)), ValueError),  # one decoder block per encoder block
        (dict(encoder_widths=(4, 4, 4, 4, 4, 4)), ValueError),  # 32 is not a multiple of 64
        (dict(private="age"), ValueError),  # continuous: no BCE adversary for it
        (dict(private="height"), KeyError),
    ],
)
def test_config_errors(synthetic_small, changes, error):
    with pytest.raises(error):
        small_aia(synthetic_small.schema, **changes)


def test_variants_switch_the_finetuning_weights(synthetic_small):
    variants = ("aia", "original", "aia_no_utility")
    weights = {v: small_aia(synthetic_small.schema, variant=v, alpha=0.3, beta=0.7).weights for v in variants}
    assert weights == {"aia": (0.3, 0.7), "original": (0.0, 0.0), "aia_no_utility": (0.0, 0.7)}


def test_phase_is_a_function_of_the_step(synthetic_small):
    """Before pretrain_steps every variant takes the same update (components learn alone); after, they differ."""
    batch = make_batch(synthetic_small, np.arange(16), torch.device("cpu"))

    def one_step(variant, step):
        method = small_aia(synthetic_small.schema, variant=variant, pretrain_steps=5)
        method.training_step(batch, method.configure_optimizers(1e-2), step)
        return method.state_dict()

    for step, alike in ((4, True), (5, False)):
        aia, original = one_step("aia", step), one_step("original", step)
        assert all(torch.equal(aia[k], original[k]) for k in aia) == alike, step


def test_pairs_and_contrastive_loss():
    identity = torch.tensor([3, 3, -1, 5, -1])
    same, different = pair_masks(identity)
    assert same.nonzero().tolist() == [[0, 1]]
    assert different.sum() == 10 - 1 and different[2, 4]  # unknown identities count as different people
    assert not (same | different).tril().any()  # each unordered pair once, never an image with itself

    # Zero when every positive coincides and every negative is at least the margin apart.
    anchors = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [3.0, 3.0]])
    loss, distances = contrastive_loss(anchors, anchors.clone(), identity, margin=2.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert len(distances["positive"]) == 5 + 1 and len(distances["negative"]) == 9
    # A negative pair closer than the margin costs ½ (m − D)², averaged over the negatives.
    loss, _ = contrastive_loss(anchors[[0, 2]], anchors[[0, 2]], torch.tensor([0, 1]), margin=4.0)
    assert loss.item() == pytest.approx(0.5 * (4.0 - 3.0) ** 2, abs=1e-4)


def test_random_baseline_replaces_exactly_half_of_the_entries():
    codes = np.random.default_rng(0).normal(3.0, 2.0, size=(20, 7))  # 140 entries
    released = random_baseline(codes, seed=1)
    assert released.shape == codes.shape and released.dtype == np.float32
    assert released.min() >= 0 and released.max() <= 1
    scaled = (codes - codes.min(0)) / (codes.max(0) - codes.min(0))
    replaced = ~np.isclose(released, scaled, atol=1e-6)
    assert replaced.sum() == 70
    np.testing.assert_array_equal(random_baseline(codes, seed=1), released)  # seeded
    assert not np.array_equal(random_baseline(codes, seed=2), released)


def test_api_and_generic_checkpoint(synthetic_small, tmp_path):
    method = small_aia(synthetic_small.schema).eval()
    cfg = RunConfig(method="anonymizer", model=method.cfg)
    cfg.data.size = 32
    write_model_files(tmp_path, method, cfg)
    model = load_api(tmp_path)
    assert isinstance(model, Anonymizer)
    images = synthetic_small.images[:6]
    codes = model.encode(images)
    assert codes.shape == (6, 16) and codes.dtype == np.float32
    np.testing.assert_array_equal(codes, Anonymizer(method).encode(images))  # reloaded = the same model
    released = model.apply(images)
    assert released.shape == (6, 32, 32, 3) and released.dtype == np.uint8
    assert (released[..., 0] == released[..., 1]).all() and (released[..., 1] == released[..., 2]).all()  # gray
    assert model.embed(images).shape == (6, 8)
    assert model.encode(images[:0]).shape == (0, 16) and model.apply(images[:0]).shape == (0, 32, 32, 3)
    with pytest.raises(ValueError):
        model.encode(np.zeros((2, 64, 64, 3), np.uint8))
    assert model.apply_options == ()  # the CLI refuses --as for it
    with pytest.raises(ConfigError, match="--as is not an option of anonymizer models"):
        model.check_options(as_={"gender": "female"})


def test_resume_across_the_phase_boundary_is_exact(synthetic_small, tmp_path):
    def run(directory, stop_after=None, resume=False):
        cfg = RunConfig(method="anonymizer", train=TrainConfig(epochs=2, batch_size=32, progress=False, seed=3))
        cfg.data.size, cfg.model = 32, AnonymizerConfig(**SMALL, pretrain_steps=18)
        method = small_aia(synthetic_small.schema, pretrain_steps=18)
        return fit(method, synthetic_small.subset("train"), synthetic_small.subset("val"), cfg, directory,
                   resume=resume, stop_after_steps=stop_after, log=lambda *_: None)

    whole = run(tmp_path / "whole")
    assert run(tmp_path / "split", stop_after=10)["stopped"] == "steps"  # still pretraining (15 batches/epoch)
    resumed = run(tmp_path / "split", resume=True)  # fine-tunes from step 18 on
    assert resumed["step"] == whole["step"] == 30
    a = load_file(tmp_path / "whole" / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "split" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert whole["history"][-1]["train"]["finetune"] == pytest.approx(12 / 15)


def test_cli_train_encode_apply(tmp_path):
    run = tmp_path / "run"
    sets = [f"model.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in SMALL.items()]
    argv = ["train", "anonymizer", "--dataset", "synthetic", "--set", "data.synthetic_n=200", "--size", "32", "--epochs", "1",
            "--batch-size", "32", "--alpha", "0.25", "--beta", "0.75", "-o", str(run), "--no-progress"]
    assert main(argv + [x for s in sets for x in ("--set", s)]) == 0
    model_config = tomllib.loads((run / "config.toml").read_text())["model"]
    assert (model_config["alpha"], model_config["beta"]) == (0.25, 0.75)  # the issue's --alpha/--beta flags
    faces = SyntheticFaces(n=3, seed=9, size=32).arrays().images
    from conceal.data.images import write_image

    for i, face in enumerate(faces):
        write_image(tmp_path / "in" / f"face{i}.png", face)
    assert main(["encode", str(run), str(tmp_path / "in"), "-o", str(tmp_path / "codes.npz"), "--no-detect"]) == 0
    assert np.load(tmp_path / "codes.npz")["codes"].shape == (3, 16)
    assert main(["apply", str(run), str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-detect"]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    assert main(["apply", str(run), str(tmp_path / "in"), "-o", str(tmp_path / "out2"), "--as", "gender=female"]) == 2


# --- utility after fine-tuning, on synthetic faces ----------------------------------------------------

PRETRAIN, FINETUNE, BATCH = 100, 200, 32


def verification_accuracy(embeddings: np.ndarray, identity: np.ndarray) -> float:
    """Balanced accuracy of "same person iff L2 distance < t": t picked on pairs among one half of the people,
    scored on pairs among the other half."""

    def pairs(rows):
        i, j = np.triu_indices(len(rows), 1)
        i, j = rows[i], rows[j]
        return np.linalg.norm(embeddings[i] - embeddings[j], axis=1), identity[i] == identity[j]

    fit_rows, score_rows = split_halves(len(embeddings), seed=0, groups=identity)
    distance, same = pairs(fit_rows)
    threshold = max(np.quantile(distance, np.linspace(0, 1, 101)), key=lambda t: balanced_accuracy_score(same, distance < t))
    distance, same = pairs(score_rows)
    return balanced_accuracy_score(same, distance < threshold)


@pytest.fixture(scope="module")
def finetuned_verification():
    """Verification accuracy on new people of AIA after the paper's schedule (pretraining, then fine-tuning
    with α = β = 0.5). Whether AIA hides gender better than the Original variant is not asserted here: it does
    not (measured over seeds, see conceal.methods.anonymizer's docstring; at LFW scale benchmarks/anonymizer_compare.md)."""
    train = SyntheticFaces(n=1000, seed=0, size=32).arrays()
    held_out = SyntheticFaces(n=600, seed=2, size=32).arrays()  # other people than in training
    cfg = AnonymizerConfig(decoder_widths=(16, 8), pretrain_steps=PRETRAIN)  # the paper's α = β = 0.5
    torch.manual_seed(0)
    method = AnonymizerNet(cfg, train.schema, 32)
    optimizers = method.configure_optimizers(1e-3)
    rng = np.random.default_rng(0)
    for step in range(PRETRAIN + FINETUNE):
        index = np.sort(rng.choice(len(train), BATCH, replace=False))
        method.training_step(make_batch(train, index, torch.device("cpu")), optimizers, step)
    return verification_accuracy(Anonymizer(method).embed(held_out.images), held_out.identity)


@pytest.mark.slow
def test_finetuned_representation_still_verifies_faces(finetuned_verification):
    assert finetuned_verification > 0.6, finetuned_verification


LEVERS = dict(critics=2, critics_weight=1.0, critics_restart_every=3, image_critics=2, image_critics_weight=1.0,
              image_critic_widths=(4, 4), hsic_weight=1.0)


def test_critic_steps_never_update_the_autoencoder_and_the_autoencoder_step_never_updates_critics(synthetic_small):
    """Issue 20: the code and image critics learn from detached releases with their own optimizers; the
    autoencoder's loss reaches the encoder through them but never moves their weights."""
    method = small_aia(synthetic_small.schema, pretrain_steps=0, **LEVERS)
    opts = method.configure_optimizers(1e-2)
    batch = make_batch(synthetic_small, np.arange(16), torch.device("cpu"))

    def snapshot(parts):
        return {n: p.clone() for n, p in method.named_parameters() if n.split(".")[0] in parts}

    critic_parts = ("code_critics", "image_critics")
    autoencoder = {n: p.clone() for n, p in method.named_parameters() if n.split(".")[0] not in method.OWN_OPTIMIZER}
    critics = snapshot(critic_parts)
    out = method._losses(batch, detach_utility=False)
    logs: dict = {}
    terms = method._independence_losses(out, batch, opts, 1, logs)  # each ensemble takes its step here
    now = dict(method.named_parameters())
    assert all(torch.equal(now[n], p) for n, p in autoencoder.items()), "a critic step moved the autoencoder"
    for part in critic_parts:
        assert any(not torch.equal(now[n], p) for n, p in critics.items() if n.startswith(part)), f"{part} did not learn"
    assert {"critics", "confusion", "image_critics", "image_confusion", "hsic"} <= set(logs) and torch.isfinite(terms)

    critics_after = snapshot(critic_parts)
    opts["autoencoder"].zero_grad(set_to_none=True)
    (out["recon"] + terms).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in now.items() if n.startswith("encoder"))
    opts["autoencoder"].step()
    assert all(torch.equal(now[n], p) for n, p in critics_after.items()), "the autoencoder step moved a critic"
    assert any(not torch.equal(now[n], p) for n, p in autoencoder.items() if n.startswith("encoder"))


def test_levers_are_off_by_default_and_leave_the_paper_s_step_unchanged(synthetic_small):
    batch = make_batch(synthetic_small, np.arange(16), torch.device("cpu"))
    plain, zero = small_aia(synthetic_small.schema, pretrain_steps=0), small_aia(synthetic_small.schema, pretrain_steps=0)
    assert plain.code_critics is None and plain.image_critics is None
    assert plain.training_step(batch, plain.configure_optimizers(1e-2), 0) == zero.training_step(batch, zero.configure_optimizers(1e-2), 0)


def test_image_critics_restart_their_convolutions(synthetic_small):
    method = small_aia(synthetic_small.schema, **LEVERS)
    ensemble, opt = method.image_critics, method.configure_optimizers(1e-2)["image_critics"]
    before = [p.clone() for p in ensemble.critics[1].parameters()]
    assert ensemble.restart_due(3 - 3 // 2, opt) == 1  # critic 1 of 2 restarts half a period early (staggered)
    conv = [m for m in ensemble.critics[1].modules() if isinstance(m, torch.nn.Conv2d)]
    assert conv and not torch.equal(conv[0].weight, before[0])
