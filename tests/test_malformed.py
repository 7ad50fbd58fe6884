"""A corpus of malformed inputs run through the CLI: each bad image is skipped and counted among good ones,
and alone ends in one line with exit status 2; odd but valid images work. No traceback, ever."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conceal.cli import main


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds none (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def jpeg_bytes(size=(40, 40)) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


# name -> bytes of a file that is no usable image (None: made below, not written as bytes)
BAD = {
    "zero.jpg": b"",
    "truncated.jpg": jpeg_bytes()[:300],
    "random.png": bytes(np.random.default_rng(1).integers(0, 255, 500, dtype=np.uint8)),
    "text.jpg": b"just some words\n",
    "bomb.png": png_header_only(30000, 30000),
    "header_only.png": png_header_only(40, 40),
    "folder.jpg": None,
    "dangling.jpg": None,
}


def odd_but_valid(folder: Path) -> list[str]:
    """Images that are unusual but fine: 1x1, 16-bit grey, transparent, CMYK, palette, animated, tall."""
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "one_pixel.png")
    Image.fromarray(np.full((30, 30), 40000, np.uint16)).save(folder / "grey16.png")
    Image.new("RGBA", (30, 30), (0, 0, 0, 0)).save(folder / "transparent.png")
    Image.new("CMYK", (30, 30), (0, 100, 100, 0)).save(folder / "cmyk.jpg")
    Image.new("P", (30, 30), 3).save(folder / "palette.gif")
    frames = [Image.new("RGB", (30, 30), (i * 50, 0, 0)) for i in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (10, 300)).save(folder / "tall.jpg")
    return ["one_pixel.png", "grey16.png", "transparent.png", "cmyk.jpg", "palette.gif", "animated.gif", "tall.jpg"]


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, content in BAD.items():
        if content is not None:
            (folder / name).write_bytes(content)
    (folder / "folder.jpg").mkdir()
    (folder / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    odd_but_valid(folder)
    return folder


def test_bad_images_are_skipped_and_counted_among_good_ones(tiny_model_dir, corpus, tmp_path, capsys):
    out = tmp_path / "codes.npz"
    assert main(["encode", str(tiny_model_dir), str(corpus), "-o", str(out), "--no-detect"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    codes = np.load(out)
    assert len(codes["paths"]) == 7 and np.isfinite(codes["codes"]).all()  # every odd-but-valid image
    # folder.jpg is a folder: not listed as a file at all; the other bad files are each counted.
    assert f"{len(BAD) - 1} skipped" in captured.out


@pytest.mark.parametrize("name", [n for n in BAD if n != "folder.jpg"])
def test_each_bad_image_alone_is_one_line(tiny_model_dir, corpus, tmp_path, capsys, name):
    rc = main(["encode", str(tiny_model_dir), str(corpus / name), "-o", str(tmp_path / "c.npz"), "--no-detect"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("conceal: error: ") and "Traceback" not in err, err
    assert not (tmp_path / "c.npz").exists()


def test_every_exported_graph_takes_an_empty_batch(tiny_models, tmp_path):
    """In a subprocess: the masker's graph used to die with SIGFPE (flatten divided by the batch size)."""
    import subprocess
    import sys

    pytest.importorskip("onnxruntime")
    code = """
import sys, numpy as np
from conceal.export import export_onnx, onnx_session, example_inputs, input_names
from conceal.train.checkpoint import load_model
method = load_model(sys.argv[1])
session = onnx_session(export_onnx(method, sys.argv[2]))
inputs = {n: v[:0].numpy() for n, v in example_inputs(method, 2).items() if n in input_names(method)}
outputs = session.run(None, inputs)
assert all(o.shape[0] == 0 for o in outputs), [o.shape for o in outputs]
"""
    for name, model in tiny_models.items():
        done = subprocess.run([sys.executable, "-c", code, str(model), str(tmp_path / f"{name}.onnx")], capture_output=True, text=True)
        assert done.returncode == 0, (name, done.returncode, done.stderr[-1500:])


# --- tampered model folders --------------------------------------------------------------------------


def _json(edit):
    """A tampering that rewrites model.json through ``edit(info) -> info``."""
    def tamper(folder: Path) -> None:
        import json

        info = json.loads((folder / "model.json").read_text())
        (folder / "model.json").write_text(json.dumps(edit(info)))
    return tamper


def _set(key, value):
    return _json(lambda info: {**info, key: value})


def _config(key, value):
    return _json(lambda info: {**info, "model_config": {**info["model_config"], key: value}})


def _drop(key):
    return _json(lambda info: {k: v for k, v in info.items() if k != key})


def _weights(edit):
    """A tampering that rewrites model.safetensors through ``edit(tensors)`` (a dict it changes in place)."""
    def tamper(folder: Path) -> None:
        from safetensors.numpy import load_file, save_file

        tensors = load_file(folder / "model.safetensors")
        edit(tensors)
        save_file(tensors, folder / "model.safetensors")
    return tamper


def _first(tensors) -> str:
    return sorted(k for k, v in tensors.items() if v.dtype == np.float32 and v.size > 1)[0]


def _bytes(path: str, content):
    def tamper(folder: Path) -> None:
        target = folder / path
        target.write_bytes(content(target.read_bytes()) if callable(content) else content)
    return tamper


def _replace_dir(folder: Path) -> None:
    (folder / "model.json").unlink()
    (folder / "model.json").mkdir()


TAMPERINGS = {
    "json not json": _bytes("model.json", b"{not json"),
    "json zero bytes": _bytes("model.json", b""),
    "json not utf8": _bytes("model.json", b'{"format": "\xff"}'),
    "json an array": _bytes("model.json", b"[1, 2]"),
    "json a folder": _replace_dir,
    "format missing": _drop("format"),
    "format wrong": _set("format", "conceal-model/99"),
    "method missing": _drop("method"),
    "method unknown": _set("method", "nosuch"),
    "method not a string": _set("method", 123),
    "method of another kind": lambda f: _set("method", {"concealer": "masker"}.get(json_method(f), "concealer"))(f),
    "config missing": _drop("model_config"),
    "config a list": _set("model_config", [1, 2]),
    "config unknown key": _config("nonsense", 1),
    "config wrong type": _config("eraser_rank", "big"),
    "config out of range": _config("eraser_rank", -5),
    "config shape change": lambda f: _config(*WIDTH[json_method(f)])(f),
    "schema missing": _drop("schema"),
    "schema not a list": _set("schema", {"gender": "binary"}),
    "schema bad kind": _json(lambda i: {**i, "schema": [{**i["schema"][0], "kind": "fuzzy"}] + i["schema"][1:]}),
    "schema label without name": _json(lambda i: {**i, "schema": [{"kind": "binary", "classes": ["a", "b"]}]}),
    "schema empty": _set("schema", []),
    "schema entries not tables": _set("schema", ["gender"]),
    "size missing": _drop("image_size"),
    "size a string": _set("image_size", "32"),
    "size zero": _set("image_size", 0),
    "size not a multiple": _set("image_size", 30),
    "size changed": _set("image_size", 64),
    "weights zero bytes": _bytes("model.safetensors", b""),
    "weights truncated": _bytes("model.safetensors", lambda b: b[: len(b) // 2]),
    "weights random bytes": _bytes("model.safetensors", bytes(range(256)) * 8),
    "weights header too long": _bytes("model.safetensors", lambda b: struct.pack("<Q", 10**12) + b[8:]),
    "weights missing tensor": _weights(lambda t: t.pop(_first(t))),
    "weights extra tensor": _weights(lambda t: t.update(extra=np.zeros(3, np.float32))),
    "weights wrong shape": _weights(lambda t: t.update({_first(t): np.zeros(t[_first(t)].size + 1, np.float32)})),
    "weights NaN": _weights(lambda t: t[_first(t)].reshape(-1).__setitem__(0, np.nan)),
    "weights inf": _weights(lambda t: t[_first(t)].reshape(-1).__setitem__(0, np.inf)),
}
# method -> (a config key, a value) that changes tensor shapes but is itself a valid setting
WIDTH = {"concealer": ("width", 5), "masker": ("masker_width", 3), "anonymizer": ("siamese_hidden", 7)}


def json_method(folder: Path) -> str:
    import json

    return json.loads((folder / "model.json").read_text())["method"]


def test_the_corpus_has_the_issue_s_37_kinds():
    assert len(TAMPERINGS) == 37


@pytest.mark.parametrize("method", ["concealer", "masker", "anonymizer"])
def test_an_untampered_model_exports(tiny_models, tmp_path, method):
    pytest.importorskip("onnx")
    assert main(["export", str(tiny_models[method]), "-o", str(tmp_path / "m.onnx"), "--no-check"]) == 0


@pytest.mark.parametrize("kind", TAMPERINGS)
@pytest.mark.parametrize("method", ["concealer", "masker"])
def test_a_tampered_model_folder_is_one_line(tiny_models, tmp_path, capsys, method, kind):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_models[method], folder)
    TAMPERINGS[kind](folder)
    rc = main(["export", str(folder), "-o", str(tmp_path / "m.onnx"), "--no-check"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("conceal: error: ") and "Traceback" not in err, err
    assert not (tmp_path / "m.onnx").exists()
