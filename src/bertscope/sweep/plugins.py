"""The commands a sweep can run: the analyses of :mod:`bertscope.sweep.commands` plus those spec plugins declare.

A plugin is a module (a dotted name or a ``.py`` file) with a module-level ``BERTSCOPE_COMMANDS`` list of
:class:`~bertscope.core.registry.CommandInfo`. Importing it registers nothing: :func:`load_plugins` reads the list, and
:func:`commands` is the registry the spec expander, the workers and the report read. A plugin's module is imported
once per process, so the driver and every worker (which load the spec's plugins before running) agree.

Importing a plugin runs its code, so it happens only when asked (``sweep --allow-plugins``), never on a dry run, and
only from where :func:`check_plugin_sources` permits: ``.py`` files in the spec's folder or below by default
(``--plugins-from DIR``: in DIR or below instead); module names are found on the Python path, which no folder rule
bounds, so they need ``--plugins-from any``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from bertscope.core.errors import BertscopeError
from bertscope.core.registry import CommandInfo, Registry
from bertscope.sweep.commands import ANALYSES

__all__ = ["PLUGIN_SOURCES", "check_plugin_sources", "commands", "load_plugins"]

#: The named values of ``--plugins-from`` (any other value is a folder).
PLUGIN_SOURCES = ("spec", "any")

#: Commands declared by the plugins this process has loaded.
_PLUGIN_COMMANDS: dict[str, CommandInfo] = {}


def load_plugins(plugins: Sequence[str], base_dir: str | Path | None = None) -> list[CommandInfo]:
    """Import plugin modules (dotted names or ``.py`` files, relative to ``base_dir``) and return the commands they
    declare in a module-level ``BERTSCOPE_COMMANDS`` list of :class:`~bertscope.core.registry.CommandInfo`."""
    found: list[CommandInfo] = []
    for entry in plugins:
        module = _import_file(entry, base_dir) if entry.endswith(".py") else _import_module(entry)
        declared = getattr(module, "BERTSCOPE_COMMANDS", None)
        if not isinstance(declared, (list, tuple)) or not all(isinstance(c, CommandInfo) for c in declared):
            raise BertscopeError(f"plugin {entry}: declares no BERTSCOPE_COMMANDS list of CommandInfo")
        found.extend(declared)
        _PLUGIN_COMMANDS.update({c.name: c for c in declared})
    return found


def check_plugin_sources(plugins: Sequence[str], *, spec_dir: str | Path, source: str = "spec") -> None:
    """Refuse (one line) a plugin entry that does not come from where ``source`` permits; imports nothing.

    ``source`` is ``spec`` (``.py`` files in ``spec_dir`` or below), ``any`` (files anywhere, module names) or a
    folder (``.py`` files in it or below). Paths are compared after resolving symlinks and ``..``.
    """
    if source == "any":
        return
    root = Path(spec_dir if source == "spec" else source).expanduser().resolve()
    where = "the spec's folder" if source == "spec" else "the --plugins-from folder"
    for entry in plugins:
        if not entry.endswith(".py"):
            raise BertscopeError(f"plugin module {entry!r} comes from the Python path, not a folder: importing it "
                                 "needs --allow-plugins --plugins-from any")
        path = (Path(spec_dir) / entry).resolve()  # an absolute entry stays itself
        if not path.is_relative_to(root):
            raise BertscopeError(f"plugin {path} is outside {where} {root}: move it there or pass "
                                 "--plugins-from DIR (or any) with --allow-plugins")


def commands() -> Registry:
    """The commands a sweep can run in this process: the analyses plus the loaded plugins' commands."""
    return ANALYSES.with_commands(c for n, c in _PLUGIN_COMMANDS.items() if n not in ANALYSES)


def _import_file(entry: str, base_dir: str | Path | None) -> object:
    path = Path(entry)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    path = path.resolve()
    name = f"bertscope_plugin_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    module = sys.modules.get(name)
    if module is not None:
        return module
    if not path.is_file():
        raise BertscopeError(f"plugin file not found: {path}")
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise BertscopeError(f"plugin {path} failed to import: {type(exc).__name__}: {exc}") from None
    return module


def _import_module(entry: str) -> object:
    try:
        return importlib.import_module(entry)
    except ImportError as exc:
        raise BertscopeError(f"plugin module {entry!r} cannot be imported: {exc}") from None
