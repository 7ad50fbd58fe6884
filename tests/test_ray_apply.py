"""``conceal apply --engine ray``: on one small local Ray (2 CPUs) for the module, the outputs and the manifest
are byte for byte the single-process run's: with 1 actor, and resuming a cut-short run on 2 actors, one of
them killed mid-chunk and retried (nothing lost or doubled). Without Ray, one line says how to get it.
Two Ray runs in all: each starts its actors afresh (a process, torch and the model: seconds on 2 cores)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from conceal.apply import MANIFEST, ApplyOptions
from conceal.cli import main

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="the Ray engine needs the ray extra: pip install 'conceal[ray]'")
N_PHOTOS = 40  # a few dozen, in two folders, plus a file that is no image and one that is a broken JPEG
BATCH = 8  # photos per model call (run_apply's batch): 6 chunks, so both actors work
MASKER = ApplyOptions(detect=False, save_mask=True)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (2 CPUs, no dashboard), started as the engine starts one; shut down after."""
    from conceal.ray_apply import start_ray

    ray, started = start_ray(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from PIL import Image

    from conceal.data.synthetic import SyntheticFaces

    root = tmp_path_factory.mktemp("ray_photos")
    for i, face in enumerate(SyntheticFaces(n=N_PHOTOS, seed=5, size=40).arrays().images):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(exist_ok=True)
        Image.fromarray(face).save(folder / f"p{i:03d}.jpg", quality=90)
    (root / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def masker_reference(tiny_models, photos, tmp_path_factory) -> Path:
    """The single-process run of the masker (masks too), as cmd_apply loads the model, ``BATCH`` per call."""
    from conceal.apply import run_apply
    from conceal.methods import load_api

    folder = tmp_path_factory.mktemp("single_masker")
    run_apply(load_api(tiny_models["masker"], fold_batch_norm=True, backend="auto"), [photos], folder, MASKER, batch=BATCH)
    return folder


@needs_ray
def test_the_cli_on_one_actor_writes_the_single_process_bytes(local_ray, tiny_models, photos, tmp_path, capsys):
    args = ["apply", str(tiny_models["anonymizer"]), str(photos), "--no-detect", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "local")]) == 0
    local = capsys.readouterr().out
    assert main([*args, "-o", str(tmp_path / "ray"), "--engine", "ray", "--actors", "1"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out == local.replace(str(tmp_path / "local"), str(tmp_path / "ray"))
    assert local.startswith(f"wrote {N_PHOTOS} images") and "2 skipped" in local
    got = tree(tmp_path / "ray")
    assert len(got) == N_PHOTOS + 1 and got == tree(tmp_path / "local")  # the images and the manifest


@needs_ray
def test_a_resumed_run_with_an_actor_killed_mid_chunk_loses_and_doubles_nothing(local_ray, tiny_models, photos, masker_reference, tmp_path):
    """A single-process run cut short, resumed on 2 actors, one of which dies on its first chunk of b/."""
    from conceal.ray_apply import ConcealChunks, run_apply_ray

    out, marker = tmp_path / "out", tmp_path / "died"
    shutil.copytree(masker_reference, out)
    lines = (out / MANIFEST).read_text().splitlines(keepends=True)
    for line in lines[15:]:  # as if the run died after 15 lines: later outputs gone ...
        for name in filter(None, [json.loads(line)["output"]]):
            (out / name).unlink()
            (out / name.replace(".png", "_mask.png")).unlink()
    (out / "b" / "p020.png").write_bytes(b"half-written by the dead run")  # ... but one, unlisted, left behind
    (out / MANIFEST).write_text("".join(lines[:15]) + lines[15][:10])  # and a torn last line

    class DiesOnce(ConcealChunks):  # defined here, so Ray ships it by value to its workers
        def __call__(self, batch):
            if any("/b/" in chunk for chunk in batch["chunk"]) and not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)  # the worker process dies mid-chunk, as a killed or crashed one would
            return super().__call__(batch)

    summary = run_apply_ray(tiny_models["masker"], [photos], out, MASKER, resume=True, actors=2, batch=BATCH, actor_class=DiesOnce)
    assert marker.is_file()  # it did die
    assert summary.resumed == 15 - 1  # (notes.txt is no image file)
    assert summary.written == sum(bool(json.loads(line)["output"]) for line in lines[15:])
    got = tree(out)
    manifest = got[MANIFEST].decode().splitlines()
    assert len(manifest) == len(set(manifest)) == N_PHOTOS + 2  # every input once, broken.jpg and notes.txt included
    assert len(got) == 2 * N_PHOTOS + 1 and got == tree(masker_reference)  # images, masks and the manifest


def test_without_ray_one_line_says_how_to_get_it(monkeypatch, tiny_models, photos, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    code = main(["apply", str(tiny_models["masker"]), str(photos), "-o", str(tmp_path / "out"), "--no-detect", "--engine", "ray"])
    assert code == 2
    assert capsys.readouterr().err == "conceal: error: --engine ray needs the ray extra: pip install 'conceal[ray]'\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", [["--actors", "2"], ["--address", "auto"]])
def test_ray_flags_without_the_ray_engine_are_refused(flag, tiny_models, photos, tmp_path, capsys):
    assert main(["apply", str(tiny_models["masker"]), str(photos), "-o", str(tmp_path / "out"), "--no-detect", *flag]) == 2
    assert capsys.readouterr().err == f"conceal: error: {flag[0]} is for --engine ray\n"


HEAD = """
import sys, ray
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes stdin
ray.shutdown()
"""


@pytest.mark.slow
@needs_ray
def test_address_joins_a_running_cluster_and_writes_the_single_process_bytes(tiny_models, photos, tmp_path):
    """`--address HOST:PORT` joins a Ray that another process started (a head of 1 CPU, its own processes
    ended by that process's ray.shutdown, nobody else's), in a fresh `conceal` process, as a user runs it."""
    import subprocess

    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen([sys.executable, "-c", HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        address = head.stdout.readline().strip()
        assert ":" in address, "the head did not start"
        args = ["apply", str(tiny_models["anonymizer"]), str(photos), "--no-detect", "--quiet"]
        assert main([*args, "-o", str(tmp_path / "local")]) == 0
        joined = subprocess.run([sys.executable, "-m", "conceal", *args, "-o", str(tmp_path / "ray"), "--engine", "ray",
                                 "--address", address], capture_output=True, text=True, env=env, timeout=120)
        assert joined.returncode == 0, joined.stderr[-2000:]
        assert joined.stdout.startswith(f"wrote {N_PHOTOS} images")
        assert tree(tmp_path / "ray") == tree(tmp_path / "local")  # the images and the manifest
    finally:
        head.stdin.close()
        head.wait(timeout=60)
