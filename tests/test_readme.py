"""The README cannot drift: every command in it parses with today's CLI, and every one that needs nothing
outside the repository runs (on its smallest inputs), each in a fresh folder as a newcomer would."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conceal.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# Appended to a command to run it on the smallest inputs (argparse: the last value of a flag wins).
SMALLEST = {
    ("data", "synthetic"): ["--n", "60"],
    ("train", "synthetic"): ["--set", "data.synthetic_n=60", "--size", "16", "--epochs", "1", "--batch-size", "16",
                             "--latent", "4", "--set", "model.width=4", "--set", "train.threads=1", "--no-progress"],
}


def blocks(language: str) -> list[tuple[int, str]]:
    """(first line number, text) of every fenced ``language`` block of the README."""
    found = []
    for match in re.finditer(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.S | re.M):
        found.append((README.read_text()[: match.start()].count("\n") + 2, match.group(1)))
    return found


def commands() -> list[tuple[int, list[str]]]:
    """(line number, argv) of every command line in the README's bash blocks (continuations joined, comments dropped)."""
    out = []
    for first, text in blocks("bash"):
        lines = text.replace("\\\n", " ").split("\n")
        for offset, line in enumerate(lines):
            argv = shlex.split(line, comments=True)
            if argv:
                out.append((first + offset, argv))
    return out


COMMANDS = [pytest.param(argv, id=f"line {n}: {' '.join(argv)[:60]}") for n, argv in commands()]


def test_the_readme_has_commands():
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("argv", COMMANDS)
def test_every_readme_command_is_valid(argv):
    if argv[0] == "conceal":
        build_parser().parse_args(argv[1:])  # a flag the CLI no longer has fails here (SystemExit)
    elif argv[:2] == ["python", "-c"]:
        compile(argv[2], "README", "exec")
    elif argv[0] == "python":
        assert argv[1] == "-c" or (REPO / argv[1]).is_file(), f"{argv[1]} does not exist"
    elif argv[:3] == [".venv/bin/pip", "install", "-e"]:
        extras = re.fullmatch(r"\.\[(.+)\]", argv[3]).group(1).split(",")
        pyproject = (REPO / "pyproject.toml").read_text()
        assert all(re.search(rf"^{e} = ", pyproject, flags=re.M) for e in extras), f"an extra of {argv[3]} is not in pyproject.toml"
    elif argv[0] == "curl":
        pass  # the serve section's: tests/test_service_page.py runs its curl lines against a live `conceal serve`
    elif argv[0] == "torchrun":  # torchrun [its flags] -m conceal ARGS: the ARGS must parse
        module = argv.index("-m")
        assert argv[module + 1] == "conceal"
        build_parser().parse_args(argv[module + 2 :])
    elif argv[0] == "make":
        assert re.search(rf"^{argv[1]}:", (REPO / "Makefile").read_text(), flags=re.M), f"no make target {argv[1]}"
    elif argv[:2] == [".", ".venv/bin/activate"]:
        assert "venv" in (REPO / "Makefile").read_text()  # the Makefile makes .venv
    else:
        pytest.fail(f"a command the test does not know: {argv}")


def runnable(argv: list[str]) -> list[str] | None:
    """The argv to run for a README command that needs nothing outside the repository, else None."""
    if argv[0] != "conceal":
        return None
    command = argv[1]
    if "--engine" in argv and argv[argv.index("--engine") + 1] == "ray":
        return None  # parsed above; tests/test_ray_apply.py runs the engine through the CLI (a Ray start costs tens of seconds)
    if command in ("apply", "encode", "export") and argv[2].startswith("models/"):
        return argv[1:]
    dataset = argv[argv.index("--dataset") + 1] if "--dataset" in argv else None
    if command == "data" and dataset in ("synthetic", "folder"):
        return argv[1:] + SMALLEST.get(("data", dataset), [])
    if command == "train" and dataset == "synthetic" and "--config" not in argv:
        return argv[1:] + SMALLEST[("train", "synthetic")]
    return None


def sandbox(tmp_path: Path) -> Path:
    """A newcomer's working folder: the repository's models/ and configs/, a photos/ folder, my_faces/ with labels."""
    from PIL import Image

    for name in ("models", "configs"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "photos").mkdir()
    (tmp_path / "my_faces").mkdir()
    rows = ["path,smiling"]
    for i in range(3):
        face = Image.new("RGB", (90, 80), (60 + 40 * i, 90, 120))
        face.save(tmp_path / "photos" / f"face{i}.jpg")
        face.save(tmp_path / "my_faces" / f"{i}.jpg")
        rows.append(f"{i}.jpg,{i % 2}")
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "photos" / "astronaut.jpg")  # a real photo with a face to find
    (tmp_path / "my_faces" / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


RUNNABLE = [pytest.param(runnable(argv), id=" ".join(argv)[:70]) for _, argv in commands() if runnable(argv)]


@pytest.mark.slow
@pytest.mark.parametrize("argv", RUNNABLE)
def test_readme_commands_run(argv, tmp_path, monkeypatch, capsys):
    if argv[0] == "export":
        pytest.importorskip("onnx")
    monkeypatch.chdir(sandbox(tmp_path))
    assert main(argv) == 0, capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("first, text", blocks("python"), ids=lambda v: f"line {v}" if isinstance(v, int) else "")
def test_the_python_examples_run(first, text):
    prelude = "import numpy as np\nimages = np.zeros((2, 64, 64, 3), np.uint8)\n"
    done = subprocess.run([sys.executable, "-c", prelude + text], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
