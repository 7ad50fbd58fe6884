"""`conceal apply` on whole photos: every planted face found and replaced, nothing else touched, outputs laid
out like the inputs, a manifest line per input, nothing overwritten, and bad inputs counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime", reason="the face detector needs the photos extra")
pytest.importorskip("skimage")

from photo_fixtures import composite, found  # noqa: E402

from conceal.apply import ApplyOptions, conceal_images, encode_png, output_names  # noqa: E402
from conceal.cli import main  # noqa: E402

MANIFEST_KEYS = ["input", "output", "status", "reason", "faces"]


def manifest(out) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def composites():
    """Four 640x480 photos with 1, 2, 3 and 4 faces of 40..160 px, tilted -30..30 degrees."""
    return [composite(n, seed=n) for n in (1, 2, 3, 4)]


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, composites):
    folder = tmp_path_factory.mktemp("photos")
    for i, (photo, _) in enumerate(composites):
        Image.fromarray(photo).save(folder / f"group{i + 1}.png")
    return folder


def test_apply_finds_every_planted_face_and_touches_nothing_else(tiny_models, photo_dir, composites, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["apply", str(tiny_models["concealer"]), str(photo_dir), "-o", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("wrote 4 images to ")
    records = manifest(out)
    assert [list(r) for r in records] == [MANIFEST_KEYS] * 4
    for i, ((photo, planted), record) in enumerate(zip(composites, records)):
        assert record["input"] == str(photo_dir / f"group{i + 1}.png") and record["output"] == f"group{i + 1}.png"
        assert record["status"] == "ok" and record["reason"] is None
        assert all(found(p, record["faces"]) for p in planted), f"a planted face was missed in group{i + 1}"
        assert len(record["faces"]) == len(planted)  # and nothing else was taken for a face
        for face in record["faces"]:
            assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and 0 < face["score"] <= 1
        with Image.open(out / record["output"]) as img:
            result = np.asarray(img.convert("RGB"))
        assert result.shape == photo.shape
        untouched = np.ones(photo.shape[:2], bool)
        for p in planted:
            x0, y0, x1, y1 = p["region"]
            untouched[max(0, y0):y1, max(0, x0):x1] = False
            assert (result[y0:y1, x0:x1] != photo[y0:y1, x0:x1]).any()  # each face was replaced
        assert np.array_equal(result[untouched], photo[untouched])  # bit-identical outside the planted heads


def test_conceal_images_is_the_same_alone_or_batched(tiny_models, composites):
    """Ray Data's map_batches can call conceal_images on any grouping and write the CLI's bytes."""
    from conceal.methods import load_api

    model = load_api(tiny_models["concealer"], fold_batch_norm=True)
    options = ApplyOptions(as_={"gender": "female"})
    photos = [photo for photo, _ in composites[:3]]
    together = conceal_images(model, photos, options)
    alone = [conceal_images(model, [photo], options)[0] for photo in photos]
    for a, b in zip(together, alone):
        assert encode_png(a.images["image"]) == encode_png(b.images["image"]) and a.faces == b.faces


def test_no_face_photos_are_copied_or_skipped_and_listed(tiny_models, tmp_path, capsys):
    from photo_fixtures import background

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(background(0, 320, 240)).save(folder / "coffee.png")
    Image.fromarray(composite(1, seed=7, width=320, height=240, sides=(60, 80))[0]).save(folder / "person.png")
    model = str(tiny_models["masker"])
    assert main(["apply", model, str(folder), "-o", str(tmp_path / "copy"), "--quiet"]) == 0
    summary = capsys.readouterr().out
    assert "wrote 2 images" in summary and "1 photo with no face found, copied unchanged" in summary and "coffee.png" in summary
    with Image.open(tmp_path / "copy" / "coffee.png") as img:
        assert np.array_equal(np.asarray(img), background(0, 320, 240))
    coffee = manifest(tmp_path / "copy")[0]
    assert coffee["status"] == "no_face" and coffee["faces"] == [] and coffee["output"] == "coffee.png"

    assert main(["apply", model, str(folder), "-o", str(tmp_path / "skip"), "--on-no-face", "skip", "--quiet"]) == 0
    assert "wrote 1 image to" in capsys.readouterr().out  # singular
    assert not (tmp_path / "skip" / "coffee.png").exists()
    assert manifest(tmp_path / "skip")[0] == {"input": str(folder / "coffee.png"), "output": None, "status": "no_face",
                                              "reason": "no face found", "faces": []}


def test_exif_rotated_photo_comes_out_upright_and_metadata_free(tiny_models, tmp_path):
    photo, planted = composite(1, seed=3, width=400, height=300, sides=(80, 100), tilts=(0, 0))
    sideways = Image.fromarray(photo).transpose(Image.Transpose.ROTATE_90)  # stored 300 x 400, shown upright by EXIF
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    exif[0x010F] = "SecretCam"
    (tmp_path / "in").mkdir()
    sideways.save(tmp_path / "in" / "phone.jpg", exif=exif.tobytes(), quality=95)
    out = tmp_path / "out"
    assert main(["apply", str(tiny_models["concealer"]), str(tmp_path / "in"), "-o", str(out), "--quiet"]) == 0
    with Image.open(out / "phone.png") as img:
        assert img.size == (400, 300)  # the upright orientation
        assert not img.getexif() and "exif" not in img.info
    record = manifest(out)[0]
    assert record["status"] == "ok" and found(planted[0], record["faces"])


def test_outputs_mirror_the_input_tree_and_never_collide(tmp_path):
    files = [tmp_path / p for p in ("a/1.jpg", "b/1.jpg", "a/1.png", "a/face.jpg", "a/face_mask.jpg")]
    for f in files:
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"x")
    names = output_names([tmp_path / "a", tmp_path / "b"], files, ("image", "mask"))
    assert names[files[0]]["image"] == "a/1.png" and names[files[1]]["image"] == "b/1.png"
    every = [n for kinds in names.values() for n in kinds.values()]
    assert len(set(every)) == len(every)  # 1.jpg/1.png and face.jpg's mask/face_mask.jpg included
    assert names[files[4]]["image"] == "a/face_mask.png" and names[files[3]]["mask"] != "a/face_mask.png"
    # the argument order does not change the layout
    assert output_names([tmp_path / "b", tmp_path / "a"], files[::-1], ("image", "mask")) == names
    # one folder given: paths relative to it
    assert output_names([tmp_path / "a"], files[:1], ("image",))[files[0]] == {"image": "1.png"}
    index = output_names([tmp_path], files, ("image", "mask"), names="index")
    assert sorted(n["image"] for n in index.values()) == [f"{i:06d}.png" for i in range(1, 6)]


def test_apply_refuses_to_overwrite_and_resumes(tiny_models, photo_dir, tmp_path, capsys):
    model, out = str(tiny_models["masker"]), tmp_path / "out"
    one = photo_dir / "group1.png"
    assert main(["apply", model, str(one), "-o", str(out), "--quiet"]) == 0
    capsys.readouterr()
    first = (out / "group1.png").read_bytes()
    assert main(["apply", model, str(one), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume" in err and "--overwrite" in err
    (out / "manifest.jsonl").unlink()
    assert main(["apply", model, str(one), "-o", str(out)]) == 2  # a file of the same name is there
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exist" in err and "--overwrite" in err
    assert main(["apply", model, str(one), "-o", str(out), "--overwrite", "--quiet"]) == 0
    assert (out / "group1.png").read_bytes() == first  # the same bytes again
    capsys.readouterr()
    assert main(["apply", model, str(photo_dir), "-o", str(out), "--resume", "--quiet"]) == 0
    assert "wrote 3 images" in (summary := capsys.readouterr().out) and "1 already done" in summary
    assert (out / "group1.png").read_bytes() == first and len(manifest(out)) == 4
    # a torn last line (a crash mid-write) is dropped; everything listed is done
    with open(out / "manifest.jsonl", "a") as log:
        log.write('{"input": "torn')
    assert main(["apply", model, str(photo_dir), "-o", str(out), "--resume", "--quiet"]) == 0
    assert "wrote 0 images" in capsys.readouterr().out and len(manifest(out)) == 4


@pytest.mark.parametrize("out, message", [("result.png", "looks like a file name"), ("photos/sub", "inside the input folder"),
                                          ("photos", "inside the input folder")])
def test_apply_refuses_bad_output_folders(tiny_models, tmp_path, capsys, out, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "photos" / "x.png")
    assert main(["apply", str(tiny_models["masker"]), "photos", "-o", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "result.png").exists() and not (tmp_path / "photos" / "sub").exists()


def test_bad_inputs_through_the_photo_path_are_counted(tiny_models, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "notes.txt").write_text("not an image")
    Image.new("RGB", (1, 1)).save(folder / "dot.png")  # too small to hold a face
    out = tmp_path / "out"
    assert main(["apply", str(tiny_models["concealer"]), str(folder), "-o", str(out), "--quiet"]) == 0
    summary = capsys.readouterr().out
    assert "3 skipped" in summary and "zero-byte file" in summary and "1 photo with no face found" in summary
    records = {r["input"].rsplit("/", 1)[-1]: r for r in manifest(out)}
    assert {k: r["status"] for k, r in records.items()} == {"notes.txt": "skipped", "broken.png": "skipped", "dot.png": "no_face",
                                                            "empty.jpg": "skipped"}
    assert records["empty.jpg"]["reason"] == "zero-byte file"


def test_names_index_hides_label_like_names(tiny_models, photo_dir, tmp_path, capsys):
    folder = tmp_path / "utk"
    folder.mkdir()
    (folder / "25_1_0_20170116.jpg.chip.jpg").write_bytes((photo_dir / "group1.png").read_bytes())
    model = str(tiny_models["masker"])
    assert main(["apply", model, str(folder), "-o", str(tmp_path / "kept"), "--quiet"]) == 0
    assert "like labels" in capsys.readouterr().err
    assert main(["apply", model, str(folder), "-o", str(tmp_path / "idx"), "--names", "index", "--quiet"]) == 0
    assert "like labels" not in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["000001.png", "manifest.jsonl"]
    assert manifest(tmp_path / "idx")[0]["output"] == "000001.png"


@pytest.mark.slow
def test_huge_photo_in_bounded_memory(tiny_models, tmp_path):
    """An 8000 x 6000 photo: detected on a 2048-px copy, faces pasted back at full size, in bounded memory."""
    import subprocess
    import sys

    photo, planted = composite(2, seed=5, width=8000, height=6000, sides=(600, 1500))
    (tmp_path / "in").mkdir()
    Image.fromarray(photo).save(tmp_path / "in" / "big.jpg", quality=90)
    del photo
    script = ("import resource, sys; from conceal.cli import main; rc = main(sys.argv[1:]); "
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", script, "apply", str(tiny_models["concealer"]), str(tmp_path / "in"),
                           "-o", str(tmp_path / "out"), "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    peak_mib = int(done.stdout.strip().splitlines()[-1])
    assert peak_mib < 2500, f"peak RSS {peak_mib} MiB for one 8000x6000 photo"  # the photo itself is 137 MiB
    record = manifest(tmp_path / "out")[0]
    assert all(found(p, record["faces"]) for p in planted)
    with Image.open(tmp_path / "out" / "big.png") as img:
        assert img.size == (8000, 6000)


def test_malformed_corpus_through_the_photo_path(tiny_models, tmp_path, capsys):
    """test_malformed's corpus, detecting: each bad file skipped with its reason, odd but valid ones copied."""
    from test_malformed import BAD, odd_but_valid

    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, content in BAD.items():
        if content is not None:
            (folder / name).write_bytes(content)
    (folder / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    valid = odd_but_valid(folder)
    out = tmp_path / "out"
    assert main(["apply", str(tiny_models["concealer"]), str(folder), "-o", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and f"{len(BAD) - 1} skipped" in captured.out  # all but folder.jpg (not made here)
    records = {Path(r["input"]).name: r for r in manifest(out)}
    assert all(records[n]["status"] == "no_face" and (out / records[n]["output"]).is_file() for n in valid)
    assert all(records[n]["status"] == "skipped" and records[n]["reason"] for n in BAD if n in records)


# --- share-then-reveal: encode photos, decode codes -------------------------------------------------------


def test_encode_photos_then_decode_into_them(tiny_models, photo_dir, composites, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(photo_dir.parent)
    model = str(tiny_models["concealer"])
    codes = tmp_path / "codes.npz"
    assert main(["encode", model, photo_dir.name, "-o", str(codes)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 10 codes" in printed and "from 4 photos" in printed
    data = np.load(codes)
    assert data["codes"].shape[0] == 10 and data["boxes"].shape == (10, 4) and data["landmarks"].shape == (10, 5, 2)
    assert sorted(set(data["paths"])) == [f"{photo_dir.name}/group{i}.png" for i in range(1, 5)]  # relative, as given
    assert (data["sizes"] == [480, 640]).all()

    # every face its own attributes from a CSV; one photo has no row: not rendered, and said
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,gender,age\n{photo_dir.name}/group1.png,female,30\n{photo_dir.name}/group2.png,male,70\n")
    assert main(["decode", model, str(codes), "--labels", str(labels), "-o", str(tmp_path / "faces")]) == 0
    assert "rendered 3 faces" in (summary := capsys.readouterr().out) and "2 photos not in" in summary
    assert len(list((tmp_path / "faces").glob("*.png"))) == 3

    out = tmp_path / "revealed"
    assert main(["decode", model, str(codes), "--as", "gender=male", "--into", photo_dir.name, "-o", str(out)]) == 0
    assert "pasted 10 faces into 4 photos" in capsys.readouterr().out
    for i, (photo, planted) in enumerate(composites, 1):
        with Image.open(out / f"group{i}.png") as img:
            result = np.asarray(img.convert("RGB"))
        untouched = np.ones(photo.shape[:2], bool)
        for p in planted:
            x0, y0, x1, y1 = p["region"]
            untouched[max(0, y0):y1, max(0, x0):x1] = False
        assert np.array_equal(result[untouched], photo[untouched]) and not np.array_equal(result, photo)
    assert [r["status"] for r in manifest(out)] == ["ok"] * 4
    # again into the same folder: refused in one line
    assert main(["decode", model, str(codes), "--into", photo_dir.name, "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [(b"not a zip", "not a codes file"), (None, "codes of size")])
def test_decode_refuses_bad_codes_in_one_line(tiny_models, tmp_path, capsys, content, message):
    codes = tmp_path / "codes.npz"
    if content is None:
        np.savez(codes, codes=np.zeros((2, 999), np.float32), paths=np.array(["a.jpg", "b.jpg"]))
    else:
        codes.write_bytes(content)
    assert main(["decode", str(tiny_models["concealer"]), str(codes), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_decode_needs_a_model_that_renders_codes(tiny_models, tmp_path, capsys):
    np.savez(tmp_path / "c.npz", codes=np.zeros((1, 4), np.float32), paths=np.array(["a.jpg"]))
    assert main(["decode", str(tiny_models["masker"]), str(tmp_path / "c.npz"), "-o", str(tmp_path / "o")]) == 2
    assert "does not render codes" in capsys.readouterr().err
