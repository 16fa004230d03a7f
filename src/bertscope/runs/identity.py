"""A run's identity: the options of a command that decide its numbers, and the id that names the run by them.

A run is a command with options. Its identity is every option with defaults filled in, minus those its command
declares as never changing the result (:attr:`~bertscope.core.registry.CommandInfo.not_identity`, at least the
location options such as ``out`` and ``data_dir``) and those at their neutral value
(:data:`~bertscope.core.registry.NEUTRAL_VALUES`), as the config class reads them
(:meth:`~bertscope.core.config.Config.identity_values`). Its id is ``<command>-<12 hex>``: a SHA-256 of the command
and the canonical JSON of its identity. This module is the one place a run's identity is computed: a sweep's run, a
study's run, a cross stage and one seed of ``finetune --seeds`` with the same options have the same id, on every
machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from bertscope.core.registry import CommandInfo

__all__ = ["canonical_json", "identity_id", "plain", "run_id", "run_identity"]


def canonical_json(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no whitespace, plain JSON types."""
    return dumps_plain(plain(value))


def dumps_plain(value: Any) -> str:
    """:func:`canonical_json` of a value that is plain JSON already (no conversion pass)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def plain(value: Any) -> Any:
    """``results.to_jsonable`` with a fast path for the plain types a config holds (same output): expanding a large
    sweep grid converts every run's options several times."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return None if value != value else value  # NaN is not valid JSON
    if kind is dict:
        return {str(k): plain(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [plain(v) for v in value]
    from bertscope.core.results import to_jsonable

    return to_jsonable(value)


def run_identity(info: CommandInfo, options: Mapping[str, Any]) -> dict[str, Any]:
    """The identity of one run of ``info``'s command with ``options`` (its config's options as plain values)."""
    return info.identity(plain(dict(options)))


def run_id(command: str, identity: Mapping[str, Any]) -> str:
    """``<command>-<12 hex>``: a hash of the command and its canonical identity."""
    return identity_id(command, canonical_json(identity))


def identity_id(command: str, canonical: str) -> str:
    """:func:`run_id` of an identity already in canonical JSON (a sweep's fast path)."""
    digest = hashlib.sha256(f"{command}\n{canonical}".encode()).hexdigest()
    return f"{command}-{digest[:12]}"
