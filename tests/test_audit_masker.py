"""The masker's audit: the re-identification gallery, the end-to-end audit of a tiny masker (report.md/json,
a row per baseline, pixels revealed), a planted label the Block baseline must lose, the comparison table,
and the identity section with dlib's embedding when it is installed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conceal.audit.masker import RENDERERS, compare_maskers, rank1, reid_gallery

ROWS = ["original", "block_center", "blur_center", "pixelate", "masker"]
# Fresh CNNs trained for a handful of updates: the numbers mean little, the paths all run.
FAST = dict(cnn_epochs=1, cnn_min_steps=0)


# --- re-identification ---------------------------------------------------------------------------


def test_gallery_holds_one_other_image_per_repeated_person():
    identity = np.array([0, 0, 0, 1, 2, 2, -1, -1, 3])
    gallery, probes = reid_gallery(identity, seed=0)
    assert sorted(identity[gallery]) == [0, 2]  # people 1 and 3 have one image, -1 is nobody
    assert set(probes) == set(np.flatnonzero(np.isin(identity, [0, 2]))) - set(gallery)
    np.testing.assert_array_equal(reid_gallery(identity, seed=0)[0], gallery)
    assert len(reid_gallery(np.full(4, -1), seed=0)[0]) == 0


def test_rank1_finds_the_nearest_gallery_person():
    gallery = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    probes = np.array([[1.0, 0.0], [9.0, 1.0], [0.0, 6.0], [6.0, 0.0]])
    hits = rank1(probes, np.array([7, 8, 9, 9]), gallery, np.array([7, 8, 9]))
    assert hits.tolist() == [True, True, True, False]


# --- end to end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audited(masker_run, tmp_path_factory):
    from conceal.audit import run_audit

    out = tmp_path_factory.mktemp("masker_report")
    path = run_audit(masker_run, dataset="synthetic", out=out, judges="off", command="test", threat_model="test-halves", log=lambda _: None, **FAST)
    return path, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_audit_of_a_tiny_masker_writes_the_table(audited):
    path, data = audited
    assert data["provenance"]["method"] == "masker" and path.is_file()
    rows = {row["release"]: row for row in data["table"]["rows"]}
    assert [row["release"] for row in data["table"]["rows"]] == ROWS and data["table"]["task"] == "smile"
    # Pixels revealed: exactly round(K·H·W) pixels per image for the masker; Original all; Block all but its box.
    assert rows["masker"]["pixels_revealed"] == pytest.approx(data["table"]["keep"], abs=1e-3)
    assert rows["original"]["pixels_revealed"] == 1.0 and rows["block_center"]["pixels_revealed"] == pytest.approx(0.75)
    n = data["provenance"]["n_test_faces"]
    for row in rows.values():
        task = row["task"]
        assert 0 <= task["balanced_accuracy"] <= 1 and 0 <= task["majority_accuracy"] <= 1 and task["chance_balanced_accuracy"] == 0.5
        assert row["face"] is None and row["reid"] is None  # judges off
        assert set(row["leakage"]) == ({"age", "gender", "race", "hair"} if row["release"] in ("original", "masker") else set())
    predictor = data["task_accuracy"]["predictor"]["released"]
    assert predictor["n"] == n and 0 <= predictor["accuracy"] <= 1 and rows["masker"]["predictor"]["accuracy"] == predictor["accuracy"]
    assert data["task_accuracy"]["fresh"]["original"]["split"] == "identity-disjoint halves"
    assert "judges turned off" in data["identity"]["skipped"]
    for name in ("grid", "mean_mask", "table"):
        assert (path.parent / data["figures"][name]).is_file()
    text = path.read_text()
    assert text.index("Tables I/II") < text.index("## Judges") and "Block centre (25%)" in text and "majority acc" in text
    for key, render in RENDERERS.items():  # the section renderers offered to report.md accept the JSON
        assert render(data[key])[0].startswith("## ")


@pytest.mark.slow
def test_block_loses_a_label_drawn_only_in_the_centre(masker_run, synthetic_small, tmp_path):
    """Planted: the 'smile' label becomes a white or black 8x8 patch in the middle of each face, inside the
    centre box the Block baseline blacks out. A fresh CNN reads it on the original images, not after Block."""
    from dataclasses import replace

    from conceal.audit.masker import audit_masker

    planted = np.random.default_rng(0).integers(0, 2, len(synthetic_small))
    images = np.array(synthetic_small.images)
    images[:, 12:20, 12:20] = np.where(planted[:, None, None, None] == 1, 255, 0).astype(np.uint8)
    test = replace(synthetic_small, images=images, labels={**synthetic_small.labels, "smile": planted.astype(np.float32)})
    sections = audit_masker(masker_run, test, tmp_path, judges="off", identity_faces=0, leakage=False, cnn_epochs=1, cnn_min_steps=20,
                            log=lambda _: None)
    task = {row["release"]: row["task"]["balanced_accuracy"] for row in sections["table"]["rows"]}
    assert task["original"] > 0.9, task  # measured 0.99-1.0 over three seeds
    assert task["block_center"] < 0.65, task  # measured 0.50: nothing of the patch is left
    assert sections["leakage"] == {"skipped": "turned off for this audit"}


@pytest.mark.slow
def test_compare_maskers_orders_rows_and_plots_the_k_sweep(audited, tmp_path):
    _, data = audited
    paths = []
    for variant, keep in (("adversarial", 0.5), ("non_adversarial", 0.25), ("adversarial", 0.25)):  # stand-ins: same numbers
        report = json.loads(json.dumps(data))
        report["table"] |= {"variant": variant, "keep": keep}
        report["table"]["rows"][-1]["row"] = f"{variant} {keep}"
        paths.append(tmp_path / f"{variant}-{keep}.json")
        paths[-1].write_text(json.dumps(report))
    text = compare_maskers(paths, plot=tmp_path / "sweep.png")
    rows = [line.split(" | ")[0].lstrip("| ") for line in text.splitlines() if line.startswith("| ") and not line.startswith("| release")]
    assert rows == ["Original", "Block centre (25%)", "Gaussian blur centre (σ 2 px, 25%)", "Pixelate (8×8)",
                    "adversarial 0.25", "adversarial 0.5", "non_adversarial 0.25"]
    assert (tmp_path / "sweep.png").is_file() and "sweep.png" in text
    assert "sweep" not in compare_maskers(paths[1:2], plot=tmp_path / "one.png") and not (tmp_path / "one.png").exists()


@pytest.mark.slow
def test_identity_with_the_dlib_judge(masker_run, synthetic_small, tmp_path):
    from conceal.audit.judges import judges_available

    reason = judges_available()["face_embedding"]
    if reason is not None:
        pytest.skip(f"face embedding judge unavailable: {reason}")
    from conceal.audit.masker import audit_masker

    people = np.unique(synthetic_small.identity)[:4]  # four people, ~10 images each
    test = synthetic_small.select(np.isin(synthetic_small.identity, people))
    sections = audit_masker(masker_run, test, tmp_path, judges="auto", identity_faces=5, leakage=False, log=lambda _: None, **FAST)
    identity = sections["identity"]
    assert sections["judges"] == {"face_embedding": None, "age_gender": None} and identity["n_faces"] == 5
    agreement = sections["gender_agreement"]  # the real gender judge, on the same 5 faces
    assert agreement["n_faces"] == 5 and agreement["releases"]["original"]["agreement"]["mean"] == 1.0
    assert identity["reid"]["gallery_people"] == 4 and identity["reid"]["chance"] == 0.25
    releases = identity["releases"]
    assert releases["original"]["cosine"]["mean"] == pytest.approx(1.0) and releases["original"]["same_person_rate"]["mean"] == 1.0
    assert releases["block_center"]["cosine"]["mean"] < 0.999  # a black box changes the embedding
    for scores in releases.values():
        assert -1 <= scores["cosine"]["mean"] <= 1 and 0 <= scores["rank1"]["mean"] <= 1
    row = sections["table"]["rows"][-1]
    assert row["face"]["cosine"] == releases["masker"]["cosine"] and row["reid"]["chance"] == 0.25
    assert "1/4 = 0.2500" in "\n".join(RENDERERS["identity"](identity))


class Brightness:
    """A stand-in gender judge that calls a face female when its mean grey level is above 100."""

    name = "brightness"

    def predict(self, images):
        return {"p_female": (np.asarray(images, np.float32).mean(axis=(1, 2, 3)) > 100).astype(np.float32)}


def test_gender_agreement_compares_the_judges_readings(synthetic_small):
    from conceal.audit.masker import gender_agreement

    test = synthetic_small.subset("test")
    rows = np.arange(len(test))
    rng = np.random.default_rng(0)
    releases = {"original": test.images, "black": np.zeros_like(test.images),
                "coin": np.where(rng.random(len(test))[:, None, None, None] < 0.5, 255, 0).astype(np.uint8) * np.ones_like(test.images)}
    result = gender_agreement(test, releases, Brightness(), rows, seed=0)
    original = result["releases"]["original"]
    assert original["agreement"]["mean"] == 1.0 and original["kappa"] == pytest.approx(1.0)
    black = result["releases"]["black"]  # read "male" every time: agreement = the originals' male rate = chance
    assert black["agreement"]["mean"] == pytest.approx(1 - result["original_female_rate"]) == pytest.approx(black["chance_agreement"])
    assert black["female_rate"] == 0.0 and np.isnan(black["kappa"]) or abs(black["kappa"]) < 1e-9
    coin = result["releases"]["coin"]  # a reading independent of the face: near chance, kappa near 0
    assert abs(coin["agreement"]["mean"] - coin["chance_agreement"]) < 0.15 and abs(coin["kappa"]) < 0.3
    assert "agreement" in "\n".join(RENDERERS["gender_agreement"](result | {"titles": {}}))
