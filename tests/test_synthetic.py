"""Synthetic faces: API, determinism, and that every label is actually visible in the pixels.

The visibility tests train small, fast models on held-out images: if a label could not be recovered
from the pixels, concealment results on synthetic data would mean nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conceal.data import SPLITS, DataError, FaceArrays, open_dataset
from conceal.data import synthetic as syn
from conceal.data.schema import AGE, GENDER, RACE
from conceal.data.synthetic import SyntheticFaces


@pytest.fixture(scope="module")
def faces() -> FaceArrays:
    """2,000 faces at 64x64 (about 1 s to render); train/test by the dataset's own split."""
    return SyntheticFaces(n=2000, seed=0).arrays()


def _split(a: FaceArrays):
    return a.split == "train", a.split == "test"


def _train_cnn(x: torch.Tensor, y: torch.Tensor, train: np.ndarray, epochs: int, pool: bool) -> np.ndarray:
    """A tiny CNN (binary head) trained for a few epochs; returns predictions on the rows not in ``train``."""
    torch.manual_seed(0)
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)

    def block(i, o):
        return [torch.nn.Conv2d(i, o, 3, 1 if pool else 2, 1, bias=False), torch.nn.BatchNorm2d(o), torch.nn.ReLU()]

    if pool:  # position-invariant: for a feature that moves with the face (the mouth)
        net = torch.nn.Sequential(*block(3, 16), torch.nn.MaxPool2d(2), *block(16, 32), torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 1))
    else:  # keeps the layout: for where the hair is
        net = torch.nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 32), torch.nn.Flatten(), torch.nn.LazyLinear(1))
    net(x[:2])  # materialise the lazy layer before the optimiser sees the parameters
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    xt, yt = x[torch.from_numpy(train)], y[torch.from_numpy(train)]
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            b = perm[i : i + 64]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt[b])[:, 0], yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return (net(x[torch.from_numpy(~train)])[:, 0] > 0).numpy()


# --- API -----------------------------------------------------------------------------------------------


def test_api_and_schema():
    ds = SyntheticFaces(n=120, seed=3, size=32)
    assert ds.name == "synthetic"
    assert ds.schema.names == ["age", "gender", "race", "smile", "hair"]
    assert ds.schema["age"] == AGE and ds.schema["gender"] == GENDER and ds.schema["race"] == RACE
    assert ds.schema["smile"].classes == ("no", "yes")
    assert ds.schema["hair"].classes == ("black", "brown", "blond", "red", "gray")
    assert ds.records == [] and ds.skipped == {} and len(ds) == 120
    assert ds.n_identities == 12
    assert "120" in ds.summary_line()
    assert isinstance(open_dataset("synthetic", n=20, seed=1), SyntheticFaces)
    with pytest.raises(DataError):
        SyntheticFaces(n=10, n_identities=11)
    with pytest.raises(DataError):
        SyntheticFaces(n=0)


def test_shapes_dtypes_and_label_ranges():
    ds = SyntheticFaces(n=300, seed=2, size=32)
    a = ds.arrays()
    assert a.images.shape == (300, 32, 32, 3) and a.images.dtype == np.uint8
    assert a.paths == [] and len(a) == 300
    assert a.identity.dtype == np.int64 and a.identity.shape == (300,)
    assert set(a.split) <= set(SPLITS) and (a.split == "train").mean() > 0.6
    for name, values in a.labels.items():
        assert values.dtype == np.float32 and values.shape == (300,) and not np.isnan(values).any(), name
    assert a.labels["age"].min() >= 0 and a.labels["age"].max() <= 116
    assert set(np.unique(a.labels["gender"])) == {0.0, 1.0}
    assert set(np.unique(a.labels["smile"])) == {0.0, 1.0}
    assert set(np.unique(a.labels["race"])) == set(range(5))
    assert set(np.unique(a.labels["hair"])) <= set(range(5))
    # Every label value is valid for its schema.
    for label in ds.schema:
        for v in np.unique(a.labels[label.name]):
            label.describe(float(v))
    # Images use their range and are not constant.
    assert a.images.std() > 30


def test_identities_persist_and_cross_splits():
    a = SyntheticFaces(n=400, seed=4, size=32).arrays()
    counts = np.bincount(a.identity)
    assert len(counts) == 40 and counts.min() == counts.max() == 10
    crossing = 0
    for i in range(40):
        rows = a.identity == i
        assert len(np.unique(a.labels["gender"][rows])) == 1
        assert len(np.unique(a.labels["race"][rows])) == 1
        assert np.ptp(a.labels["age"][rows]) <= 6  # +-3 years around the identity's age
        crossing += {"train", "test"} <= set(a.split[rows])
    assert crossing > 10  # per-image splits: most people appear in train and in test
    # Grey hair follows age.
    gray = a.labels["hair"] == 4
    assert gray.any() and a.labels["age"][gray].min() > 55 and a.labels["age"][~gray].max() < 68


def test_sizes_crop_and_cache():
    ds = SyntheticFaces(n=20, seed=5, size=48)
    a = ds.arrays()
    assert a.images.shape == (20, 48, 48, 3)
    assert ds.arrays() is a  # repeat call: cached
    assert not a.images.flags.writeable  # so the cached copy cannot be changed behind our back
    for size in (32, 56, 128):
        assert ds.arrays(size=size).images.shape == (20, size, size, 3)
    zoomed = ds.arrays(size=48, crop=0.7).images
    assert zoomed.shape == (20, 48, 48, 3) and not np.array_equal(zoomed, a.images)
    with pytest.raises(DataError):
        ds.arrays(crop=1.5)


# --- Determinism -------------------------------------------------------------------------------------


def test_same_seed_same_bytes_different_seed_different():
    a = SyntheticFaces(n=150, seed=7, size=32).arrays()
    b = SyntheticFaces(n=150, seed=7, size=32).arrays()
    c = SyntheticFaces(n=150, seed=8, size=32).arrays()
    assert np.array_equal(a.images, b.images)
    assert all(np.array_equal(a.labels[k], b.labels[k]) for k in a.labels)
    assert np.array_equal(a.identity, b.identity) and np.array_equal(a.split, b.split)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.labels["age"], c.labels["age"])


@pytest.mark.parametrize("size", [32, 50])
def test_render_does_not_depend_on_chunking(size):
    ds = SyntheticFaces(n=150, seed=9, size=size)
    reference = syn.render(ds.params, size, seed=9, chunk=128, threads=1)
    assert np.array_equal(reference, syn.render(ds.params, size, seed=9, chunk=1, threads=1))
    assert np.array_equal(reference, syn.render(ds.params, size, seed=9, chunk=37, threads=2))


def test_feature_windows_clip_nothing(monkeypatch):
    """Each feature is drawn only inside a window computed from its bounding box; drawing every
    feature over the whole image must give the same bytes, or a window is too small."""
    ds = SyntheticFaces(n=150, seed=10, size=48)
    windowed = syn.render(ds.params, 48, seed=10, threads=1)
    monkeypatch.setattr(syn._Chunk, "window", lambda self, *box: (slice(0, self.size), slice(0, self.size)))
    assert np.array_equal(windowed, syn.render(ds.params, 48, seed=10, threads=1))


# --- Labels are visible ----------------------------------------------------------------------------------


def test_gender_is_visible(faces):
    """A tiny CNN trained for two epochs on 32x32 versions tells gender apart on held-out faces."""
    train, test = _split(faces)
    x = torch.nn.functional.avg_pool2d(torch.from_numpy(faces.images.copy()).permute(0, 3, 1, 2).float() / 255, 2)
    x, y = x[torch.from_numpy(train | test)], torch.from_numpy(faces.labels["gender"][train | test])
    pred = _train_cnn(x, y, train[train | test], epochs=2, pool=False)
    assert balanced_accuracy_score(faces.labels["gender"][test], pred) > 0.95


def test_smile_is_visible(faces):
    """A tiny CNN trained for three epochs on the mouth region tells smiles apart."""
    train, test = _split(faces)
    keep = train | test
    x = torch.from_numpy(faces.images[keep, 32:56, 16:48].copy()).permute(0, 3, 1, 2).float() / 255
    pred = _train_cnn(x, torch.from_numpy(faces.labels["smile"][keep]), train[keep], epochs=3, pool=True)
    assert balanced_accuracy_score(faces.labels["smile"][test], pred) > 0.95


def test_race_is_visible_in_skin_colour(faces):
    """Logistic regression on the median colour of two cheek patches (and its ratios) predicts race."""
    train, test = _split(faces)
    img = faces.images.astype(np.float32) / 255
    cheeks = np.concatenate([img[:, 34:39, 22:27], img[:, 34:39, 37:42]], 2).reshape(len(img), -1, 3)
    m = np.median(cheeks, 1)
    features = np.concatenate([m, np.log(m[:, :2] / m[:, 1:])], 1)  # colour, and R/G, G/B (brightness-free)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(features[train], faces.labels["race"][train])
    assert balanced_accuracy_score(faces.labels["race"][test], model.predict(features[test])) > 0.9


def test_age_is_visible(faces):
    """Ridge regression on 16x16 pixels follows age (wrinkles, grey hair, child proportions)."""
    train, test = _split(faces)
    x = faces.images.reshape(len(faces), 16, 4, 16, 4, 3).mean((2, 4)).reshape(len(faces), -1) / 255
    age = faces.labels["age"]
    pred = make_pipeline(StandardScaler(), Ridge(100)).fit(x[train], age[train]).predict(x[test])
    assert np.corrcoef(pred, age[test])[0, 1] > 0.7


def test_smile_changes_only_the_mouth_region():
    """Same person and nuisance, smile toggled: the pixels that change sit around the mouth."""
    ds = SyntheticFaces(n=64, seed=11, size=64)
    p = {k: v.copy() for k, v in ds.params.items()}
    for k in ("du", "dv", "tilt"):
        p[k][:] = 0
    p["scale"][:] = 1
    p["noise"][:] = 0
    neutral = dict(p, smile=np.zeros_like(p["smile"]), mouth_lift=np.zeros_like(p["smile"]), mouth_open=np.zeros_like(p["smile"]))
    smiling = dict(p, smile=np.ones_like(p["smile"]), mouth_lift=np.full_like(p["smile"], 0.06), mouth_open=np.full_like(p["smile"], 0.06))
    diff = np.abs(syn.render(smiling, 64).astype(int) - syn.render(neutral, 64)).max(-1)  # (n, 64, 64)
    assert (diff.max((1, 2)) > 60).all()  # every face visibly changes
    rows = np.nonzero(diff.max((0, 2)) > 0)[0]
    mouth_row = (p["mouth_y"] + 1) * 32
    assert rows.min() >= mouth_row.min() - 8 and rows.max() <= mouth_row.max() + 8
