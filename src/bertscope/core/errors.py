"""User-facing errors.

Everything a user can cause (a bad flag, a wrong layer index, a missing file, an unsupported model) is raised as a
:class:`BertscopeError`; the CLI prints its message on one line and exits non-zero. Anything else is a bug.
"""

from __future__ import annotations

__all__ = ["BertscopeError", "DataError", "HubUnreachableError", "Terminated", "UnsupportedModelError"]


class BertscopeError(Exception):
    """An error the user can fix; its message is one line that says what is wrong and how to fix it."""


class UnsupportedModelError(BertscopeError):
    """The checkpoint's model type is not one of the families bertscope knows."""


class HubUnreachableError(BertscopeError):
    """A hub id was given but the Hugging Face hub cannot be reached and no cached copy exists."""


class DataError(BertscopeError):
    """Input data is missing or malformed (the message names the file and line)."""


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM (what SLURM and Kubernetes send before killing a job). A ``KeyboardInterrupt``, so
    every path that cleans up after Ctrl-C (``status.json`` "interrupted", finished study runs kept) runs as is;
    the CLI exits 143 for it (128 + SIGTERM) where Ctrl-C exits 130."""
