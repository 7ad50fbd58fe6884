"""File-backed datasets, image I/O, the preprocessing cache and dataset info, on tiny generated files."""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conceal.data import DataError, LabelSchema, assign_split, open_dataset
from conceal.data import cache as cache_module
from conceal.data.base import FaceArrays
from conceal.data.folder import FolderCSV
from conceal.data.images import (
    ImageReadError,
    center_crop_resize,
    iter_image_files,
    read_image,
    write_image,
)
from conceal.data.info import dataset_info, format_info
from conceal.data.lfw import LFW
from conceal.data.schema import AGE, GENDER, UTKFACE_SCHEMA
from conceal.data.utkface import UTKFace


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    """Every test caches under its own tmp folder, never in the user's cache."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("CONCEAL_CACHE_DIR", str(directory))
    return directory


def save(path: Path, color=(200, 100, 50), size=(12, 10), **options) -> Path:
    """A tiny solid-colour image (size = (W, H)); the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, **options)
    return path


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A valid PNG header declaring width x height grey pixels, with almost no pixel data:
    a decompression bomb in a few dozen bytes (building a real one would take gigabytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


# ---------------------------------------------------------------- read_image


def noisy_jpeg(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    return path


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "zero-byte file"),
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(500)), "not an image"),
        (lambda p: p.write_text("name,age\nx,3\n"), "not an image"),
        (lambda p: p.write_bytes(noisy_jpeg(p).read_bytes()[:1500]), "truncated or corrupt image"),
        (lambda p: None, "file not found"),
    ],
    ids=["zero-byte", "random-bytes", "text", "truncated-jpeg", "missing"],
)
def test_bad_files_raise_one_line_reason(tmp_path, make, reason):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(ImageReadError) as error:
        read_image(path)
    assert error.value.reason == reason
    assert isinstance(error.value, ValueError)


def test_corrupt_png_data(tmp_path):
    path = save(tmp_path / "ok.png", size=(64, 64))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 200] = bytes(200)  # zeros over the compressed pixels
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="truncated or corrupt image"):
        read_image(path)


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    # Over our limit (64 Mpx) but under Pillow's own: refused by our header check.
    ours = png_declaring(tmp_path / "ours.png", 9000, 9000)
    # Over twice Pillow's limit: Pillow refuses it itself, reported the same way.
    pillows = png_declaring(tmp_path / "pillows.png", 20000, 20000)
    for bomb in (ours, pillows):
        assert bomb.stat().st_size < 200
        with pytest.raises(ImageReadError, match=r"^image too large"):
            read_image(bomb)
    # The limit is a parameter.
    small = save(tmp_path / "small.png", size=(100, 100))
    with pytest.raises(ImageReadError, match=r"image too large \(100×100 > 5000 pixels\)"):
        read_image(small, max_pixels=5000)


def test_grayscale_palette_and_cmyk_become_rgb(tmp_path):
    Image.new("L", (5, 4), 77).save(tmp_path / "grey.png")
    Image.new("RGB", (5, 4), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.gif")
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red in CMYK

    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == (4, 5, 3) and grey.dtype == np.uint8 and (grey == 77).all()
    assert tuple(read_image(tmp_path / "palette.gif")[0, 0]) == (10, 200, 30)
    red = read_image(tmp_path / "cmyk.jpg").astype(int)
    assert red.shape == (16, 16, 3)
    assert red[..., 0].min() > 240 and red[..., 1:].max() < 15


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0] = (255, 0, 0, 255)  # opaque red row
    rgba[1] = (0, 0, 0, 0)  # fully transparent black row: must become white, not black
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    assert tuple(image[0, 0]) == (255, 0, 0)
    assert tuple(image[1, 0]) == (255, 255, 255)

    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.save(tmp_path / "clear.png", transparency=1)  # palette index 1 is transparent
    assert (read_image(tmp_path / "clear.png") == 255).all()


def test_16_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 32768, 64000, 65535]], dtype=np.uint16)  # (1, 5)
    Image.fromarray(values).save(tmp_path / "deep.png")  # mode I;16
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    image = read_image(tmp_path / "deep.png")
    assert image.shape == (1, 5, 3)
    assert image[0, :, 0].tolist() == [0, 100, 128, 249, 255]

    Image.fromarray(values.astype(np.int32)).save(tmp_path / "deep.tif")  # mode I
    assert read_image(tmp_path / "deep.tif")[0, :, 1].tolist() == [0, 100, 128, 249, 255]


def test_exif_orientation_is_applied(tmp_path):
    # Stored 64 wide x 32 high: left half red, right half blue; EXIF says "rotate 90° clockwise".
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :32] = (255, 0, 0)
    pixels[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation tag
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", exif=exif, quality=95)

    upright = read_image(tmp_path / "photo.jpg").astype(int)
    assert upright.shape == (64, 32, 3)  # now 32 wide x 64 high
    top, bottom = upright[8, 16], upright[56, 16]
    assert top[0] > 200 and top[2] < 50  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 50


# ---------------------------------------------------------------- crop, write, list


def test_center_crop_resize():
    image = np.zeros((100, 200, 3), dtype=np.uint8)  # H=100, W=200
    image[25:75, 75:125] = 255  # a white square filling the middle half of the shorter side
    middle = center_crop_resize(image, 16, crop=0.5)
    assert middle.shape == (16, 16, 3) and middle.dtype == np.uint8
    assert middle[2:-2, 2:-2].min() == 255  # all white (edges may blend with the border)
    whole = center_crop_resize(image, 20)
    assert whole.shape == (20, 20, 3)
    assert whole[0, 0].max() == 0 and whole[10, 10].min() == 255
    with pytest.raises(ValueError):
        center_crop_resize(image, 16, crop=0)


def test_write_image_clean_atomic_and_protective(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    write_image(tmp_path / "out" / "a.png", pixels)
    with Image.open(tmp_path / "out" / "a.png") as img:
        assert np.array_equal(np.asarray(img), pixels)  # PNG is lossless
        assert img.text == {} and "icc_profile" not in img.info and not img.getexif()
    write_image(tmp_path / "out" / "b.JPG", pixels)
    with Image.open(tmp_path / "out" / "b.JPG") as img:
        assert img.format == "JPEG" and "exif" not in img.info and "icc_profile" not in img.info
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.JPG"]  # no temp files left

    source = save(tmp_path / "in.png")
    (tmp_path / "alias.png").symlink_to(source)
    for target in (source, tmp_path / "alias.png"):
        with pytest.raises(ValueError, match="refusing to overwrite input"):
            write_image(target, pixels, protect=[source])
    write_image(tmp_path / "new.png", pixels, protect=[source])  # other paths are fine
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.gif", pixels)
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.png", pixels.astype(np.float32))


def test_iter_image_files(tmp_path):
    save(tmp_path / "d" / "b.png")
    save(tmp_path / "d" / "A.JPG")
    save(tmp_path / "d" / "sub" / "c.webp")
    save(tmp_path / "d" / ".hidden.png")
    (tmp_path / "d" / "notes.txt").write_text("x")
    single = save(tmp_path / "single.jpeg")
    files, skipped = iter_image_files([tmp_path / "d", single, single, tmp_path / "nope"])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["d/A.JPG", "d/b.png", "d/sub/c.webp", "single.jpeg"]
    assert skipped == {
        str(tmp_path / "d" / "notes.txt"): "not an image file (suffix .txt)",
        str(tmp_path / "nope"): "not found",
    }


# ---------------------------------------------------------------- UTKFace

UTK_GOOD = {
    "25_0_0_20170116174525125.jpg.chip.jpg": (25, 0, 0),
    "1_1_2_20161219140623097.jpg.chip.jpg": (1, 1, 2),
    "80_0_1_20170110122603536.jpg.chip.jpg": (80, 0, 1),
    "34_1_3_20170104201840125.jpg.chip.jpg": (34, 1, 3),
    "116_1_4_20170104201840999.jpg": (116, 1, 4),
    "55_0_0_20170116232725357jpg.chip.jpg": (55, 0, 0),  # as in the public release: still usable
}
UTK_BAD = {
    "39_1_20170116174525125.jpg.chip.jpg": "malformed name: expected AGE_GENDER_RACE_DATE",  # no race
    "2x_1_0_20170116174525125.jpg.chip.jpg": "malformed name: expected AGE_GENDER_RACE_DATE",
    "-3_1_0_20170116174525125.jpg.chip.jpg": "malformed name: expected AGE_GENDER_RACE_DATE",
    "25_1_0_.jpg": "malformed name: expected AGE_GENDER_RACE_DATE",
    "117_1_0_20170116174525125.jpg.chip.jpg": "malformed name: age 117 is outside 0..116",
    "25_2_0_20170116174525125.jpg.chip.jpg": "malformed name: gender 2 is outside 0..1",
    "25_1_5_20170116174525125.jpg.chip.jpg": "malformed name: race 5 is outside 0..4",
    "25_1_0_20170116174525125.txt": "not an image file (suffix)",
}


def make_utkface(parent: Path) -> Path:
    folder = parent / "UTKFace"
    for i, name in enumerate([*UTK_GOOD, *UTK_BAD]):
        save(folder / name, color=(20 * i, 100, 50), format="JPEG")
    return folder


def test_utkface_parses_strictly(tmp_path):
    folder = make_utkface(tmp_path)
    for root in (tmp_path, folder):  # the parent or the image folder itself
        ds = open_dataset("utkface", root)
        assert ds.schema == UTKFACE_SCHEMA
        assert {r.path.name: (r.labels["age"], r.labels["gender"], r.labels["race"]) for r in ds.records} == UTK_GOOD
        assert ds.skipped == {str(folder / name): reason for name, reason in UTK_BAD.items()}
        assert all(r.identity == -1 for r in ds.records)
    assert "6 usable images, 8 skipped" in ds.summary_line()
    with pytest.raises(DataError):
        UTKFace(tmp_path / "missing")


def test_splits_are_pinned(tmp_path):
    # Computed once; a change here silently reshuffles every user's train/test split.
    assert assign_split("25_0_0_20170116174525125.jpg.chip.jpg") == "test"
    assert assign_split("1_1_2_20161219140623097.jpg.chip.jpg") == "val"
    assert assign_split("34_1_3_20170104201840125.jpg.chip.jpg") == "train"
    assert assign_split("Aaron_Sorkin") == "test"
    assert assign_split("George_W_Bush") == "train"
    assert assign_split("faces/a.png") == "train"
    splits = {r.path.name: r.split for r in UTKFace(make_utkface(tmp_path)).records}
    assert splits["25_0_0_20170116174525125.jpg.chip.jpg"] == "test"
    assert splits["80_0_1_20170110122603536.jpg.chip.jpg"] == "val"
    assert splits["34_1_3_20170104201840125.jpg.chip.jpg"] == "train"
    # The fractions move the boundaries (hash fraction of this name is 0.1525).
    wider = {r.path.name: r.split for r in UTKFace(tmp_path, test_fraction=0.2, val_fraction=0.0).records}
    assert wider["1_1_2_20161219140623097.jpg.chip.jpg"] == "test"


# ---------------------------------------------------------------- LFW

LFW_PEOPLE = {"Aaron_Sorkin": 2, "George_W_Bush": 3, "Serena_Williams": 2, "Tony_Blair": 2}


def make_lfw(root: Path) -> Path:
    for person, n in LFW_PEOPLE.items():
        for i in range(1, n + 1):
            save(root / "lfw" / person / f"{person}_{i:04d}.jpg", color=(30 * i, 60, 90))
    (root / "lfw" / "Tony_Blair" / "notes.txt").write_text("x")
    (root / "male_names.txt").write_text(
        "George_W_Bush_0001.jpg\nGeorge_W_Bush_0002.jpg\nGeorge_W_Bush_0003.jpg\n"
        "Tony_Blair_0001.jpg\nTony_Blair_0002.jpg\nAaron_Sorkin_0001.jpg\nAaron_Sorkin_0002.jpg\n\n"
    )
    # Serena_Williams_0002 has no line (-> unknown); one malformed line.
    (root / "female_names.txt").write_text("Serena_Williams_0001.jpg\nthis is not a file name\n")
    (root / "pairs.txt").write_text(
        "# matched then mismatched\n"
        "George_W_Bush\t1\t2\n"
        "Tony_Blair\t1\t2\n"
        "Aaron_Sorkin\t1\t2\n"  # test split
        "George_W_Bush\t1\tSerena_Williams\t2\n"
        "George_W_Bush\t1\tAaron_Sorkin\t1\n"  # across splits: never used
        "Tony_Blair\tx\t2\n"  # malformed
        "Tony_Blair\t1\t9\t9\t9\n"  # malformed
        "Tony_Blair\t1\t7\n"  # no such image
    )
    return root


def test_lfw_records_identities_and_genders(tmp_path):
    ds = open_dataset("lfw", make_lfw(tmp_path))
    assert ds.people == sorted(LFW_PEOPLE) and len(ds.records) == 9
    assert ds.schema == LabelSchema((GENDER,))
    by_name = {r.path.name: r for r in ds.records}
    assert by_name["George_W_Bush_0003.jpg"].identity == 1
    assert by_name["Serena_Williams_0001.jpg"].labels["gender"] == 1.0
    assert by_name["Tony_Blair_0002.jpg"].labels["gender"] == 0.0
    assert math.isnan(by_name["Serena_Williams_0002.jpg"].labels["gender"])  # no label: unknown, still usable
    assert list(ds.skipped.values()) == ["unexpected name: expected Tony_Blair_NNNN.jpg"]
    assert ds.malformed_lines == {"male_names.txt": 0, "female_names.txt": 1, "pairs.txt": 2}
    splits_of_person = {}
    for r in ds.records:
        splits_of_person.setdefault(r.identity, set()).add(r.split)
    assert all(len(s) == 1 for s in splits_of_person.values())  # split by person
    assert by_name["Aaron_Sorkin_0001.jpg"].split == "test"


def test_lfw_pairs(tmp_path):
    ds = LFW(make_lfw(tmp_path))
    pairs, same, counts = ds.pairs("train")
    assert counts == {"pairs_txt_matched": 2, "pairs_txt_mismatched": 1, "seeded_mismatched": 1, "pairs_txt_unresolved": 1}
    assert pairs.shape == (4, 2) and same.tolist() == [1, 1, 0, 0]
    names = [[ds.records[i].path.name for i in pair] for pair in pairs]
    assert names[:3] == [
        ["George_W_Bush_0001.jpg", "George_W_Bush_0002.jpg"],
        ["Tony_Blair_0001.jpg", "Tony_Blair_0002.jpg"],
        ["George_W_Bush_0001.jpg", "Serena_Williams_0002.jpg"],
    ]
    for (a, b), is_same in zip(pairs, same):
        assert ds.records[a].split == ds.records[b].split == "train"
        assert (ds.records[a].identity == ds.records[b].identity) == bool(is_same)
    assert np.array_equal(ds.pairs("train")[0], pairs)  # seeded: reproducible
    more, more_same, more_counts = ds.pairs("train", n_mismatched=10, seed=1)
    assert more_counts["seeded_mismatched"] == 10 and len({frozenset(p) for p in more.tolist()}) == 13
    with pytest.raises(DataError, match="only"):
        ds.pairs("train", n_mismatched=1000)
    _, test_same, test_counts = ds.pairs("test")  # one person only: no mismatched pair possible
    assert test_same.tolist() == [1] and test_counts["seeded_mismatched"] == 0
    with pytest.raises(DataError):
        ds.pairs("training")


def test_lfw_pairs_among_arrays_follow_row_selection(tmp_path, cache_dir):
    ds = LFW(make_lfw(tmp_path))
    train = ds.arrays(size=16, progress=False).subset("train")
    pairs = ds.pairs_among(train, "train")
    assert pairs["same"].tolist() == [True, True, False, False] and pairs["counts"]["left_out_by_row_selection"] == 0
    names = [[Path(train.paths[i]).name for i in pair] for pair in pairs["rows"]]
    assert names[0] == ["George_W_Bush_0001.jpg", "George_W_Bush_0002.jpg"]
    for (a, b), same in zip(pairs["rows"], pairs["same"]):
        assert (train.identity[a] == train.identity[b]) == same
    # Selecting rows renumbers the pairs and drops (and counts) those that lose a face.
    train.pairs = pairs
    first = Path(train.paths[pairs["rows"][0, 0]]).name
    kept = np.array([Path(p).name != first for p in train.paths])
    sub = train.select(kept)
    assert sub.pairs["counts"]["left_out_by_row_selection"] == 2 and len(sub.pairs["rows"]) == 2
    for (a, b), same in zip(sub.pairs["rows"], sub.pairs["same"]):
        assert (sub.identity[a] == sub.identity[b]) == same and first not in (Path(sub.paths[a]).name, Path(sub.paths[b]).name)


def test_lfw_default_crop_is_used_by_arrays(tmp_path, cache_dir):
    ds = LFW(make_lfw(tmp_path))
    assert LFW.default_crop == 0.5
    default = ds.arrays(size=8, progress=False)
    assert np.array_equal(default.images, ds.arrays(size=8, crop=0.5, progress=False).images)
    assert len(list(cache_dir.glob("*.npy"))) == 1  # one entry: crop None meant 0.5
    ds.arrays(size=8, crop=1.0, progress=False)
    assert len(list(cache_dir.glob("*.npy"))) == 2
    assert np.isnan(default.labels["gender"]).sum() == 1
    assert default.identity.tolist() == [r.identity for r in ds.records]


# ---------------------------------------------------------------- folder + CSV


def make_folder(root: Path, csv_text: str) -> Path:
    for name in ("a.png", "b.png", "c.png", "d.png", "sub/e.jpg"):
        save(root / name)
    (root / "labels.csv").write_text(csv_text)
    return root


FOLDER_CSV = (
    "\ufeffpath,age,smiling,hair,identity,note\n"  # a byte-order mark, as spreadsheets write it
    "a.png,30,1,brown,p1,same\n"
    "b.png,,0,black,p1,same\n"  # empty age -> unknown
    "c.png,61.5,1,,p2,same\n"
    "sub/e.jpg,7,0,Brown,p3,same\n"
    "missing.png,20,1,brown,p4,same\n"
    "../outside.png,20,1,brown,p4,same\n"
    "a.png,30,1,brown,p1,same\n"
    "labels.csv,30,1,brown,p1,same\n"
    "\n"
)


def test_folder_infers_schema(tmp_path):
    ds = open_dataset("folder", make_folder(tmp_path, FOLDER_CSV))
    assert [(label.name, label.kind) for label in ds.schema] == [
        ("age", "continuous"),
        ("smiling", "binary"),
        ("hair", "categorical"),
    ]
    assert ds.schema["age"].range == (7.0, 61.5)
    assert ds.schema["hair"].classes == ("Brown", "black", "brown")  # exact strings, sorted
    assert ds.ignored_columns == {"note": "a single value"}
    labels = {r.path.relative_to(tmp_path).as_posix(): r.labels for r in ds.records}
    assert labels["a.png"] == {"age": 30.0, "smiling": 1.0, "hair": 2.0}
    assert math.isnan(labels["b.png"]["age"]) and math.isnan(labels["c.png"]["hair"])
    assert labels["sub/e.jpg"]["hair"] == 0.0
    assert ds.skipped == {
        str(tmp_path / "missing.png"): "file not found",
        str(tmp_path / "../outside.png"): "path must be relative to the root, inside it",
        "labels.csv line 8": "listed twice in the CSV",
        str(tmp_path / "labels.csv"): "not an image file (suffix)",
    }
    # Identity ids, and the split follows the person.
    by_name = {r.path.name: r for r in ds.records}
    assert ds.identity_names == ["p1", "p2", "p3"]  # p4's rows were unusable
    assert by_name["a.png"].identity == by_name["b.png"].identity == 0
    assert by_name["a.png"].split == by_name["b.png"].split == assign_split("identity:p1")


def test_folder_with_schema_and_split_column(tmp_path):
    make_folder(
        tmp_path,
        "file,age,gender,split\n"
        "a.png,30,female,test\n"
        "b.png,abc,male,train\n"  # not a number -> row skipped
        "c.png,40,3,val\n"  # not a gender -> row skipped
        "d.png,,1,TRAIN\n"
        "sub/e.jpg,20,male,holdout\n",
    )
    (tmp_path / "other.csv").write_text((tmp_path / "labels.csv").read_text())
    schema = LabelSchema((AGE, GENDER))
    ds = FolderCSV(tmp_path, csv="other.csv", path_column="file", schema=schema)
    assert ds.schema == schema
    assert [(r.path.name, r.split) for r in ds.records] == [("a.png", "test"), ("d.png", "train")]
    assert ds.records[0].labels == {"age": 30.0, "gender": 1.0}
    assert math.isnan(ds.records[1].labels["age"])
    assert ds.skipped == {
        str(tmp_path / "b.png"): "malformed label 'age'='abc'",
        str(tmp_path / "c.png"): "malformed label 'gender'='3'",
        str(tmp_path / "sub/e.jpg"): "malformed split 'holdout'",
    }
    with pytest.raises(DataError, match="no 'path' column"):
        FolderCSV(tmp_path)
    with pytest.raises(DataError, match="not found"):
        FolderCSV(tmp_path, csv="nope.csv")


def test_folder_splits_by_path_without_identity(tmp_path):
    ds = FolderCSV(make_folder(tmp_path, "path,smiling\na.png,1\nsub/e.jpg,0\n"))
    assert [r.split for r in ds.records] == [assign_split("a.png"), assign_split("sub/e.jpg")]
    assert all(r.identity == -1 for r in ds.records)


# ---------------------------------------------------------------- cache


def test_cache_builds_once_and_reports_undecodable(tmp_path, cache_dir, monkeypatch):
    folder = make_utkface(tmp_path)
    (folder / "30_0_0_20170104201840125.jpg.chip.jpg").write_bytes(b"not a jpeg at all")
    first = UTKFace(tmp_path)
    arrays = first.arrays(size=8, progress=False)
    bad = str(folder / "30_0_0_20170104201840125.jpg.chip.jpg")
    assert first.skipped[bad] == "not an image"
    assert len(arrays) == len(first.records) == len(UTK_GOOD)  # rows match records again
    assert arrays.images.shape == (6, 8, 8, 3) and arrays.images.dtype == np.uint8
    assert arrays.paths == [str(r.path) for r in first.records]

    def no_decoding(path, *args, **kwargs):
        raise AssertionError(f"decoded {path} on a cache hit")

    real_read = cache_module.read_image
    monkeypatch.setattr(cache_module, "read_image", no_decoding)
    again = UTKFace(tmp_path)
    hit = again.arrays(size=8, progress=False)
    assert isinstance(hit.images, np.memmap) and not hit.images.flags.writeable
    assert np.array_equal(hit.images, arrays.images)
    assert again.skipped == first.skipped and [r.path for r in again.undecodable] == [Path(bad)]
    for name in ("age", "gender", "race"):
        assert np.array_equal(hit.labels[name], arrays.labels[name])
    assert hit.split.tolist() == [r.split for r in again.records]
    assert hit.subset("train").images.shape[1:] == (8, 8, 3)
    # A second size on the same object: same fingerprint (undecodable ones included), new entry.
    monkeypatch.setattr(cache_module, "read_image", real_read)
    assert again.arrays(size=4, progress=False).images.shape == (6, 4, 4, 3)
    assert len(list(cache_dir.glob("*.npy"))) == 2


def test_cache_rebuilds_when_files_change(tmp_path, cache_dir, monkeypatch):
    folder = make_utkface(tmp_path)
    UTKFace(tmp_path).arrays(size=8, progress=False)
    decoded = []
    real_read = cache_module.read_image

    def counting(path, *args, **kwargs):
        decoded.append(path)
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(cache_module, "read_image", counting)
    UTKFace(tmp_path).arrays(size=8, progress=False)
    assert decoded == []

    changed = folder / "25_0_0_20170116174525125.jpg.chip.jpg"
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # "touch"
    UTKFace(tmp_path).arrays(size=8, progress=False)
    assert len(decoded) == len(UTK_GOOD)
    assert len(list(cache_dir.glob("*.npy"))) == 1  # the stale entry is gone

    decoded.clear()
    save(folder / "40_1_1_20170104201840125.jpg.chip.jpg")  # a new image
    assert len(UTKFace(tmp_path).arrays(size=8, progress=False)) == len(UTK_GOOD) + 1
    assert len(decoded) == len(UTK_GOOD) + 1


def test_interrupted_build_leaves_no_entry(tmp_path, cache_dir, monkeypatch):
    make_utkface(tmp_path)

    def crash(path, *args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cache_module, "read_image", crash)
    with pytest.raises(RuntimeError):
        UTKFace(tmp_path).arrays(size=8, progress=False)
    assert list(cache_dir.iterdir()) == []  # nothing, not even temp files


def test_cache_location(tmp_path, monkeypatch):
    assert cache_module.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("CONCEAL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_module.cache_dir() == tmp_path / "xdg" / "conceal"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_module.cache_dir() == Path.home() / ".cache" / "conceal"


# ---------------------------------------------------------------- info


def test_dataset_info_from_records(tmp_path, monkeypatch):
    make_lfw(tmp_path)
    monkeypatch.setattr(cache_module, "read_image", lambda *a, **k: pytest.fail("info decoded an image"))
    info = dataset_info(LFW(tmp_path))
    assert info["dataset"] == "lfw" and info["n_images"] == 9 and info["n_skipped"] == 1
    assert info["identities"] == 4 and sum(info["splits"].values()) == 9
    assert info["labels"]["gender"] == {"male": 7, "female": 1, "unknown": 1}
    assert info["labels_by_split"]["test"]["gender"] == {"male": 2, "female": 0}
    json.dumps(info)  # plain values only
    text = format_info(info)
    assert "9 usable, 1 skipped" in text and "unknown" in text and "gender (binary)" in text

    utk = dataset_info(UTKFace(make_utkface(tmp_path / "utk")))
    assert utk["identities"] is None
    assert utk["labels"]["age"] == {"min": 1.0, "max": 116.0, "mean": pytest.approx(311 / 6), "median": 44.5, "unknown": 0}
    assert "malformed name" in format_info(utk)


def test_dataset_info_from_arrays():
    class Generated:  # what a synthetic dataset looks like to info: arrays(), no records
        name = "synthetic"

        def arrays(self, size=64):
            return FaceArrays(
                images=np.zeros((3, size, size, 3), dtype=np.uint8),
                labels={"gender": np.array([0, 1, np.nan], dtype=np.float32)},
                schema=LabelSchema((GENDER,)),
                identity=np.array([-1, -1, -1]),
                split=np.array(["train", "train", "test"]),
            )

    info = dataset_info(Generated(), size=4)
    assert info["n_images"] == 3 and info["root"] is None and info["identities"] is None
    assert info["splits"] == {"train": 2, "val": 0, "test": 1}
    assert info["labels"]["gender"] == {"male": 1, "female": 1, "unknown": 1}
    assert "synthetic" in format_info(info)
