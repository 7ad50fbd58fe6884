"""The audit: attackers find planted signals and report chance on noise; reports parse; the end-to-end
audit of a tiny concealer writes a complete report with or without the judges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conceal.audit.attackers import attack_images, attack_vectors, audit_vectors, combine, pixel_baseline, split_halves
from conceal.audit.judges import judges_available
from conceal.audit.metrics import classification_metrics, mean_interval, psnr, regression_metrics, ssim
from conceal.audit.report import num, render_markdown, to_plain, write_report
from conceal.data.schema import AGE, GENDER, RACE, LabelSchema

SCHEMA = LabelSchema((AGE, GENDER, RACE))
_STATUS = judges_available()


def _planted(n: int, seed: int, signal: float):
    """Codes (n, 16) whose first dims carry gender, race and age with strength ``signal`` (0 = pure noise)."""
    rng = np.random.default_rng(seed)
    gender = rng.integers(0, 2, n).astype(np.float32)
    race = rng.integers(0, 5, n).astype(np.float32)
    age = rng.uniform(0, 90, n).astype(np.float32)
    X = rng.standard_normal((n, 16)).astype(np.float32)
    X[:, 0] += signal * (2 * gender - 1)
    X[:, 1:6] += signal * np.eye(5, dtype=np.float32)[race.astype(int)]
    X[:, 6] += signal * (age - 45) / 25
    return X, {"gender": gender, "race": race, "age": age}


def _mean(result: dict, attacker: str, metric: str) -> float:
    return result["attackers"][attacker][metric]["mean"]


# --- splits and metrics ---------------------------------------------------------------------------


def test_split_halves_are_disjoint_deterministic_and_keep_identities_together():
    train, test = split_halves(101, seed=3)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 101
    assert np.array_equal(train, split_halves(101, seed=3)[0])
    assert not np.array_equal(train, split_halves(101, seed=4)[0])
    identity = np.repeat(np.arange(20), 5)
    identity[:5] = -1  # unknown identities are each their own group
    train, test = split_halves(100, seed=0, groups=identity)
    assert not set(identity[train][identity[train] >= 0]) & set(identity[test][identity[test] >= 0])
    assert 35 <= len(train) <= 65


def test_metrics_wrap_the_libraries_and_handle_missing_classes():
    y = np.array([0, 0, 1, 1])
    m = classification_metrics(y, np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]]), GENDER)
    assert m == {"accuracy": 1.0, "balanced_accuracy": 1.0, "auc": 1.0}
    # Categorical, class 4 absent from the test rows: macro one-vs-rest over the classes present.
    scores = np.eye(5)[[0, 1, 2, 3, 0, 1]]
    m = classification_metrics(np.array([0, 1, 2, 3, 0, 1]), scores, RACE)
    assert m["balanced_accuracy"] == 1.0 and m["auc"] == 1.0
    assert np.isnan(classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.4, 0.6]]), GENDER)["auc"])
    assert regression_metrics(np.array([10.0, 20.0]), np.array([12.0, 16.0])) == {"mae": 3.0, "rmse": pytest.approx(np.sqrt(10))}
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    assert np.all(ssim(images, images) == 1.0) and np.all(np.isinf(psnr(images, images)))
    interval = mean_interval(np.r_[np.zeros(50), np.ones(50)], seed=0)
    assert interval["lo"] < 0.5 < interval["hi"]


# --- vector attackers -----------------------------------------------------------------------------


def test_vector_attackers_recover_a_planted_signal():
    X, y = _planted(600, seed=0, signal=3.0)
    train, test = np.arange(300), np.arange(300, 600)
    for name in ("gender", "race"):
        result = attack_vectors(X[train], y[name][train], X[test], y[name][test], SCHEMA[name], seeds=(0,))
        assert _mean(result, "linear", "balanced_accuracy") > 0.9, name
        assert _mean(result, "mlp", "auc") > 0.95, name
        assert _mean(result, "baseline", "balanced_accuracy") == pytest.approx(result["chance_balanced_accuracy"])
    age = attack_vectors(X[train], y["age"][train], X[test], y["age"][test], AGE, seeds=(0,))
    assert _mean(age, "linear", "mae") < 0.5 * _mean(age, "baseline", "mae")
    assert age["best"]["mae"] < 0.5 * _mean(age, "baseline", "mae")


def test_vector_attackers_report_chance_on_noise():
    X, y = _planted(600, seed=1, signal=0.0)
    results = audit_vectors(X, y, SCHEMA, seeds=(0, 1))
    for attacker in ("linear", "mlp"):
        assert abs(_mean(results["gender"], attacker, "balanced_accuracy") - 0.5) < 0.1
        assert abs(_mean(results["gender"], attacker, "auc") - 0.5) < 0.1
        assert abs(_mean(results["race"], attacker, "balanced_accuracy") - 0.2) < 0.1
        assert abs(_mean(results["race"], attacker, "auc") - 0.5) < 0.1
        assert _mean(results["age"], attacker, "mae") > 0.9 * _mean(results["age"], "baseline", "mae")
    assert results["gender"]["seeds"] == [0, 1] and results["gender"]["attackers"]["linear"]["accuracy"]["n"] == 2


def test_unknown_labels_are_left_out_and_counted():
    X, y = _planted(300, seed=2, signal=3.0)
    y["gender"][:40] = np.nan
    result = audit_vectors(X, {"gender": y["gender"]}, SCHEMA, seeds=(0,))["gender"]
    assert result["n_unknown"] == 40 and result["n_known"] == 260
    assert result["n_train"] + result["n_test"] == 260
    assert _mean(result, "linear", "balanced_accuracy") > 0.9
    tiny = audit_vectors(X[:10], {"gender": y["gender"][:10]}, SCHEMA, seeds=(0,))["gender"]
    assert "skipped" in tiny  # every label unknown: nothing to attack, said plainly


def test_pixel_baseline_reads_a_visual_signal_through_pca():
    rng = np.random.default_rng(0)
    gender = rng.integers(0, 2, 200).astype(np.float32)
    images = rng.integers(60, 120, (200, 8, 8, 3)).astype(np.uint8)
    images[gender == 1, :4] += 100  # "female" faces have a bright top half
    result = pixel_baseline(images, {"gender": gender}, SCHEMA, n_components=4, seeds=(0,))["gender"]
    assert _mean(result, "linear", "balanced_accuracy") > 0.95


def test_combine_merges_attacker_families_run_on_the_same_halves():
    X, y = _planted(200, seed=4, signal=2.0)
    strong = audit_vectors(X, {"gender": y["gender"]}, SCHEMA, seeds=(0,))["gender"]
    weak = audit_vectors(X[:, 8:], {"gender": y["gender"]}, SCHEMA, seeds=(0,))["gender"]  # no signal there
    merged = combine({"cnn": weak, "pca": strong})
    assert set(merged["attackers"]) == {"baseline", "cnn-linear", "cnn-mlp", "pca-linear", "pca-mlp"}
    assert merged["best"]["attacker"].startswith("pca-") and merged["best"]["balanced_accuracy"] > 0.8
    with pytest.raises(ValueError, match="same seeds"):
        combine({"a": strong, "b": audit_vectors(X, {"gender": y["gender"]}, SCHEMA, seeds=(1,))["gender"]})


# --- image attacker -------------------------------------------------------------------------------


def _squares(n: int, seed: int, planted: bool):
    """Noisy 32x32 images; when ``planted``, label 1 has a bright square, label 0 a dark one."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.float32)
    images = rng.integers(70, 150, (n, 32, 32, 3)).astype(np.uint8)
    if planted:
        for i in range(n):
            r, c = rng.integers(0, 22, 2)
            images[i, r : r + 10, c : c + 10] = 240 if y[i] else 10
    return images, y


def test_image_cnn_recovers_a_planted_visual_signal_quickly():
    images, y = _squares(240, seed=0, planted=True)
    result = attack_images(images[:160], y[:160], images[160:], y[160:], GENDER, epochs=4, size=16, min_steps=40)
    assert _mean(result, "cnn", "balanced_accuracy") > 0.9
    assert _mean(result, "baseline", "balanced_accuracy") == 0.5


def test_image_cnn_reports_chance_on_noise():
    images, y = _squares(240, seed=1, planted=False)
    result = attack_images(images[:160], y[:160], images[160:], y[160:], GENDER, epochs=4, size=16, min_steps=40)
    assert abs(_mean(result, "cnn", "balanced_accuracy") - 0.5) < 0.15


# --- report ---------------------------------------------------------------------------------------


def test_report_is_strict_json_with_baselines_in_the_markdown(tmp_path):
    X, y = _planted(200, seed=3, signal=2.0)
    leak = audit_vectors(X, y, SCHEMA, seeds=(0,))
    sections = {
        "provenance": {"model": "m", "dataset": "synthetic", "seed": 0},
        "code_leakage": {"code_dim": 16, "n": 200, "seeds": [0], "original": "pixels",
                         "labels": {k: {"concealed": True, "codes": v, "original": v} for k, v in leak.items()}},
        "reconstruction": {"n": 3, "psnr": {"mean": float("inf")}, "ssim": {"mean": float("nan")}},
        "extra": {"value": np.float32(0.123456789)},
    }
    path = write_report(sections, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["extra"]["value"] == 0.1235 and data["reconstruction"]["ssim"]["mean"] is None
    text = path.read_text()
    assert "majority acc" in text and "chance bal. acc" in text and "mean-guess MAE" in text
    assert "## extra" in text  # unknown sections still appear
    assert render_markdown(to_plain(sections)) == text


# --- several concealer audits side by side --------------------------------------------------------

SHIPPED_REPORT = Path(__file__).resolve().parents[1] / "models" / "concealer-utkface-64" / "audit" / "report.json"


def _variant(tmp_path, name: str, **config) -> Path:
    """The shipped concealer's report.json under another model_config (its numbers nudged, to tell rows apart)."""
    report = json.loads(SHIPPED_REPORT.read_text())
    report["provenance"]["model_config"] |= config
    mlp = report["code_leakage"]["labels"]["gender"]["codes"]["attackers"]["mlp"]["balanced_accuracy"]
    mlp["mean"] = 0.5 + 0.001 * config.get("latent", 48)
    report["rendering"]["avg_age_rmse"] = 10 + config.get("latent", 48) / 100
    path = tmp_path / name / "report.json"
    path.parent.mkdir()
    path.write_text(json.dumps(report))
    return path


def test_compare_concealers_puts_each_latent_beside_the_paper(tmp_path):
    from conceal.audit.concealer import PAPER_REFERENCE, compare_concealers

    paths = [_variant(tmp_path, "c100", latent=100, eraser_rank=0), _variant(tmp_path, "c48", latent=48)]
    text = compare_concealers(paths)
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and " | RMSE | " in line]
    assert [r[0].lstrip("| ") for r in rows] == ["latent 48 + eraser (rank 14)", "latent 100", f"paper: {PAPER_REFERENCE['source']}"]
    assert rows[0][7] == "10.48" and rows[1][7] == "11.00" and rows[2][7] == num(PAPER_REFERENCE["avg_age_rmse"], 2)
    assert rows[0][2:7] == ["9.55", "8.35", "9.18", "14.93", "22.03"] and rows[2][2:7] == ["—"] * 5  # the paper's row: only its averages
    leakage = [line for line in text.splitlines() if line.startswith("| latent ") and "(mlp)" in line]
    assert [line.split(" | ")[1] for line in leakage] == ["0.479 / 0.548", "0.479 / 0.600"]
    assert "original faces" in text and "Not like for like" not in text
    assert text.count("| latent 100 | ") == 2 + 3 + 1  # RMSE, MAE; female, male, both; leakage

    other = json.loads(paths[0].read_text())
    other["provenance"]["n_test_faces"] = 500
    paths[0].write_text(json.dumps(other))
    assert "Not like for like" in compare_concealers(paths)


def test_leakage_sweep_figure_draws_only_what_varies(tmp_path):
    from conceal.audit.concealer import leakage_sweep_figure

    paths = [_variant(tmp_path, "c100", latent=100), _variant(tmp_path, "c48", latent=48), _variant(tmp_path, "c64", latent=64)]
    figure = leakage_sweep_figure(paths, tmp_path / "latent.png")
    assert figure == str(tmp_path / "latent.png") and (tmp_path / "latent.png").read_bytes()[:4] == b"\x89PNG"
    assert leakage_sweep_figure(paths, tmp_path / "kl.png", by="kl_weight") is None and not (tmp_path / "kl.png").exists()
    with pytest.raises(ValueError, match="by must be one of"):
        leakage_sweep_figure(paths, tmp_path / "x.png", by="width")


def test_concealer_compare_script_writes_the_tables_and_figures(tmp_path, benchmark_script):
    module = benchmark_script("concealer_compare")
    paths = [_variant(tmp_path, "c100", latent=100, kl_weight=0.5), _variant(tmp_path, "c48", latent=48)]
    module.main([*map(str, paths), "-o", str(tmp_path / "out" / "compare")])
    text = (tmp_path / "out" / "compare.md").read_text()
    assert "Table 1" in text and "(compare_latent.png)" in text and "(compare_kl_weight.png)" in text
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["compare_kl_weight.png", "compare_latent.png"]  # eraser rank: 14 in both


# --- end to end -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tiny_models):
    """The session's tiny concealer (32 px, two steps on 600 synthetic faces; its quality is beside the point)."""
    return tiny_models["concealer"]


FAST = {"vector_seeds": 2, "cnn_epochs": 1, "cnn_min_steps": 3, "judge_faces": 6, "identity_faces": 5}


@pytest.mark.slow
def test_audit_without_judges_writes_a_complete_deterministic_report(tiny_model, tmp_path, capsys):
    from conceal.audit import run_audit

    once = FAST | {"vector_seeds": 1}  # determinism needs one seed; two are what the other tests use
    path = run_audit(tiny_model, dataset="synthetic", out=tmp_path / "a", max_images=200, judges="off", command="test", threat_model="test-halves", **once)
    assert "[audit] a. leakage of concealed codes" in capsys.readouterr().out
    data = json.loads((tmp_path / "a" / "report.json").read_text())
    assert data["provenance"]["method"] == "concealer" and data["provenance"]["command"] == "test"
    gender = data["code_leakage"]["labels"]["gender"]
    assert gender["concealed"] and "baseline" in gender["codes"]["attackers"] and gender["codes"]["chance_balanced_accuracy"] == 0.5
    assert set(data["image_leakage"]["labels"]) == {"age", "gender", "race"}
    assert not data["code_leakage"]["labels"]["smile"]["concealed"]  # kept labels are measured too
    assert "unavailable" in data["rendering"]["skipped"] and "skipped" in data["reconstruction"]["identity"]
    assert (tmp_path / "a" / "grid.png").is_file() and (tmp_path / "a" / "leakage.png").is_file()
    text = path.read_text()
    assert "Judges unavailable" in text and "majority acc" in text

    run_audit(tiny_model, dataset="synthetic", out=tmp_path / "b", max_images=200, judges="off", command="test", threat_model="test-halves", log=lambda _: None, **once)
    again = json.loads((tmp_path / "b" / "report.json").read_text())
    for report in (data, again):
        report.pop("timings"), report["provenance"].pop("date"), report["provenance"].pop("wall_seconds"), report["provenance"].pop("load")
    assert again == data


class FakeAgeGender:
    """Reads "female" from brightness and age from the red channel: enough to exercise the judged sections."""

    name = "fake"

    def predict(self, images):
        images = np.asarray(images, np.float32)
        return {"p_female": (images.mean(axis=(1, 2, 3)) > 128).astype(np.float32), "age": images[..., 0].mean(axis=(1, 2)) / 3,
                "face_found": np.ones(len(images), bool)}


class FakeEmbedding:
    name = "fake"

    def embed(self, images):
        return np.asarray(images, np.float32).reshape(len(images), -1)[:, :128] / 255 + 1e-3

    def cosine(self, a, b):
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.slow
def test_judged_sections_with_stand_in_judges(tiny_model, tmp_path):
    from conceal.audit.concealer import TARGET_AGES, audit_concealer
    from conceal.audit import load_test_split
    from conceal.modelfile import read_model_info

    test = load_test_split(read_model_info(tiny_model), "synthetic", None, 40, 0, log=lambda _: None)
    sections = audit_concealer(tiny_model, test, tmp_path, judges={"age_gender": FakeAgeGender(), "face_embedding": FakeEmbedding()},
                               log=lambda _: None, **FAST)
    rendering = sections["rendering"]
    assert len(rendering["targets"]) == 2 * len(TARGET_AGES) and rendering["n_faces"] == 6
    assert rendering["paper_reference"]["avg_age_rmse"] == 15.06
    assert 0 <= rendering["gender_agreement"]["mean"] <= 1
    assert set(sections["reconstruction"]["identity"]) >= {"reconstruction", "released", "different_person"}
    text = write_report(sections, tmp_path).read_text()
    assert "flips" in text and "Judge calibration" in text and "Judges unavailable" not in text


@pytest.mark.slow
@pytest.mark.skipif(any(_STATUS.values()), reason=f"judges unavailable: {_STATUS}")
def test_audit_with_the_real_judges(tiny_model, tmp_path):
    from conceal.audit import run_audit

    run_audit(tiny_model, dataset="synthetic", out=tmp_path, max_images=30, threat_model="test-halves", log=lambda _: None, **FAST)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["judges"] == {"age_gender": None, "face_embedding": None}
    assert data["judge_calibration"]["n"] == 6 and data["rendering"]["n_faces"] == 6
    assert data["reconstruction"]["identity"]["n_faces"] == 5


def test_audit_of_an_unregistered_method_is_a_one_line_error(tmp_path):
    from conceal.audit import run_audit
    from conceal.data import DataError

    (tmp_path / "model.json").write_text(json.dumps({"format": "conceal-model/1", "method": "pixelate", "image_size": 64}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(DataError, match="no audit for method 'pixelate' \\(registered methods: anonymizer, concealer, masker\\)"):
        run_audit(tmp_path, out=tmp_path / "report")


def test_a_sweep_point_passes_its_audit_options_and_is_not_audited_twice(benchmark_script, tmp_path, monkeypatch):
    sweep = benchmark_script("sweep")
    calls = []
    monkeypatch.setattr(sweep, "run", lambda cmd: calls.append(cmd))
    report = sweep.audit(tmp_path / "model", tmp_path / "audit", "fer2013", "ROOT", "--max-images 1000 --seed 3")
    assert report == tmp_path / "audit" / "report.json"
    assert calls == [["conceal", "audit", str(tmp_path / "model"), "--dataset", "fer2013", "--root", "ROOT",
                      "-o", str(tmp_path / "audit"), "--max-images", "1000", "--seed", "3"]]
    report.parent.mkdir()
    report.write_text("{}")
    sweep.audit(tmp_path / "model", tmp_path / "audit", "fer2013", "ROOT", "--max-images 1000")
    assert len(calls) == 1  # resumable: a point whose report exists is not redone
    args = sweep.sweep_arguments("d", epochs=1, runs="r", init_from="m", out="o", root=None).parse_args([])
    assert args.audit_options == ""
