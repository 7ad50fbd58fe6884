"""FER2013 / FER+: the CSV loader on fixtures written here (both label schemes, bad rows, gz and plain),
the cache, ``conceal data info``, and a tiny masker trained on generated FER-format rows."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from conceal.cli import main
from conceal.data import DataError, open_dataset
from conceal.data import cache as cache_module
from conceal.data.fer2013 import FER2013_EMOTIONS, FERPLUS_EMOTIONS, ferplus_majority, parse_pixels
from conceal.data.images import ImageReadError
from conceal.data.info import dataset_info, format_info

FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("CONCEAL_CACHE_DIR", str(directory))
    return directory


def face(seed: int) -> np.ndarray:
    """(48, 48) uint8: a distinct grey pattern per seed (row 0 = the seed, so a row is recognisable)."""
    image = np.random.default_rng(seed).integers(0, 256, (48, 48)).astype(np.uint8)
    image[0] = seed % 256
    return image


def pixels(image: np.ndarray) -> str:
    return " ".join(map(str, image.ravel().tolist()))


# (emotion, pixels, Usage) rows: good ones and one of each kind of bad row, with the reason expected.
GOOD = [(3, "Training"), (0, "Training"), (6, "PublicTest"), (5, "PublicTest"), (4, "PrivateTest"), (1, "Training")]


def write_fer(root: Path, gz: bool = False, bad: bool = True, ferplus: list[str] | None = None) -> dict[int, str]:
    """fer2013.csv(.gz) under ``root`` (plus fer2013new.csv when ``ferplus`` rows are given); -> bad row -> reason."""
    lines = ["emotion,pixels,Usage"] + [f"{e},{pixels(face(i))},{u}" for i, (e, u) in enumerate(GOOD)]
    reasons = {}
    if bad:
        short = " ".join(["7"] * 2303)
        rows = {
            f"2,{short},Training": "malformed pixels: 2303 values, expected 2304",
            f"2,{pixels(face(90)).replace(' ', ' 300 ', 1)[:-4]},Training": None,  # 2304 values, one 300: decode time
            f"9,{pixels(face(91))},Training": "unknown emotion '9'",
            f"happy,{pixels(face(92))},Training": "unknown emotion 'happy'",
            f"3,{pixels(face(93))},Validation": "unknown Usage 'Validation'",
            f"3,{pixels(face(94))}": "malformed row: 2 fields, expected 3",
            f"3,{pixels(face(95)).replace('1', 'x', 1)},Training": None,  # a non-number: decode time
        }
        for line, reason in rows.items():
            reasons[len(lines) - 1] = reason
            lines.append(line)
    text = "\n".join(lines) + "\n"
    name = "fer2013.csv.gz" if gz else "fer2013.csv"
    root.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(root / name, "wt", newline="") as handle:
            handle.write(text)
    else:
        (root / name).write_text(text)
    if ferplus is not None:
        (root / "fer2013new.csv").write_text("\n".join([FERPLUS_HEADER, *ferplus]) + "\n")
    return reasons


def test_fer2013_labels_splits_and_bad_rows(tmp_path):
    reasons = write_fer(tmp_path)
    ds = open_dataset("fer2013", tmp_path)
    # Scan-time reasons, keyed by <csv>#row; the two rows with bad pixel values wait for decoding.
    scan_bad = {f"{tmp_path / 'fer2013.csv'}#{row}": reason for row, reason in reasons.items() if reason}
    assert ds.skipped == scan_bad and len(ds.records) == len(GOOD) + 2

    arrays = ds.arrays(size=64, progress=False)
    assert [r.labels["emotion"] for r in ds.records] == [float(e) for e, _ in GOOD] == arrays.labels["emotion"].tolist()
    assert ds.schema["emotion"].classes == FER2013_EMOTIONS
    # Training -> train (a val slice is carved by hashing the row: 0 of 3 here at 5%), PublicTest -> test.
    assert arrays.split.tolist() == ["train", "train", "test", "test", "private_test", "train"]
    assert [Path(p).name for p in arrays.paths] == [f"fer2013.csv#{i}" for i in range(len(GOOD))]  # no label in a name
    assert arrays.images.shape == (6, 64, 64, 3)  # upsampled, three equal channels
    assert np.array_equal(arrays.images[..., 0], arrays.images[..., 2])
    small = ds.arrays(size=48, progress=False).images
    assert np.array_equal(small[2, :, :, 0], face(2))  # at 48 px, the row's own pixels
    decode_bad = {k: v for k, v in ds.skipped.items() if k not in scan_bad}
    assert sorted(decode_bad.values()) == ["malformed pixels: a value is not a number", "malformed pixels: values outside 0..255 (min 0, max 300)"]
    assert arrays.subset("private_test").labels["emotion"].tolist() == [4.0]
    with pytest.raises(DataError, match="split must be one of"):
        arrays.subset("PrivateTest")


def test_validation_slice_is_seeded(tmp_path):
    lines = ["emotion,pixels,Usage"] + [f"{i % 7},{pixels(face(i))},Training" for i in range(200)]
    (tmp_path / "fer2013.csv").write_text("\n".join(lines) + "\n")
    val = {seed: [i for i, r in enumerate(open_dataset("fer2013", tmp_path, split_seed=seed).records) if r.split == "val"] for seed in (0, 1)}
    assert 2 <= len(val[0]) <= 25 and val[0] != val[1]
    assert val[0] == [i for i, r in enumerate(open_dataset("fer2013", tmp_path).records) if r.split == "val"]
    assert not any(r.split == "val" for r in open_dataset("fer2013", tmp_path, val_fraction=0.0).records)


def test_gz_and_plain_load_the_same(tmp_path):
    write_fer(tmp_path / "plain")
    write_fer(tmp_path / "gz", gz=True)
    plain, gz = open_dataset("fer2013", tmp_path / "plain"), open_dataset("fer2013", tmp_path / "gz")
    assert [(r.labels, r.split) for r in plain.records] == [(r.labels, r.split) for r in gz.records]
    assert gz.records[0].path.name == "fer2013.csv.gz#0"
    assert np.array_equal(plain.arrays(size=48, progress=False).images, gz.arrays(size=48, progress=False).images)
    assert sorted(plain.skipped.values()) == sorted(gz.skipped.values())


@pytest.mark.parametrize("votes, expected", [
    ([6, 2, 0, 0, 1, 0, 0, 0, 1, 0], 0),  # neutral 6 of 8 kept votes (the 1s are outliers)
    ([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], "no FER+ majority"),  # 4 of 9: not more than half
    ([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], "no FER+ majority"),  # a tie is no majority
    ([0, 0, 0, 0, 0, 0, 0, 3, 0, 0], 7),  # contempt
    ([1, 0, 0, 0, 0, 0, 0, 0, 7, 2], "FER+ majority is unknown"),
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], "FER+ majority is NF"),
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], "no FER+ majority (no emotion has two votes)"),
])
def test_ferplus_majority(votes, expected):
    assert ferplus_majority(votes) == expected


def test_ferplus_labels_by_row_position(tmp_path):
    ferplus = [
        "Training,fer0000000.png,0,9,0,0,0,0,0,0,1,0",  # happiness
        "Training,fer0000001.png,4,0,0,1,3,2,0,0,0,0",  # no majority
        "PublicTest,fer0000002.png,0,0,0,0,0,0,0,8,2,0",  # contempt
        "PublicTest,,0,0,0,0,0,0,0,0,0,10",  # dropped by FER+
        "PrivateTest,fer0000004.png,0,0,0,0,0,0,0,0,0,10",  # NF
        "Training,fer0000005.png,0,0,0,0,0,bad,0,0,0,0",  # malformed votes
    ]  # row 6 has no FER+ row at all
    write_fer(tmp_path, bad=False, ferplus=ferplus)
    (tmp_path / "fer2013.csv").write_text((tmp_path / "fer2013.csv").read_text() + f"3,{pixels(face(6))},Training\n")
    ds = open_dataset("fer2013", tmp_path, labels="ferplus")
    assert ds.schema["emotion"].classes == FERPLUS_EMOTIONS
    assert [(r.path.name, r.labels["emotion"], r.split) for r in ds.records] == [
        ("fer2013.csv#0", 1.0, "train"), ("fer2013.csv#2", 7.0, "test")]
    assert sorted(ds.skipped.values()) == sorted([
        "no FER+ majority", "dropped by FER+ (no image name)", "FER+ majority is NF",
        "malformed FER+ votes: not numbers", "no FER+ row (fer2013new.csv has 6 rows)"])
    # The two schemes keep separate cache entries (different rows): switching back decodes nothing.
    ds.arrays(size=16, progress=False)
    open_dataset("fer2013", tmp_path).arrays(size=16, progress=False)
    calls = []
    original = cache_module._build
    cache_module._build = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        open_dataset("fer2013", tmp_path, labels="ferplus").arrays(size=16, progress=False)
        open_dataset("fer2013", tmp_path).arrays(size=16, progress=False)
    finally:
        cache_module._build = original
    assert calls == []


def test_cache_rebuilds_when_the_csv_changes(tmp_path):
    write_fer(tmp_path, bad=False)
    first = open_dataset("fer2013", tmp_path).arrays(size=48, progress=False).images.copy()
    lines = (tmp_path / "fer2013.csv").read_text().splitlines()
    lines[1] = f"3,{pixels(face(77))},Training"  # same size on disk would not matter: mtime changes too
    (tmp_path / "fer2013.csv").write_text("\n".join(lines) + "\n")
    again = open_dataset("fer2013", tmp_path).arrays(size=48, progress=False).images
    assert np.array_equal(again[0, :, :, 0], face(77)) and np.array_equal(again[1:], first[1:])


def test_bad_roots_and_options_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="expected fer2013.csv or fer2013.csv.gz"):
        open_dataset("fer2013", tmp_path)
    (tmp_path / "fer2013.csv").write_text("label,image,split\n")
    with pytest.raises(DataError, match="header emotion,pixels,Usage"):
        open_dataset("fer2013", tmp_path)
    write_fer(tmp_path)
    with pytest.raises(DataError, match="needs fer2013new.csv"):
        open_dataset("fer2013", tmp_path, labels="ferplus")
    with pytest.raises(DataError, match="labels must be one of"):
        open_dataset("fer2013", tmp_path, labels="affectnet")
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n7,1 2,Training\n")
    with pytest.raises(DataError, match="no usable rows"):
        open_dataset("fer2013", tmp_path)


def test_parse_pixels():
    assert parse_pixels(pixels(face(3))).tolist() == face(3).tolist()
    for text, reason in [("1 " * 2305, "2305 values"), ("-1 " + "0 " * 2303, "outside 0..255"), ("0.5 " * 2304, "not an integer")]:
        with pytest.raises(ImageReadError, match=reason):
            parse_pixels(text)


def test_data_info_cli(tmp_path, capsys):
    write_fer(tmp_path, gz=True)
    info = dataset_info(open_dataset("fer2013", tmp_path))
    # Info decodes nothing: the two rows whose pixel values are bad still count (arrays() drops them).
    assert info["splits"] == {"train": 5, "val": 0, "test": 2, "private_test": 1}
    assert info["labels"]["emotion"]["neutral"] == 1 and "private_test" in format_info(info)
    assert main(["data", "info", "--dataset", "fer2013", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "8 usable, 5 skipped" in out and "unknown emotion '9'" in out
    assert main(["data", "info", "--dataset", "fer2013", "--root", str(tmp_path / "missing")]) == 2


def test_masker_trains_on_fer_rows(tmp_path):
    """A tiny masker on 120 generated FER+ rows, through the CLI, then its audit reads the same scheme."""
    lines, ferplus = ["emotion,pixels,Usage"], []
    for i in range(120):
        usage = "PublicTest" if i % 4 == 0 else "Training"
        lines.append(f"0,{pixels(face(i))},{usage}")
        votes = ["0"] * 10
        votes[i % 3] = "9"  # neutral / happiness / surprise
        ferplus.append(f"{usage},fer{i:07d}.png," + ",".join(votes))
    root = tmp_path / "fer"
    root.mkdir()
    (root / "fer2013.csv").write_text("\n".join(lines) + "\n")
    (root / "fer2013new.csv").write_text("\n".join([FERPLUS_HEADER, *ferplus]) + "\n")
    run = tmp_path / "run"
    assert main([
        "train", "masker", "--dataset", "fer2013", "--root", str(root), "--set", "data.labels=ferplus",
        "--set", "model.task=emotion", "--size", "16", "--epochs", "1", "--batch-size", "16",
        "--set", "model.masker_width=4", "--set", "model.classifier_width=4", "--set", "model.dense=8",
        "--set", "train.threads=1", "-o", str(run), "--no-progress",
    ]) == 0
    config = (run / "checkpoint" / "config.toml").read_text()
    assert 'labels = "ferplus"' in config and 'dataset = "fer2013"' in config
    # The audit opens the data with the model's own label scheme (FER+'s 8 classes, not FER2013's 7).
    from conceal.audit.context import open_splits
    from conceal.train.checkpoint import read_model_info

    _, arrays = open_splits(read_model_info(run / "checkpoint"), "fer2013", None, log=lambda _: None)
    assert arrays.schema["emotion"].classes == FERPLUS_EMOTIONS
