"""Reliability through the CLI: every bad setting ends in one line (exit 2), nothing is overwritten without
asking, the same seed gives the same weights, and resuming never traps the user."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from conceal.cli import main

# The smallest concealer the CLI trains: 60 synthetic faces at 16 px, one epoch of a few batches.
TINY = ["concealer", "--dataset", "synthetic", "--set", "data.synthetic_n=60", "--size", "16", "--epochs", "1",
        "--batch-size", "16", "--latent", "4", "--set", "model.width=4", "--set", "train.threads=1", "--no-progress"]


def one_line_error(capsys, rc: int) -> str:
    """The single stderr line of a failed command (asserting exit 2, one line, no traceback)."""
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("conceal: error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("setting, message", [
    (["--epochs", "0"], "train.epochs must be at least 1, not 0"),
    (["--epochs", "-1"], "train.epochs must be at least 1"),
    (["--batch-size", "0"], "train.batch_size must be at least 1"),
    (["--batch-size", "-1"], "train.batch_size must be at least 1"),
    (["--lr", "-0.1"], "train.lr must be above 0"),
    (["--lr", "nan"], "train.lr must be a finite number"),
    (["--latent", "-5"], "model.latent must be at least 1"),
    (["--latent", "0"], "model.latent must be at least 1"),
    (["--size", "0"], "data.size must be at least 8"),
    (["--seed", "-3"], "train.seed must be at least 0"),
    (["--max-minutes", "0"], "train.max_minutes must be above 0"),
    (["--set", "model.kl_weight=inf"], "model.kl_weight must be a finite number, not inf"),
    (["--set", "model.kl_weight=nan"], "model.kl_weight must be a finite number"),
    (["--set", "model.attr_dropout=5"], "model.attr_dropout must be at least 0 and at most 1, not 5"),
    (["--set", "data.crop=0"], "data.crop must be above 0 and at most 1"),
    (["--set", "data.crop=2"], "data.crop must be above 0 and at most 1"),
    (["--set", "train.epochs=2.5"], "train.epochs must be an integer"),
    (["--set", "train.epochs=true"], "train.epochs must be an integer"),
    (["--set", "train.device=tpu"], "train.device must be one of auto, cpu, cuda"),
    (["--set", "data.dataset=imagenet"], "data.dataset must be one of"),
    (["--set", "train.threads=0"], "train.threads must be at least 1"),
    (["--set", "train.faces_per_identity=1"], "train.faces_per_identity"),
])
def test_every_bad_training_setting_is_one_line_before_any_work(tmp_path, capsys, setting, message):
    run = tmp_path / "run"
    rc = main(["train", "concealer", *setting, "-o", str(run), "--no-progress"])
    assert message in one_line_error(capsys, rc)
    assert not run.exists()  # refused at config time, before anything is written


@pytest.mark.parametrize("method, setting, message", [
    ("masker", "model.keep=0", "model.keep must be above 0 and at most 1"),
    ("masker", "model.keep=1.5", "model.keep must be above 0"),
    ("masker", "model.variant=sideways", "model.variant must be one of adversarial, non_adversarial"),
    ("masker", "model.predictor_steps=0", "model.predictor_steps must be at least 1"),
    ("anonymizer", "model.margin=-1", "model.margin must be above 0"),
    ("anonymizer", "model.encoder_widths=[8, 0]", "model.encoder_widths must be at least 1, not 0"),
    ("anonymizer", "model.alpha=-inf", "model.alpha must be a finite number"),
])
def test_method_settings_are_checked_too(tmp_path, capsys, method, setting, message):
    rc = main(["train", method, "--set", setting, "-o", str(tmp_path / "run")])
    assert message in one_line_error(capsys, rc)


def test_every_numeric_setting_has_limits():
    """A new number in any config must say what it accepts (``config.setting``), or it is checked by nobody."""
    import dataclasses
    import typing

    from conceal.config import DataConfig, TrainConfig
    from conceal.methods import METHODS

    unchecked = []
    for cls in (DataConfig, TrainConfig, *(m.Config for m in METHODS.values())):
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            numeric = any(t in (int, float) for t in (tp, *typing.get_args(tp))) or "tuple[int" in str(tp)
            if numeric and not f.metadata:
                unchecked.append(f"{cls.__name__}.{f.name}")
    assert not unchecked


@pytest.mark.parametrize("content, message", [
    (b"[train]\nepochs = 2\nname = '\xff\xfe'\n", "is not UTF-8 text"),
    (b"[train\n", "config file"),
])
def test_a_bad_config_file_is_one_line(tmp_path, capsys, content, message):
    config = tmp_path / "c.toml"
    config.write_bytes(content)
    rc = main(["train", "concealer", "--config", str(config), "-o", str(tmp_path / "run")])
    assert message in one_line_error(capsys, rc)


def test_a_folder_as_config_is_one_line(tmp_path, capsys):
    rc = main(["train", "concealer", "--config", str(tmp_path), "-o", str(tmp_path / "run")])
    assert "is a folder" in one_line_error(capsys, rc)


def test_batch_larger_than_the_dataset_is_one_line(tmp_path, capsys):
    rc = main(["train", *TINY, "--batch-size", "1000", "-o", str(tmp_path / "run")])
    assert "train.batch_size 1000 is more than the" in one_line_error(capsys, rc)


def test_an_image_size_the_network_cannot_take_is_one_line(tmp_path, capsys):
    rc = main(["train", *TINY, "--size", "24", "-o", str(tmp_path / "run")])
    assert "multiple of 16" in one_line_error(capsys, rc)


def test_cuda_without_cuda_is_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = main(["train", *TINY, "--device", "cuda", "-o", str(tmp_path / "run")])
    assert "sees no CUDA device" in one_line_error(capsys, rc)


# --- training runs: nothing overwritten, repeatable, resumable without traps --------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reliab") / "run"
    assert main(["train", *TINY, "--seed", "5", "-o", str(run)]) == 0
    return run


def weights(run: Path) -> dict[str, np.ndarray]:
    return load_file(run / "checkpoint" / "model.safetensors")


@pytest.mark.slow
def test_the_same_seed_gives_bit_identical_weights_and_another_seed_does_not(tiny_run, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    assert main(["train", *TINY, "--seed", "5", "-o", str(again)]) == 0
    assert main(["train", *TINY, "--seed", "6", "-o", str(other)]) == 0
    a, b, c = weights(tiny_run), weights(again), weights(other)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_training_into_an_existing_run_is_refused_without_resume_or_force(tiny_run, capsys):
    before = weights(tiny_run)
    rc = main(["train", *TINY, "-o", str(tiny_run)])
    err = one_line_error(capsys, rc)
    assert "already holds a run" in err and "--resume" in err and "--force" in err
    after = weights(tiny_run)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_force_replaces_only_the_run_files(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    (run / "notes.txt").write_text("mine")
    assert main(["train", *TINY, "--seed", "6", "--force", "-o", str(run)]) == 0
    assert (run / "notes.txt").read_text() == "mine"
    assert any(not np.array_equal(weights(run)[k], weights(tiny_run)[k]) for k in weights(run))


def test_resume_needs_a_checkpoint(tmp_path, capsys):
    rc = main(["train", *TINY, "--resume", "-o", str(tmp_path / "empty")])
    assert "no model found" in one_line_error(capsys, rc)


def test_resuming_a_finished_run_says_so_and_how_to_go_on(tiny_run, capsys):
    capsys.readouterr()
    assert main(["train", "concealer", "--resume", "--no-progress", "-o", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    assert "has finished" in out and "--resume --epochs 2" in out


def test_max_minutes_belongs_to_one_invocation(tmp_path, capsys):
    """A time limit is not saved with the run: a plain --resume trains to the end."""
    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--max-minutes", "0.0000001", "-o", str(run)]) == 0
    out = capsys.readouterr().out
    assert "stopped (max_minutes) at epoch 1/2, batch 1/3" in out
    assert "max_minutes" not in (run / "config.toml").read_text()
    assert "loss_curves.png" not in out.splitlines()[-1]  # no epoch finished: no curves, and the summary says none
    assert main(["train", "concealer", "--resume", "--no-progress", "-o", str(run)]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "at epoch 1/2, batch 1/3" in out  # counted as the stop line counts
    assert "epoch 2/2" in out and "stopped" not in out
    assert json.loads((run / "checkpoint" / "model.json").read_text())["epoch"] == 2


# --- outputs of encode and export -----------------------------------------------------------------------


def test_encode_refuses_an_existing_output_and_stores_no_absolute_path(tiny_run, tmp_path, capsys):
    from PIL import Image

    photos = tmp_path / "photos"
    (photos / "a").mkdir(parents=True)
    Image.new("RGB", (20, 20), (120, 90, 60)).save(photos / "a" / "0.jpg")
    out = tmp_path / "codes.npz"
    out.write_bytes(b"keep me")
    rc = main(["encode", str(tiny_run), str(photos), "-o", str(out), "--no-detect"])
    assert "--overwrite" in one_line_error(capsys, rc) and out.read_bytes() == b"keep me"
    assert main(["encode", str(tiny_run), str(photos), "-o", str(out), "--overwrite", "--no-detect"]) == 0
    assert list(np.load(out)["paths"]) == ["photos/a/0.jpg"]  # the input folder's own name, not /tmp/...
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_export_refuses_an_existing_output_and_a_folder(tiny_run, tmp_path, capsys):
    pytest.importorskip("onnx")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    rc = main(["export", str(tiny_run), "-o", str(out), "--no-check"])
    assert "--overwrite" in one_line_error(capsys, rc) and out.read_bytes() == b"keep me"
    rc = main(["export", str(tiny_run), "-o", str(tmp_path), "--no-check"])
    assert "is a folder" in one_line_error(capsys, rc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp file left behind


# --- the top-level handler ------------------------------------------------------------------------------


def test_os_errors_are_one_line(tiny_run, tmp_path, capsys):
    long_name = tmp_path / ("x" * 300 + ".npz")
    rc = main(["encode", str(tiny_run), str(tiny_run / "loss_curves.png"), "-o", str(long_name), "--no-detect"])
    assert "file name too long" in one_line_error(capsys, rc)


def test_a_closed_pipe_is_one_line():
    """`conceal data info --json | head -c 10`: the reader goes away; no BrokenPipeError traceback."""
    code = "import sys; from conceal.cli import main; sys.exit(main(['data', 'info', '--dataset', 'synthetic', '--n', '50', '--json']))"
    producer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    producer.stdout.close()  # nobody reads: the first write fails
    err = producer.stderr.read().decode()
    assert producer.wait() == 2
    assert err.strip() == "conceal: error: output closed early (broken pipe)", err


def test_argument_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["apply", "m", "x", "-o", "y", "--crop", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("conceal: error: argument --crop") and "--help" in err


# --- folder + CSV datasets ------------------------------------------------------------------------------


def folder_dataset(root: Path, csv: str | bytes, images=("imgs/0.jpg", "imgs/1.jpg", "imgs/2.jpg", "imgs/3.jpg")) -> Path:
    from PIL import Image

    for i, name in enumerate(images):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (40 * i, 80, 120)).save(root / name)
    (root / "labels.csv").write_bytes(csv if isinstance(csv, bytes) else csv.encode())
    return root


def test_folder_paths_are_normalised_so_aliases_are_one_image(tmp_path):
    from conceal.data.folder import FolderCSV

    root = folder_dataset(tmp_path, "path,smile\n./imgs/0.jpg,1\nimgs//0.jpg,0\nimgs/./0.jpg,1\nimgs/1.jpg,0\n")
    ds = FolderCSV(root)
    assert [r.path for r in ds.records] == [root / "imgs/0.jpg", root / "imgs/1.jpg"]
    assert sorted(ds.skipped.values()) == ["listed twice in the CSV"] * 2


def test_folder_never_follows_a_link_out_of_the_root(tmp_path):
    from conceal.data.folder import FolderCSV

    outside = folder_dataset(tmp_path / "outside", "path\n", images=("secret.jpg",))
    root = folder_dataset(tmp_path / "root", "path,smile\nimgs/0.jpg,1\nleak.jpg,0\nimgs/alias.jpg,1\nimgs/1.jpg,0\n")
    (root / "leak.jpg").symlink_to(outside / "secret.jpg")
    (root / "imgs" / "alias.jpg").symlink_to(root / "imgs" / "0.jpg")  # inside the root, but the same image
    ds = FolderCSV(root)
    assert [r.path.name for r in ds.records] == ["0.jpg", "1.jpg"]
    assert ds.skipped[str(root / "leak.jpg")] == "a link to a file outside the root"
    assert "listed twice in the CSV" in ds.skipped.values()


def test_inferred_label_kinds_are_said(tmp_path, capsys):
    root = folder_dataset(tmp_path, "path,gender,mood\nimgs/0.jpg,-1\nimgs/1.jpg,2,happy\nimgs/2.jpg,0,sad\nimgs/3.jpg,1,sad\n")
    assert main(["data", "info", "--dataset", "folder", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "gender continuous -1..2" in out and "mood categorical (2 classes: happy, sad)" in out
    assert main(["data", "info", "--dataset", "folder", "--root", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inferred_kinds"]["gender"] == "continuous -1..2"


def test_a_csv_that_is_not_utf8_is_one_line(tmp_path, capsys):
    root = folder_dataset(tmp_path, b"path,name\nimgs/0.jpg,Ren\xe9\n")
    rc = main(["data", "info", "--dataset", "folder", "--root", str(root)])
    assert "labels.csv is not UTF-8 text" in one_line_error(capsys, rc)


def test_a_one_epoch_run_draws_its_loss_as_a_line(tiny_run):
    """A short run's curve has a point per stretch of batches, and their weighted mean is the epoch's mean."""
    from conceal.train.loop import train_curve

    state = json.loads((tiny_run / "checkpoint" / "train_state.json").read_text())["loop"]
    xs, ys = train_curve(state["curve"])
    n_batches = state["curve"][-1]["of"]
    assert len(xs) == n_batches >= 2 and xs[-1] == 1.0  # 3 batches: a point each
    assert np.mean(ys["loss"]) == pytest.approx(state["history"][0]["train"]["loss"])
    assert (tiny_run / "loss_curves.png").stat().st_size > 0


@pytest.mark.slow
def test_checkpoints_survive_two_crashes_in_a_row(tiny_run, tmp_path, monkeypatch, capsys):
    """Crash 1 between the two renames of a save, crash 2 just before them; the run still resumes, and ends
    bit-identical to one never interrupted."""
    import errno
    import shutil

    import conceal.train.checkpoint as checkpoint

    whole = tmp_path / "whole"
    assert main(["train", *TINY, "--seed", "5", "--epochs", "3", "-o", str(whole)]) == 0
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # epoch 1 of the same config and seed

    rename = Path.rename

    def crash_before_the_new_checkpoint_is_in_place(self, target):
        if self.name == ".checkpoint.tmp" and Path(target).name == "checkpoint" and (self.parent / ".checkpoint.old").exists() \
                and not (self.parent / "checkpoint").exists() and json.loads((self / "model.json").read_text())["epoch"] == 2:
            raise OSError(errno.EIO, "simulated crash")
        return rename(self, target)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "rename", crash_before_the_new_checkpoint_is_in_place)
        assert main(["train", "concealer", "--resume", "--epochs", "2", "--no-progress", "-o", str(run)]) == 2
    assert not (run / "checkpoint").exists() and checkpoint.model_dir(run) == run / ".checkpoint.tmp"  # epoch 2, complete

    fsync = checkpoint._fsync

    def crash_after_writing(path):
        if path.name == ".checkpoint.tmp":
            raise OSError(errno.EIO, "simulated crash")
        fsync(path)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "_fsync", crash_after_writing)
        assert main(["train", "concealer", "--resume", "--epochs", "3", "--no-progress", "-o", str(run)]) == 2
    assert checkpoint.model_dir(run) == run / "checkpoint"
    assert json.loads((run / "checkpoint" / "model.json").read_text())["epoch"] == 2

    capsys.readouterr()
    assert main(["train", "concealer", "--resume", "--epochs", "3", "--no-progress", "-o", str(run)]) == 0
    assert "at epoch 3/3, batch 0/3" in capsys.readouterr().out
    assert sorted(p.name for p in run.iterdir() if "checkpoint" in p.name) == ["checkpoint"]
    a, b = weights(whole), weights(run)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_checkpoint_being_written_is_not_loaded(tiny_run, tmp_path):
    import shutil

    from conceal.train.checkpoint import model_dir

    run = tmp_path / "run"
    shutil.copytree(tiny_run / "checkpoint", run / ".checkpoint.old")
    shutil.copytree(tiny_run / "checkpoint", run / ".checkpoint.tmp")
    (run / ".checkpoint.tmp" / "train_state.json").unlink()  # the run died while writing it
    assert model_dir(run) == run / ".checkpoint.old"


def test_a_full_disk_is_one_line_and_leaves_no_temp_file(tiny_run, tmp_path, monkeypatch, capsys):
    import errno

    def full(path, **arrays):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(np, "savez", full)
    rc = main(["encode", str(tiny_run), str(tiny_run / "loss_curves.png"), "-o", str(tmp_path / "codes.npz"), "--no-detect"])
    assert "no space left on device" in one_line_error(capsys, rc)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_leaves_no_temp_file(tiny_models, tmp_path, monkeypatch, capsys):
    onnx = pytest.importorskip("onnx")

    def full(proto, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(onnx, "save", full)
    rc = main(["export", str(tiny_models["masker"]), "-o", str(tmp_path / "m.onnx"), "--no-check"])
    assert "no space left on device" in one_line_error(capsys, rc)
    assert list(tmp_path.iterdir()) == []
