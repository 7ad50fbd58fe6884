"""The anonymizer's audit: verification pairs and scores, the Random baseline's two views, the fresh CNN on
released reconstructions, and the end-to-end audit of a tiny anonymizer (report.md/json, Table-1 rows, the
comparison table, the identity judge's path)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conceal.audit.anonymizer import (
    RENDERERS,
    _image_leakage,
    compare_anonymizers,
    gray_images,
    image_attack_summary,
    random_codes,
    verification_pairs,
    verification_scores,
)
from conceal.methods.anonymizer import random_baseline

# A tiny anonymizer: trains one epoch on 600 synthetic faces in a few seconds; its quality is beside the point.
TINY = {"encoder_widths": [4, 6], "decoder_widths": [8, 4], "code_size": 16, "adversary_hidden": 8, "siamese_hidden": 16,
        "embedding": 8, "pretrain_steps": 5}
FAST = {"vector_seeds": 2, "cnn_epochs": 1, "cnn_min_steps": 30}


# --- pairs and scores ------------------------------------------------------------------------------


def test_verification_pairs_are_balanced_distinct_seeded_and_skip_unknown_identities():
    identity = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, -1, -1])
    pairs, same = verification_pairs(identity, max_matched=None, seed=0)
    assert same.sum() == 3 + 1 + 6 == (~same).sum()  # every same-person pair, as many different-person pairs
    assert np.all(identity[pairs] >= 0) and np.all(pairs[:, 0] != pairs[:, 1])
    assert np.array_equal(identity[pairs[:, 0]] == identity[pairs[:, 1]], same)
    assert len({frozenset(p) for p in pairs.tolist()}) == len(pairs)
    np.testing.assert_array_equal(verification_pairs(identity, None, seed=0)[0], pairs)
    capped, capped_same = verification_pairs(identity, max_matched=4, seed=1)
    assert capped_same.sum() == 4 == (~capped_same).sum()
    assert len(verification_pairs(np.full(5, -1), None, seed=0)[0]) == 0


def test_verification_scores_choose_the_threshold_on_validation_pairs():
    rng = np.random.default_rng(0)
    same = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    planted = np.where(same, rng.uniform(0.0, 0.4, 100), rng.uniform(0.6, 1.0, 100))
    scores = verification_scores(planted, same, planted, same)
    assert scores["accuracy"] == scores["auc"] == 1.0
    assert planted[same].max() <= scores["threshold"] < planted[~same].min()  # same person iff distance <= threshold
    assert scores["majority_accuracy"] == 0.5
    noise = verification_scores(rng.uniform(size=100), same, rng.uniform(size=100), same)
    assert 0.3 < noise["auc"] < 0.7


def test_protocol_verification_scores_the_datasets_own_pairs_in_folds():
    from conceal.audit.anonymizer import protocol_verification

    rng = np.random.default_rng(0)
    people = rng.normal(size=(40, 8))
    vectors = np.repeat(people, 2, axis=0) + 0.3 * rng.normal(size=(80, 8))  # rows 2i, 2i+1: person i
    matched = np.stack([np.arange(0, 80, 2), np.arange(1, 80, 2)], 1)  # (40, 2)
    mismatched = np.stack([np.arange(0, 80, 2), (np.arange(0, 80, 2) + 2) % 80], 1)
    pairs = {"rows": np.r_[matched, mismatched], "same": np.r_[np.ones(40, bool), np.zeros(40, bool)],
             "counts": {"pairs_txt_matched": 40, "seeded_mismatched": 40}, "source": "test"}
    result = protocol_verification({"model": {"codes": vectors, "noise": rng.normal(size=(80, 8))}}, pairs, seed=0)
    assert (result["matched"], result["mismatched"], result["folds"]) == (40, 40, 10)
    assert result["model"]["codes"]["accuracy"] > 0.9 and result["model"]["codes"]["auc"] > 0.95
    assert 0.25 < result["model"]["noise"]["accuracy"] < 0.75 and result["model"]["codes"]["majority_accuracy"] == 0.5
    few = pairs | {"rows": pairs["rows"][[0, 40]], "same": np.array([True, False])}
    assert "skipped" in protocol_verification({"model": {"codes": vectors}}, few, seed=0)


class Undecided:
    """A stand-in gender judge that says 0.3 for every face: at chance whatever the input."""

    name = "undecided"

    def predict(self, images):
        return {"p_female": np.full(len(images), 0.3, np.float32)}


def test_judge_leakage_scores_an_off_the_shelf_gender_judge(synthetic_small):
    from conceal.audit.anonymizer import judge_leakage

    test = synthetic_small.subset("test")
    result = judge_leakage(Undecided(), test.images, test, "gender")
    for name in ("released reconstructions", "grayscale originals", "original images"):
        assert result[name] == {"balanced_accuracy": 0.5, "auc": 0.5}
    assert result["n_known"] == len(test) and 0.5 <= result["majority_accuracy"] <= 1
    assert "skipped" in judge_leakage(Undecided(), test.images, test, "smile")
    one_gender = test.select(test.labels["gender"] == 1)
    assert "one gender" in judge_leakage(Undecided(), one_gender.images, one_gender, "gender")["skipped"]


def test_random_codes_are_the_random_baseline_and_map_back_into_the_code_range():
    codes = np.random.default_rng(0).normal(3.0, 2.0, size=(30, 6)).astype(np.float32)
    released, in_code_space = random_codes(codes, seed=2)
    np.testing.assert_array_equal(released, random_baseline(codes, seed=2))
    kept = np.isclose(in_code_space, codes, atol=1e-4)
    assert 0.4 < kept.mean() < 0.6  # half the entries are noise; the rest are g's own values
    assert np.all(in_code_space >= codes.min(0) - 1e-4) and np.all(in_code_space <= codes.max(0) + 1e-4)


# --- a fresh CNN on released reconstructions --------------------------------------------------------


@pytest.mark.slow
def test_image_leakage_cnn_reads_gender_from_released_images_that_carry_it():
    from conceal.data import open_dataset

    faces = open_dataset("synthetic", None, n=600, seed=0).arrays(size=32, progress=False)
    faces = faces.select(np.sort(np.random.default_rng(0).choice(len(faces), 200, replace=False)))
    # Stand-ins for the decoder's output: grayscale faces keep their gender; one flat gray image for all carries none.
    carrying = _image_leakage(gray_images(faces.images), faces, "gender", 0, faces.identity, epochs=2, min_steps=30)
    gender = carrying["labels"]["gender"]
    assert gender["concealed"] and set(gender) == {"concealed", "released", "original"}
    assert gender["released"]["split"] == "identity-disjoint halves" and carrying["seeds"] == [0] and carrying["n"] == 200
    released, original = (row["privacy"] for row in image_attack_summary(carrying))
    for privacy in (released, original):
        assert privacy["attacker"] == "cnn" and privacy["chance_balanced_accuracy"] == 0.5
        assert privacy["balanced_accuracy"] > 0.65 and privacy["auc"] > 0.8
    assert released["majority_accuracy"] == original["majority_accuracy"]  # the same halves for both image sets

    blank = _image_leakage(np.full_like(faces.images, 128), faces, "gender", 0, faces.identity, epochs=1, min_steps=5)
    blank_released = image_attack_summary(blank)[0]["privacy"]
    assert blank_released["balanced_accuracy"] == 0.5 and blank_released["auc"] == 0.5  # one input for all: nothing to read


# --- end to end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_anonymizer(tmp_path_factory):
    from conceal.cli import main

    run = tmp_path_factory.mktemp("anonymizer_run")
    argv = ["train", "anonymizer", "--dataset", "synthetic", "--set", "data.synthetic_n=600", "--size", "32", "--epochs", "1",
            "--batch-size", "32", "--set", "train.threads=1", "-o", str(run), "--no-progress"]
    for key, value in TINY.items():
        argv += ["--set", f"model.{key}={value}"]
    assert main(argv) == 0
    return run


@pytest.fixture(scope="module")
def audited(tiny_anonymizer, tmp_path_factory):
    from conceal.audit import run_audit

    out = tmp_path_factory.mktemp("anonymizer_report")
    logs: list[str] = []
    path = run_audit(tiny_anonymizer, dataset="synthetic", out=out, max_images=300, judges="off", command="test", threat_model="test-halves",
                     log=logs.append, **FAST)
    return path, json.loads((out / "report.json").read_text()), logs


@pytest.mark.slow
def test_audit_of_a_tiny_anonymizer_writes_privacy_and_utility(audited):
    path, data, _ = audited
    assert data["provenance"]["method"] == "anonymizer" and path.is_file()
    rows = {row["row"]: row for row in data["privacy_utility"]["rows"]}
    assert list(rows) == ["AIA", "Random", "raw pixels (reference)"]  # compare_anonymizers and tradeoff_points read them by position
    for row in rows.values():
        privacy = row["privacy"]
        assert privacy["label"] == "gender" and privacy["chance_balanced_accuracy"] == 0.5
        assert 0 <= privacy["balanced_accuracy"] <= 1 and 0 <= privacy["majority_accuracy"] <= 1
        assert privacy["n_known"] == data["provenance"]["n_test_faces"] and privacy["n_unknown"] == 0
    gender = data["code_leakage"]["labels"]["gender"]
    assert {"codes", "random", "original"} <= set(gender) and gender["codes"]["split"] == "identity-disjoint halves"

    verification = data["verification"]
    pairs = verification["pairs"]
    assert pairs["matched"] == pairs["mismatched"] > 0
    assert pairs["validation"]["matched"] + pairs["test"]["matched"] == pairs["matched"]
    for row in ("model", "random"):
        for measure in ("siamese", "codes"):
            assert 0 <= verification[row][measure]["accuracy"] <= 1 and 0 <= verification[row][measure]["auc"] <= 1
    assert rows["AIA"]["utility"]["siamese"]["accuracy"] == verification["model"]["siamese"]["accuracy"]
    assert "skipped" in data["reconstruction_fidelity"]["identity"]
    assert "turned off" in verification["judge_skipped"] and "judge" not in verification["model"]  # judges="off"
    assert "turned off" in data["judge_leakage"]["skipped"]
    assert rows["raw pixels (reference)"]["utility"] is None
    assert (path.parent / data["figures"]["grid"]).is_file() and (path.parent / data["figures"]["leakage"]).is_file()
    assert "majority acc" in path.read_text()
    for key, render in RENDERERS.items():  # the section renderers offered to report.md accept the JSON
        assert render(data[key])[0].startswith("## ")


@pytest.mark.slow
def test_audit_attacks_the_released_reconstructions_with_a_fresh_cnn(audited):
    path, data, logs = audited
    section = data["image_leakage"]
    n = data["provenance"]["n_test_faces"]
    assert section["n"] == n and section["seeds"] == [0] == data["samples"]["cnn_seeds"]
    assert (section["epochs"], section["min_steps"]) == (FAST["cnn_epochs"], FAST["cnn_min_steps"])
    gender = section["labels"]["gender"]
    for key in ("released", "original"):  # the reconstructions, and the originals on the same identity-disjoint halves
        result = gender[key]
        assert set(result["attackers"]) == {"baseline", "cnn"} and result["split"] == "identity-disjoint halves"
        assert result["n_known"] == n and result["chance_balanced_accuracy"] == 0.5
        for metric in ("balanced_accuracy", "auc", "accuracy"):
            assert 0 <= result["attackers"]["cnn"][metric]["mean"] <= 1
        assert 0 <= result["attackers"]["baseline"]["accuracy"]["mean"] <= 1
    assert gender["released"]["attackers"]["baseline"] == gender["original"]["attackers"]["baseline"]  # same halves
    assert [row["privacy"]["label"] for row in data["privacy_utility"]["rows"]] == ["gender"] * 3  # Table 1 is untouched

    text = path.read_text()
    assert "## Released reconstructions, attacked by a fresh CNN" in text
    assert "| gender | released reconstructions | cnn |" in text and "| gender | original images | cnn |" in text
    assert text.index("## Privacy and utility") < text.index("## Released reconstructions")
    assert "image_leakage" in data["timings"]
    cnn_lines = [line for line in logs if "released reconstructions: gender balanced acc" in line]
    assert len(cnn_lines) == 1 and "original images: gender balanced acc" in cnn_lines[0]


@pytest.mark.slow
def test_compare_anonymizers_orders_rows_as_the_paper(audited, tmp_path):
    _, data, _ = audited
    paths = []
    for variant in ("aia", "original", "aia_no_utility"):  # stand-ins: the same numbers under each variant's name
        report = json.loads(json.dumps(data))
        title = {"aia": "AIA", "original": "Original", "aia_no_utility": "AIA\\T"}[variant]
        report["privacy_utility"]["rows"][0] |= {"row": title, "variant": variant}
        report["privacy_utility"]["rows"][1]["variant"] = variant
        report["provenance"]["model_config"]["variant"] = variant  # titles come from the model's config
        paths.append(tmp_path / f"{variant}.json")
        paths[-1].write_text(json.dumps(report))
    lines = compare_anonymizers(paths).splitlines()
    methods = [line.split(" | ")[0].lstrip("| ") for line in lines if line.startswith("| ") and not line.startswith("| method")]
    assert methods == ["Original", "Random (codes of Original)", "AIA\\T", "AIA", "raw pixels (reference)"]


@pytest.mark.slow
def test_compare_released_reads_every_part_and_marks_what_did_not_run(audited, tmp_path):
    from conceal.audit.anonymizer import RELEASED_HEADER, compare_released

    _, data, _ = audited
    with_judges = json.loads(json.dumps(data))  # a stand-in for an audit that ran the judges
    with_judges["judge_leakage"] = {"released reconstructions": {"balanced_accuracy": 0.61, "auc": 0.7}}
    with_judges["verification"]["model"]["judge"] = {"accuracy": 0.87, "auc": 0.95}
    with_judges["verification"]["protocol"] = {"model": {"judge": {"accuracy": 0.86, "accuracy_std": 0.04}}}
    paths = [tmp_path / "plain.json", tmp_path / "judged.json"]
    paths[0].write_text(json.dumps(data))
    paths[1].write_text(json.dumps(with_judges))
    lines = [line for line in compare_released(paths).splitlines() if line.startswith("| AIA")]
    assert len(lines) == 2 and all(line.count(" | ") == len(RELEASED_HEADER) - 1 for line in lines)
    plain, judged = lines
    assert plain.count("—") == 3  # judges off: no judge attack, no judge verification, no protocol
    assert "0.610 / 0.700" in judged and "0.870 / 0.950" in judged and "0.860 ± 0.040" in judged
    siamese = data["verification"]["model"]["siamese"]
    assert f"{siamese['accuracy']:.3f} / {siamese['auc']:.3f}" in plain


@pytest.mark.slow
def test_anonymizer_compare_script_writes_both_tables(audited, tmp_path, benchmark_script):
    path, _, _ = audited
    module = benchmark_script("anonymizer_compare")
    module.main([str(path.parent / "report.json"), "-o", str(tmp_path / "out" / "compare.md")])
    text = (tmp_path / "out" / "compare.md").read_text()
    assert "## The paper's Table 1" in text and "## What each model releases, read every way" in text
    assert text.count("| AIA") == 2 and "Produced by `" in text


def test_model_title_names_what_the_weights_make_the_model():
    from conceal.audit.anonymizer import model_title

    assert model_title({"variant": "aia", "alpha": 0.0, "beta": 0.5}) == "AIA\\T"  # α = 0 is AIA\T, whatever the variant
    assert model_title({"variant": "aia", "alpha": 0.25, "beta": 0.5}) == "AIA (α 0.25, β 0.5)"
    assert model_title({"variant": "original", "alpha": 0.25}) == "Original"
    assert model_title({"variant": "aia", "eraser_rank": 1}) == "AIA + eraser (rank 1)"


class FakeEmbedding:
    """Embeds faces by their first pixels: enough to exercise the identity section."""

    name = "fake"

    def __repr__(self) -> str:  # the report names the judge by its repr: the same for every instance
        return "FakeEmbedding()"

    def embed(self, images):
        return np.asarray(images, np.float32).reshape(len(images), -1)[:, :128] / 255 + 1e-3

    def cosine(self, a, b):
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.slow
def test_identity_section_with_a_stand_in_judge(tiny_anonymizer, tmp_path):
    from conceal.audit import load_test_split
    from conceal.audit.anonymizer import audit_anonymizer
    from conceal.audit.report import render_markdown, to_plain
    from conceal.modelfile import read_model_info

    test = load_test_split(read_model_info(tiny_anonymizer), "synthetic", None, 40, 0, log=lambda _: None)
    sections = audit_anonymizer(tiny_anonymizer, test, tmp_path, judges={"face_embedding": FakeEmbedding(), "age_gender": Undecided()}, identity_faces=5,
                                vector_seeds=1, image_attack=False, log=lambda _: None)
    identity = sections["reconstruction_fidelity"]["identity"]
    assert identity["n_faces"] == 5 and set(identity) >= {"reconstruction", "gray_original", "different_person"}
    assert sections["judges"] == {"face_embedding": None, "age_gender": None} and sections["samples"]["identity_faces"] == 5
    assert sections["judge_leakage"]["released reconstructions"] == {"balanced_accuracy": 0.5, "auc": 0.5}
    # The identity section reuses the verification's embeddings: the same numbers as embedding afresh.
    alone = audit_anonymizer(tiny_anonymizer, test, tmp_path / "alone", judges={"face_embedding": FakeEmbedding()}, identity_faces=5,
                             vector_seeds=1, image_attack=False, judge_verification=False, judge_attack=False, log=lambda _: None)
    assert alone["reconstruction_fidelity"]["identity"] == identity and "judge_verification=False" in alone["verification"]["judge_skipped"]
    # The judge also verifies: its embeddings of every released reconstruction (row g) and original.
    verification = sections["verification"]
    assert verification["judge"].startswith("fake") and sections["samples"]["judge_verification_faces"] == len(test)
    for row in ("model", "original"):
        assert 0 <= verification[row]["judge"]["accuracy"] <= 1 and 0 <= verification[row]["judge"]["auc"] <= 1
    rows = {row["row"]: row for row in sections["privacy_utility"]["rows"]}
    assert rows["raw pixels (reference)"]["utility"] == {"judge": {k: verification["original"]["judge"][k] for k in ("accuracy", "auc")}}

    # Without the image attack the section says so, and report.md still renders (its summary shows "—").
    assert "image_attack=False" in sections["image_leakage"]["skipped"] and sections["samples"]["cnn_seeds"] == []
    text = render_markdown({"provenance": {"method": "anonymizer"}, **to_plain(sections)})
    assert "## Released reconstructions, attacked by a fresh CNN" in text and "Skipped: not asked for" in text
    assert "| original images (reference) | judge's embeddings |" in text and "verify acc (judge on images)" in text
    assert "## Released reconstructions, read by an off-the-shelf gender judge" in text


def test_tradeoff_table_and_figure_over_an_alpha_beta_sweep(audited, tmp_path):
    from conceal.audit.anonymizer import tradeoff_figure, tradeoff_markdown, tradeoff_points

    _, data, _ = audited
    paths = []
    for alpha, beta in ((0.0, 0.5), (0.5, 0.5), (1.0, 0.5), (0.5, 0.0), (0.5, 1.0)):
        report = json.loads(json.dumps(data))
        report["provenance"]["model_config"] |= {"variant": "aia", "alpha": alpha, "beta": beta}
        report["privacy_utility"]["rows"][0]["privacy"]["auc"] = 0.9 - 0.1 * beta  # a trend the table must carry
        paths.append(tmp_path / f"a{alpha}-b{beta}.json")
        paths[-1].write_text(json.dumps(report))
    points = tradeoff_points(paths)
    assert [(p["alpha"], p["beta"]) for p in points] == [(0.0, 0.5), (0.5, 0.5), (1.0, 0.5), (0.5, 0.0), (0.5, 1.0)]
    assert [p["privacy_auc"] for p in points] == pytest.approx([0.85, 0.85, 0.85, 0.9, 0.8])
    lines = [line for line in tradeoff_markdown(paths).splitlines() if line.startswith("| 0") or line.startswith("| 1")]
    assert len(lines) == 5 and lines[3].split(" | ")[3] == "0.900"
    assert tradeoff_figure(paths, tmp_path / "tradeoff.png") == "tradeoff.png"
    assert (tmp_path / "tradeoff.png").stat().st_size > 1000


def test_anonymizer_frontier_script_reads_the_headlines_and_states_the_targets(tmp_path, benchmark_script):
    """benchmarks/anonymizer_frontier.py on two hand-made reports: one meets issue 20's targets, one does not."""
    module = benchmark_script("anonymizer_frontier")

    def report(name, g, images, judge_gender, verify):
        def head(score):
            return {"metric": "balanced_accuracy", "score": score, "ci95": [score - 0.03, score + 0.03], "chance": 0.5,
                    "attacker": "codes:mlp-256"}
        return {
            "provenance": {"model": f"models/{name}", "model_config": {"variant": "aia", "critics": 4, "critics_weight": 2.0}},
            "headline": {"codes": {"gender": head(g)}, "images": {"gender": head(images)}},
            "public_model": {"releases": {"images": {"labels": {"gender": {"attackers": {
                "cnn:from-scratch": {"test": {"balanced_accuracy": images}},
                "judge:age-gender": {"test": {"balanced_accuracy": judge_gender}}}}}}}},
            "verification": {"protocol": {"model": {"judge": {"accuracy": verify, "accuracy_std": 0.04},
                                                    "siamese": {"accuracy": 0.7, "accuracy_std": 0.05}}}},
        }

    paths = []
    for name, numbers in (("good", (0.55, 0.58, 0.59, 0.86)), ("leaky", (0.76, 0.85, 0.88, 0.857))):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(report(name, *numbers)))
    module.main([str(p) for p in paths] + ["-o", str(tmp_path / "out" / "frontier")])
    text = (tmp_path / "out" / "frontier.md").read_text()
    good, leaky = [line for line in text.splitlines() if line.startswith("| `")]
    assert "g met; images met (0.590); verification met" in good and "4 code critics × 2" in good
    assert "g not met; images not met (0.880); verification met" in leaky  # the judge is the highest image attacker
    assert "0.857 ± 0.040" in leaky and (tmp_path / "out" / "frontier.png").stat().st_size > 0
