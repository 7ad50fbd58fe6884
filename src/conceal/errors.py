"""Errors a user can cause in the modules that import torch, defined here so the CLI can catch them
without importing torch (``conceal --help`` and argument errors stay fast).

Each ends in one line ``conceal: error: ...`` and exit status 2; the other user errors live beside
their code (``ConfigError`` in config, ``DataError``/``LabelError``/``ImageReadError`` in data).
"""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A missing, unreadable or tampered model folder or checkpoint; one-line message for the user."""


class ExportError(RuntimeError):
    """Export is not possible (missing optional package, unknown method, output in the way); one line."""
