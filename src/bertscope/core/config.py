"""Dataclass configs that serialise to JSON/YAML and generate the command-line interface.

A command's options are declared once, as fields of a frozen dataclass with :func:`opt` metadata. The same class
builds the ``argparse`` parser (so ``--help`` is always in sync), validates a sweep spec (unknown keys are named),
and is written next to every result. This module imports nothing of bertscope but ``errors``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

import yaml

from bertscope.core.errors import BertscopeError

__all__ = ["Config", "Option", "add_arguments", "config_from_args", "flat_options", "opt"]

C = TypeVar("C", bound="Config")


def opt(
    default: Any,
    help: str,
    *,
    choices: typing.Sequence[Any] | None = None,
    metavar: str | None = None,
    positional: bool = False,
    cli: bool = True,
) -> Any:
    """A config field with its CLI help text; ``cli=False`` keeps it out of the parser (API-only)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "metavar": metavar,
            "positional": positional, "cli": cli}
    return dataclasses.field(default=default, metadata=meta)


@functools.cache  # hot: every field of every config a sweep's grid builds
def _base_type(annotation: Any) -> tuple[type, bool]:
    """(the scalar type, whether None is allowed) of a field annotation such as ``int | None``."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported config annotation {annotation!r}")
        return args[0], True
    return annotation, False


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    kind, optional = _base_type(annotation)
    if value is None:
        if optional:
            return None
        raise BertscopeError(f"option '{name}' must not be empty")
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if not isinstance(value, bool) and value not in (0, 1):  # 2 or 0.5 is no yes/no
                raise ValueError(value)
            return bool(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)  # YAML `epochs: yes` is a mistake, not 1
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind is str:
            if isinstance(value, (list, tuple)):  # YAML lists for list-like string options, e.g. layers: [3, 5]
                return ",".join(str(v) for v in value)
            return str(value)
    except (TypeError, ValueError):
        raise BertscopeError(f"option '{name}' expects {kind.__name__}, got {value!r}") from None
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    """A class's resolved annotations, computed once: building configs by the thousand (a sweep's grid) spent most
    of its time re-evaluating them."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


@dataclasses.dataclass(frozen=True)
class Option:
    """One flat option of a command, as the CLI, the API keywords and the typed API see it.

    ``kind`` is the scalar type (``int``, ``float``, ``bool``, ``str``), ``optional`` whether None is allowed,
    ``choices`` the enumerated values (or None), ``cli`` False for API-only options.
    """

    name: str
    kind: type
    optional: bool
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    metavar: str | None
    positional: bool
    cli: bool


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class of every command's options: typed, immutable, JSON/YAML round-trip, validated on creation."""

    command: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for field in dataclasses.fields(self):
            value = _coerce(field.name, getattr(self, field.name), hints[field.name])
            object.__setattr__(self, field.name, value)
            choices = field.metadata.get("choices")
            if choices and value is not None and value not in choices:
                raise BertscopeError(
                    f"option '{field.name.replace('_', '-')}' must be one of {', '.join(map(str, choices))}; got {value!r}"
                )
        self.validate()

    def validate(self) -> None:
        """Cross-field checks that need no model; subclasses override and raise BertscopeError."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def identity_values(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` (this command's options) as run ids and hashes see them: a command may resolve an option to
        what it means, or leave one out while it keeps an older behaviour, so older ids stay valid."""
        return dict(values)

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any], *, where: str = "config") -> C:
        """Build from a mapping whose keys are option names (``-`` or ``_``); unknown keys are an error."""
        known = set(cls.field_names())
        normalised = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(normalised) - known)
        if unknown:
            raise BertscopeError(
                f"{where}: unknown option(s) {', '.join(unknown)} for '{cls.command or cls.__name__}'; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**normalised)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls: type[C], path: str | Path) -> C:
        try:
            values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise BertscopeError(f"cannot read config {path}: {exc}") from None
        return cls.from_dict(values, where=str(path))


def flat_options(cls: type[Config]) -> list[Option]:
    """Every option of ``cls`` in declaration order, flat: what the CLI is generated from (the ``cli`` ones) and
    what the API's keywords are (all of them, :mod:`bertscope.api_types`). Readers of a command's options use this
    listing rather than the dataclass fields, so how a config is built stays the machinery's business."""
    hints = _type_hints(cls)
    listed = []
    for field in dataclasses.fields(cls):
        meta = field.metadata
        kind, optional = _base_type(hints[field.name])
        listed.append(Option(
            name=field.name, kind=kind, optional=optional,
            default=field.default if field.default is not dataclasses.MISSING else None,
            help=meta.get("help", ""), choices=meta.get("choices"), metavar=meta.get("metavar"),
            positional=bool(meta.get("positional", False)), cli=bool(meta.get("cli", True))))
    return listed


def add_arguments(parser: argparse.ArgumentParser, cls: type[Config]) -> None:
    """Add one ``--option`` per CLI option of ``cls``; defaults stay None so unset options keep the dataclass default."""
    for option in flat_options(cls):
        if not option.cli:
            continue
        kind, default, help_text = option.kind, option.default, option.help
        flag = "--" + option.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=option.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{help_text} (default: {'on' if default else 'off'})")
            continue
        shown = f"{help_text} (default: {default})" if default is not None else help_text
        kwargs: dict[str, Any] = {"type": kind if kind in (int, float) else str, "default": None, "help": shown}
        if option.choices:
            kwargs["choices"] = list(option.choices)
        if option.metavar:
            kwargs["metavar"] = option.metavar
        if option.positional:
            parser.add_argument(option.name, nargs=None if default is None else "?", **kwargs)
        else:
            parser.add_argument(flag, dest=option.name, **kwargs)


def config_from_args(cls: type[C], namespace: argparse.Namespace) -> C:
    """The config for parsed CLI arguments: only options the user gave override the defaults."""
    given = {name: getattr(namespace, name) for name in cls.field_names()
             if getattr(namespace, name, None) is not None}
    return cls(**given)
