"""A CLI that explains itself: every argument of every subcommand has help and shows its default, and
parsing (``--help``, argument errors) imports no torch."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from conceal.cli import DefaultsFormatter, build_parser


def subparsers(parser: argparse.ArgumentParser, prefix: str = "conceal"):
    """(command line, parser) of every (sub)command, depth first."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subparsers(sub, f"{prefix} {name}")


ACTIONS = [
    pytest.param(parser, action, id=f"{command} {'/'.join(action.option_strings) or action.dest}")
    for command, parser in subparsers(build_parser())
    for action in parser._actions
    if not isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction))
]


@pytest.mark.parametrize("parser, action", ACTIONS)
def test_every_argument_has_help_and_shows_its_default(parser, action):
    assert action.help and action.help.strip(), "no help text"
    takes_value = action.nargs != 0
    if takes_value and action.option_strings and not action.required:
        shown = DefaultsFormatter(parser.prog)._get_help_string(action) % {"default": action.default}
        assert "default" in shown, f"help does not say the default: {shown!r}"


def test_the_train_flags_state_the_method_defaults_they_override():
    """--latent/--alpha/--beta/--keep name the defaults of their method's Config; keep them in step."""
    from conceal.cli import TRAIN_FLAGS
    from conceal.methods.anonymizer import AnonymizerConfig
    from conceal.methods.concealer import ConcealerConfig
    from conceal.methods.masker import MaskerConfig

    train = next(p for c, p in subparsers(build_parser()) if c == "conceal train")
    helps = {a.dest: a.help for a in train._actions}
    for flag, cls in (("latent", ConcealerConfig), ("alpha", AnonymizerConfig), ("beta", AnonymizerConfig), ("keep", MaskerConfig)):
        key = TRAIN_FLAGS[flag].split(".")[1]
        assert f"default {getattr(cls, key)}" in helps[flag], flag


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["apply", "--crop", "2"], ["train", "nomethod", "-o", "x"]])
def test_parsing_imports_no_torch(argv):
    """`conceal --help` and argument errors return before torch is imported (torch alone takes ~2 s)."""
    code = ("import sys\nfrom conceal.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert "torch was imported" not in done.stderr
    assert done.returncode == (0 if "--help" in argv else 2), done.stderr
