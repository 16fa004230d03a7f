"""YAML files that cannot explode: pyyaml's safe loader with bounds on size, nesting and alias expansion.

Why: ``yaml.safe_load`` refuses code but not size. An alias (``*name``) is a reference, so a "billion laughs" file
of a few hundred bytes loads in microseconds as a small graph of shared lists, then expands to 10^9 values the
first time anything walks it (canonical JSON of a run, the spec copy a store keeps): gigabytes, no output. Here the
document's node graph is measured *as if every alias were expanded* before a single Python object is built, and a
document past :data:`MAX_VALUES` values, :data:`MAX_DEPTH` levels or :data:`MAX_BYTES` bytes is refused in one line.
An alias that contains itself (``&a [*a]``) is refused too: nothing downstream could walk it.

The bounds are far above any real spec or config (a 100,000-value grid axis fits) and far below what would exhaust
memory. Every failure, unreadable file, non-UTF-8 bytes, a syntax error, a bound, is one :class:`BertscopeError`
line naming the file (and the line, for a syntax error).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from bertscope.core.errors import BertscopeError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_VALUES", "load_yaml_file", "load_yaml_text"]

#: the largest file read (8 MiB): a spec or config is a few kilobytes
MAX_BYTES = 8 * 1024 * 1024
#: the most values (scalars, lists and mappings, counted with every alias expanded) a document may hold
MAX_VALUES = 1_000_000
#: the deepest nesting of lists and mappings (aliases expanded): far below Python's recursion limit, which every
#: walk of the loaded values (JSON, hashing) would otherwise meet as a traceback
MAX_DEPTH = 64


class _Refused(yaml.YAMLError):
    """A bound of this module was passed (a YAMLError, so pyyaml's own clean-up runs)."""


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that counts the nodes it composes and measures the expanded document before constructing it."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._composed = 0
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._composed += 1
        if self._composed > MAX_VALUES:
            raise _Refused(f"more than {MAX_VALUES:,} values")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Node) -> Any:
        _check_expanded(node)
        return super().construct_document(node)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expanded(root: Node) -> None:
    """Values and depth of the document with every alias expanded, computed on the shared node graph (each node
    once, iteratively): a bomb is refused without being expanded, a node that contains itself is refused."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            open_nodes.discard(key)
            if size[key] > MAX_VALUES:
                raise _Refused(f"more than {MAX_VALUES:,} values once its aliases (*name) are expanded "
                               "(an alias bomb?)")
            if depth[key] > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels once its aliases (*name) are expanded")
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise _Refused("an alias (*name) refers to a list or mapping that contains it")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)


def load_yaml_text(text: str, *, where: str) -> Any:
    """Load one YAML document from ``text`` within the bounds; errors start with ``where``."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except _Refused as exc:
        raise BertscopeError(f"{where}: refused: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)  # "expected a single document in the stream": half the story
        problem = f"{context}, {problem}" if context else problem
        raise BertscopeError(f"{where}:{line} not valid YAML: {problem}") from None
    except RecursionError:  # pyyaml's constructor recurses; the depth bound should keep it from here
        raise BertscopeError(f"{where}: nested too deeply") from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | os.PathLike[str], *, what: str) -> Any:
    """Read ``path`` (a ``what``: "spec", "config") as UTF-8 YAML within the bounds; every failure is one line
    ``cannot read <what> <path>: <why>``."""
    path = Path(path)
    where = f"cannot read {what} {path}"
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise BertscopeError(f"{where}: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise BertscopeError(f"{where}: larger than {MAX_BYTES // (1024 * 1024)} MiB; a {what} is a few kilobytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BertscopeError(f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                             "save it as UTF-8") from None
    return load_yaml_text(text, where=where)
