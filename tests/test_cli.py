"""End-to-end CLI: data info, train errors, apply, encode, demo — on images the tests generate."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
from PIL import Image

from conceal.cli import main


@pytest.fixture
def photo_folder(tmp_path, synthetic_small):
    """Four 80x80 JPEG faces (one with EXIF and GPS), one corrupt file and one text file."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        img = Image.fromarray(synthetic_small.images[i]).resize((80, 80))
        exif = Image.Exif()
        exif[0x010F] = "SecretCam"  # Make
        gps = exif.get_ifd(0x8825)  # GPSInfo: a latitude
        gps[1], gps[2] = "N", (52.0, 31.0, 0.0)
        img.save(folder / f"face{i}.jpg", exif=exif.tobytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("data", "train", "apply", "encode", "audit", "demo"):
        assert command in out


def test_data_info_json_on_synthetic(capsys):
    assert main(["data", "info", "--dataset", "synthetic", "--n", "200", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_images"] == 200 and info["n_skipped"] == 0
    assert sum(info["splits"].values()) == 200
    assert {"age", "gender", "race"} <= set(info["labels"])


def test_bad_config_key_is_one_line_error(tmp_path, capsys):
    rc = main(["train", "concealer", "--set", "model.latnt=4", "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "model.latnt" in err


def test_missing_root_is_one_line_error(tmp_path, capsys):
    rc = main(["data", "info", "--dataset", "utkface", "--root", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "does not exist" in err


def test_apply_writes_clean_outputs_and_counts_skips(tiny_model_dir, photo_folder, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in photo_folder.iterdir()}
    out = tmp_path / "out"
    rc = main(["apply", str(tiny_model_dir), str(photo_folder), "--as", "gender=female,age=40", "-o", str(out), "--quiet", "--no-detect"])
    summary = capsys.readouterr().out.strip()
    assert rc == 0
    assert "wrote 4 images" in summary and "2 skipped" in summary
    outputs = sorted(out.glob("*.png"))
    assert [p.name for p in outputs] == [f"face{i}.png" for i in range(4)]
    for p in outputs:
        with Image.open(p) as img:
            assert img.size == (32, 32)
            assert not img.getexif() and not img.info.get("exif") and "GPS" not in str(img.info)
    assert {p.name: p.read_bytes() for p in photo_folder.iterdir()} == before  # inputs untouched


def test_apply_upscale_returns_the_input_crop_size(tiny_model_dir, photo_folder, tmp_path):
    out = tmp_path / "up"
    assert main(["apply", str(tiny_model_dir), str(photo_folder / "face0.jpg"), "-o", str(out), "--upscale", "--quiet", "--no-detect"]) == 0
    with Image.open(out / "face0.png") as img:
        assert img.size == (80, 80)


@pytest.mark.parametrize(
    "attrs, message",
    [("age=200", "age must be in 0..116"), ("race=martian", "race must be one of white, black, asian, indian, other"),
     ("mood=happy", "unknown attribute 'mood'"), ("gender", "name=value")],
)
def test_apply_rejects_bad_attributes_in_one_line(tiny_model_dir, photo_folder, tmp_path, capsys, attrs, message):
    rc = main(["apply", str(tiny_model_dir), str(photo_folder), "--as", attrs, "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_apply_with_no_readable_image_fails_clearly(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"")
    rc = main(["apply", str(tiny_model_dir), str(tmp_path / "a.jpg"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "zero-byte file" in err


def test_unknown_model_path_is_one_line_error(tmp_path, photo_folder, capsys):
    rc = main(["apply", str(tmp_path / "nomodel"), str(photo_folder), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "no model found" in err


def test_encode_writes_codes_and_paths(tiny_model_dir, photo_folder, tmp_path):
    out = tmp_path / "codes.npz"
    assert main(["encode", str(tiny_model_dir), str(photo_folder), "-o", str(out), "--no-detect"]) == 0
    data = np.load(out)
    assert data["codes"].shape == (4, 8) and data["codes"].dtype == np.float32
    assert [p.split("/")[-1] for p in data["paths"]] == [f"face{i}.jpg" for i in range(4)]
    assert np.isfinite(data["codes"]).all()


def test_demo_writes_a_grid(tiny_model_dir, tmp_path, capsys):
    assert main(["demo", "--model", str(tiny_model_dir), "-o", str(tmp_path)]) == 0
    path = tmp_path / "demo_grid.png"
    assert path.is_file() and str(path) in capsys.readouterr().out
    with Image.open(path) as img:
        assert img.size[0] > img.size[1] > 100


def test_demo_prefers_the_128_px_model_and_falls_back_to_64(tmp_path, monkeypatch):
    from conceal import demo

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "REPO_MODELS", tmp_path / "elsewhere")
    for name in ("concealer-utkface-64", "concealer-utkface-128"):
        with pytest.raises(FileNotFoundError, match="concealer-utkface-128 or concealer-utkface-64"):
            demo.default_model_path()
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "model.json").write_text("{}")
        assert demo.default_model_path().name == name  # 64 alone, then 128 beside it
        if name == "concealer-utkface-64":
            (tmp_path / "models" / name / "model.json").unlink()  # 128 alone next
    (tmp_path / "models" / "concealer-utkface-64" / "model.json").write_text("{}")
    assert demo.default_model_path().name == "concealer-utkface-128"


def test_demo_crops_the_bundled_photos_as_apply_does(tiny_model_dir, monkeypatch):
    """The grid's photo rows are the crops `conceal apply` hands the model for skimage's photos."""
    from skimage import data

    from conceal import demo
    from conceal.faces.detect import DetectorUnavailable
    from conceal.photos import conceal_photo

    model = demo.Concealer.load(tiny_model_dir)
    try:
        crops, titles = demo.photo_faces(model)
    except DetectorUnavailable as error:  # pragma: no cover - the photos extra is part of the dev install
        pytest.skip(str(error))
    if titles == ["astronaut (fixed box: no detector)"]:
        pytest.skip("no face detector installed")
    assert titles == [title for _, title in demo.PHOTOS]
    seen = []
    monkeypatch.setattr(model, "apply", lambda crops, **_: seen.append(crops) or crops)
    conceal_photo(model, data.astronaut(), as_={"gender": "male"}, max_faces=1)
    assert crops[0].shape == (model.image_size, model.image_size, 3) and np.array_equal(crops[0], seen[0][0])


def test_apply_crops_like_the_model_was_trained(tiny_model_dir, tmp_path):
    """The centre crop defaults to the model's training crop: its data config, else its dataset's default (LFW: 0.5)."""
    import json
    import shutil

    from conceal.faces.align import training_data
    from conceal.methods import load_api

    assert training_data(load_api(tiny_model_dir)) == ("synthetic", 1.0)  # synthetic faces fill the frame
    lfw_model = tmp_path / "lfw_model"
    shutil.copytree(tiny_model_dir / "checkpoint", lfw_model)
    info = json.loads((lfw_model / "model.json").read_text())
    info["data"].update(dataset="lfw", crop=None)
    (lfw_model / "model.json").write_text(json.dumps(info))
    assert training_data(load_api(lfw_model)) == ("lfw", 0.5)


def test_apply_and_encode_fold_batch_norm_and_erase_does_not(tiny_model_dir, photo_folder, tmp_path, monkeypatch):
    """apply/encode never train or save, so they run the folded (faster) model; erase saves the method's
    state_dict, so it must load it unfolded (test_methods checks the erased model reloads)."""
    import conceal.methods

    calls, load_api = [], conceal.methods.load_api

    def spy(path, *args, **kwargs):
        calls.append(kwargs.get("fold_batch_norm", False))
        return load_api(path, *args, **kwargs)

    monkeypatch.setattr(conceal.methods, "load_api", spy)
    assert main(["apply", str(tiny_model_dir), str(photo_folder), "-o", str(tmp_path / "a"), "--quiet", "--no-detect"]) == 0
    assert main(["encode", str(tiny_model_dir), str(photo_folder), "-o", str(tmp_path / "c.npz"), "--no-detect"]) == 0
    assert main(["erase", str(tiny_model_dir), "-o", str(tmp_path / "erased")]) == 0
    assert calls == [True, True, False]


def test_audit_embed_sample_takes_three_counts(capsys, tmp_path):
    # checked before any model or data is read: one line, exit status 2
    assert main(["audit", "models/concealer-utkface-64", "-o", str(tmp_path / "r"), "--embed-sample", "600,200"]) == 2
    assert capsys.readouterr().err.strip().startswith("conceal: error: --embed-sample takes TRAIN,VAL,TEST")
    assert not (tmp_path / "r").exists()


def test_audit_records_the_command_as_typed_and_a_library_call_as_the_call(monkeypatch, tmp_path):
    # A report's provenance must let a reader re-run it: `python -m conceal` would otherwise record __main__.py's
    # path, and a library call the interpreter's argv ("-c", or pytest's).
    import conceal.audit
    from conceal.audit import _call_words

    defaults = {"dataset": None, "root": None, "out": "report", "max_images": None, "seed": 0, "command": None, "judges": "auto",
                "log": print, "threat_model": "all", "max_train": None, "public_options": None, "reuse_test_halves": None}
    given = defaults | {"dataset": "fer2013", "out": tmp_path, "public_options": {"hog": True}, "judges": {"age_gender": object()}}
    words = _call_words("models/m", given, {"identity_faces": 100})
    assert words == (f"run_audit('models/m', dataset='fer2013', out={str(tmp_path)!r}, judges='<judge objects>', "
                     "public_options={'hog': True}, identity_faces=100)")

    seen = {}
    monkeypatch.setattr(conceal.audit, "run_audit", lambda *a, **kw: seen.update(kw) or "report.md")
    argv = ["audit", "models/concealer-utkface-64", "-o", str(tmp_path / "my report"), "--threat-model", "public-model"]
    assert main(argv) == 0
    assert seen["command"] == "conceal audit models/concealer-utkface-64 -o " + shlex.quote(str(tmp_path / "my report")) + " --threat-model public-model"
