"""A CLI that explains itself: every argument of every subcommand has help and shows its default, and
parsing (``--help``, argument errors) imports no torch."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from conceal.cli import DefaultsFormatter, build_parser
from conceal.methods import method_names


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


@pytest.mark.parametrize("name", method_names())
def test_each_method_offers_its_own_train_options_with_their_defaults(name):
    """`conceal train METHOD` gains the options the method declares (Method.cli_options), each saying its default."""
    from conceal.cli import add_method_options
    from conceal.methods import method_class

    cls = method_class(name)
    train = next(p for c, p in subparsers(build_parser()) if c == f"conceal train {name}")
    add_method_options(train, name)
    helps = {a.dest: a.help for a in train._actions}
    for field in cls.cli_options:
        assert f"else {getattr(cls.Config(), field)})" in helps[field], field
    assert cls.cli_options, "a method with no train options of its own"


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["apply", "--crop", "2"], ["train", "nomethod", "-o", "x"]])
def test_parsing_imports_no_torch(argv):
    """`conceal --help` and argument errors return before torch is imported (torch alone takes ~2 s)."""
    code = ("import sys\nfrom conceal.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert "torch was imported" not in done.stderr
    assert done.returncode == (0 if "--help" in argv else 2), done.stderr
