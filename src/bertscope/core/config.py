"""Dataclass configs that serialise to JSON/YAML and generate the command-line interface.

A command's options are declared once, as fields of frozen dataclasses with :func:`opt` metadata: small option
groups (:class:`Options`: the model, the data, the optimisation, ...) placed beside the code that reads them, composed
into each command's :class:`Config` (fields made by :func:`group`) next to its own options. Code reads grouped
attributes (``config.optim.lr``); everything outside is flat: :func:`config_options` lists a config's options by
their flat names, and from it come the ``argparse`` parser (so ``--help`` is always in sync and flat), the JSON/YAML
form written next to every result (:meth:`Options.to_dict`), sweep-spec validation (unknown keys are named),
construction from flat names (:meth:`Config.from_dict`, ``Config(**flat)``) and changed copies
(:meth:`Options.replace`). This module imports nothing of bertscope but ``errors``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

import yaml

from bertscope.core.errors import BertscopeError
from bertscope.core.safe_yaml import load_yaml_file

__all__ = ["SEED_LIMIT", "Config", "Option", "Options", "add_arguments", "check_seed", "config_from_args",
           "config_options", "group", "opt"]

#: Seeds run from 0 to ``SEED_LIMIT - 1``: NumPy's seed range, and small enough that the per-epoch and per-text
#: seeds derived from one (``seed * 1_000_003 + i``) stay inside torch's 64-bit generator seeds.
SEED_LIMIT = 2**32


def check_seed(seed: int, flag: str = "--seed") -> None:
    """Refuse a seed outside ``0 .. SEED_LIMIT - 1`` in one line (a larger one overflows a generator deep inside a
    run; a negative one is no seed NumPy takes)."""
    if not 0 <= seed < SEED_LIMIT:
        raise BertscopeError(f"{flag} must be between 0 and {SEED_LIMIT - 1}, got {seed}")

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
            number = float(value)
            if not math.isfinite(number):  # one rule for every float option: NaN and infinity mean nothing
                raise BertscopeError(f"--{name.replace('_', '-')} must be a finite number, got {value!r}")
            return number
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


def _group_class(annotation: Any) -> type[Options] | None:
    """The option group a field holds (a field annotated with an :class:`Options` class), or None for a scalar."""
    if isinstance(annotation, type) and issubclass(annotation, Options) and not issubclass(annotation, Config):
        return annotation
    return None


@dataclass(frozen=True)
class Option:
    """One flat option of a config, as the CLI, the JSON/YAML form, sweeps and the API see it.

    ``group`` is the config attribute holding the option's group (``"optim"`` for ``lr``), None for an option the
    config holds itself; ``type`` is the field's annotation (e.g. ``int | None``)."""

    name: str
    group: str | None
    type: Any
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    metavar: str | None
    positional: bool
    cli: bool

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def kind(self) -> type:
        """The scalar type (``int`` for ``int | None``)."""
        return _base_type(self.type)[0]

    @property
    def optional(self) -> bool:
        """Whether None is a value of the option."""
        return _base_type(self.type)[1]


_OPTIONS: dict[type, tuple[Option, ...]] = {}


def config_options(cls: type[Options]) -> tuple[Option, ...]:
    """Every flat option of ``cls`` in declaration order (a group's options where the group is declared), the
    API-only ones (``cli=False``) included. The CLI, ``--help``, :meth:`Options.to_dict` and typed API keywords are
    all generated from this list; a flat name declared twice is a programming error."""
    found = _OPTIONS.get(cls)
    if found is not None:
        return found
    hints = _type_hints(cls)
    out: list[Option] = []
    for field in dataclasses.fields(cls):
        group = _group_class(hints[field.name])
        if group is not None:
            out.extend(dataclasses.replace(o, group=field.name) for o in config_options(group))
            continue
        meta = field.metadata
        default = field.default if field.default is not dataclasses.MISSING else None
        out.append(Option(name=field.name, group=None, type=hints[field.name], default=default,
                          help=meta.get("help", ""), choices=meta.get("choices"), metavar=meta.get("metavar"),
                          positional=bool(meta.get("positional", False)), cli=bool(meta.get("cli", True))))
    names = [o.name for o in out]
    groups = {o.group for o in out if o.group is not None}
    twice = sorted({n for n in names if names.count(n) > 1} | (groups & set(names)))
    if twice:
        raise TypeError(f"{cls.__name__}: option name(s) declared twice: {', '.join(twice)}")
    _OPTIONS[cls] = result = tuple(out)
    return result


def group(cls: type[G]) -> G:
    """A config field holding the option group ``cls`` (its options stay flat on the CLI and in JSON/YAML)."""
    built: G = dataclasses.field(default_factory=cls)
    return built


@dataclass(frozen=True)
class Options:
    """A group of options (or, as :class:`Config`, a command's options): typed, immutable, validated on creation.

    A group is a small frozen dataclass of :func:`opt` fields placed beside the code that uses it; a config composes
    groups (fields made by :func:`group`) and options of its own. Every outside form is flat: option names, not
    groups, on the CLI, in JSON/YAML, in sweep specs and API keywords (:func:`config_options`)."""

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for field in dataclasses.fields(self):
            kind = _group_class(hints[field.name])
            if kind is not None:
                if not isinstance(getattr(self, field.name), kind):
                    raise TypeError(f"{type(self).__name__}.{field.name} must be a {kind.__name__}")
                continue
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
        """The flat option values (every group's options in place), in :func:`config_options` order."""
        return {o.name: getattr(self if o.group is None else getattr(self, o.group), o.name)
                for o in config_options(type(self))}

    def replace(self: Opts, **changes: Any) -> Opts:
        """A changed copy, built and validated anew from flat option names (``-`` or ``_``; or whole groups by
        attribute): the one way to change a config, for sweeps, API keywords, seeds and study runs alike."""
        values = self.to_dict()
        groups = {o.group for o in config_options(type(self))}
        for key, value in changes.items():
            name = key.replace("-", "_")
            if name in groups and isinstance(value, Options):
                values.update(value.to_dict())
            else:
                values[name] = value
        return type(self).from_flat(values)

    @classmethod
    def field_names(cls) -> list[str]:
        """The flat option names."""
        return [o.name for o in config_options(cls)]

    @classmethod
    def from_flat(cls: type[Opts], values: Mapping[str, Any], *, where: str = "config") -> Opts:
        """Build from flat option names (``_`` spelling); an unknown name is a one-line error naming it."""
        options = config_options(cls)
        known = {o.name for o in options}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BertscopeError(
                f"{where}: unknown option(s) {', '.join(unknown)} for "
                f"'{getattr(cls, 'command', '') or cls.__name__}'; known: {', '.join(sorted(known))}"
            )
        hints = _type_hints(cls)
        kwargs: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            kind = _group_class(hints[field.name])
            if kind is None:
                if field.name in values:
                    kwargs[field.name] = values[field.name]
            else:
                kwargs[field.name] = kind.from_flat({o.name: values[o.name] for o in config_options(kind)
                                                     if o.name in values})
        return cls(**kwargs)


Opts = TypeVar("Opts", bound=Options)
G = TypeVar("G", bound=Options)


@dataclass(frozen=True, init=False)
class Config(Options):
    """Base class of every command's options: flat construction, JSON/YAML round-trip, validated on creation.

    A config that holds groups is declared ``@dataclass(frozen=True, init=False)``: its ``Config(**options)`` takes
    flat option names (``FinetuneConfig(task="rte", lr=1e-3)``) or whole groups by attribute
    (``optim=OptimOptions(...)``). A config of scalars alone keeps the dataclass's own (typed) ``__init__``."""

    command: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        hints = _type_hints(type(self))
        for field in dataclasses.fields(self):
            kind = _group_class(hints[field.name])
            if kind is None:
                if field.name in options:
                    value = options.pop(field.name)
                elif field.default is not dataclasses.MISSING:
                    value = field.default
                elif field.default_factory is not dataclasses.MISSING:
                    value = field.default_factory()
                else:
                    raise TypeError(f"{type(self).__name__}() needs option {field.name!r}")
            else:
                given = options.pop(field.name, None)
                own = {o.name: options.pop(o.name) for o in config_options(kind) if o.name in options}
                if given is None:
                    value = kind.from_flat(own)
                elif isinstance(given, kind):
                    value = given.replace(**own) if own else given
                else:
                    raise TypeError(f"{type(self).__name__}.{field.name} must be a {kind.__name__}, got {given!r}")
            object.__setattr__(self, field.name, value)
        if options:
            raise TypeError(f"{type(self).__name__}() got unknown option(s) {', '.join(sorted(options))}")
        self.__post_init__()

    @classmethod
    def identity_values(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` (this command's options) as run ids and hashes see them: a command may resolve an option to
        what it means, or leave one out while it keeps an older behaviour, so older ids stay valid."""
        return dict(values)

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any], *, where: str = "config") -> C:
        """Build from a mapping whose keys are flat option names (``-`` or ``_``); unknown keys are an error."""
        return cls.from_flat({str(k).replace("-", "_"): v for k, v in values.items()}, where=where)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls: type[C], path: str | Path) -> C:
        values = load_yaml_file(path, what="config") or {}
        if not isinstance(values, Mapping):
            raise BertscopeError(f"config {path} must be a mapping of option: value")
        return cls.from_dict(values, where=str(path))


def add_arguments(parser: argparse.ArgumentParser, cls: type[Config]) -> None:
    """Add one ``--option`` per CLI option of ``cls`` (flat, groups included); defaults stay None so unset options
    keep the declared default."""
    for option in config_options(cls):
        if not option.cli:
            continue
        kind, _ = _base_type(option.type)
        default = option.default
        if kind is bool:
            parser.add_argument(option.flag, dest=option.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{option.help} (default: {'on' if default else 'off'})")
            continue
        shown = f"{option.help} (default: {default})" if default is not None else option.help
        kwargs: dict[str, Any] = {"type": kind if kind in (int, float) else str, "default": None, "help": shown}
        if option.choices:
            kwargs["choices"] = list(option.choices)
        if option.metavar:
            kwargs["metavar"] = option.metavar
        if option.positional:
            parser.add_argument(option.name, nargs=None if default is None else "?", **kwargs)
        else:
            parser.add_argument(option.flag, dest=option.name, **kwargs)


def config_from_args(cls: type[C], namespace: argparse.Namespace) -> C:
    """The config for parsed CLI arguments: only options the user gave override the defaults."""
    given = {name: getattr(namespace, name) for name in cls.field_names()
             if getattr(namespace, name, None) is not None}
    return cls.from_flat(given)
