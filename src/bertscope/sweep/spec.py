"""Experiment specs: a YAML file that names a command, its base options and grid axes, expanded into runs.

    name: paper2-dims                 # optional; default: the file name
    command: finetune                 # any command a sweep can run (bertscope.sweep.plugins.commands())
    base: {task: rte, max_train: 64, epochs: 1}
    grid: {dims: [all, "random:2"], seed: [1, 2]}
    resources: {cpus: 1, gpus: 0}     # optional, per run (Ray)

Keys are the command's own option names (``_`` or ``-``). A spec may instead hold ``experiments:``, a list of such
blocks that inherit the top-level ``command``/``base``/``resources``. An option value that is a mapping
``{<command>: {options}, label: "..."}`` is a *pre-step*: that command runs first (as its own run, stored and
resumed like any other) and the option receives its output folder, e.g. a model axis whose values are deepened
variants of a checkpoint: ``model: [bert-base-uncased, {deepen: {model: bert-base-uncased, ...}, label: 24L}]``.
``plugins:`` names modules whose ``BERTSCOPE_COMMANDS`` add commands (:mod:`bertscope.sweep.plugins`).

Every run is validated up front by building the command's config (so a bad key or value fails before anything
runs, naming the key) and gets a deterministic id from its canonical configuration: all options with defaults
filled in, minus those its command declares as not changing the result (``CommandInfo.not_identity``, at least
the location options such as ``out`` and ``data_dir``), with pre-step outputs replaced by the pre-step's id. The
same experiment therefore has the same id in every sweep and on every machine. Each run also carries the id it had
before commands declared their own ``not_identity`` (``legacy_id``), so stores written then are re-keyed once
(:mod:`bertscope.sweep.migrate`) instead of being run again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bertscope.config import Config
from bertscope.errors import BertscopeError
from bertscope.sweep.plugins import commands, load_plugins
from bertscope.tracking import TRACKING_OPTIONS

__all__ = [
    "Run",
    "SweepSpec",
    "canonical_json",
    "commands",
    "expand",
    "load_plugins",
    "load_spec",
    "parse_spec",
    "run_id",
]

#: Frozen on purpose: the options every command's run id left out before commands declared their own
#: ``not_identity``. Only :attr:`Run.legacy_id` uses it, to find runs a store holds under their old id. Never edit it.
_LEGACY_NON_IDENTITY = frozenset({"out", "progress", "data_dir", "cache_dir", "head_cache", "overwrite"})
#: Options added since that rule, none of them identity: the stores it wrote never had them, so legacy ids leave
#: them out as well (else every new option would change every legacy id).
_NEWER_THAN_LEGACY = TRACKING_OPTIONS
_TOP_KEYS = {"name", "description", "command", "base", "grid", "experiments", "resources", "plugins", "notes"}
_BLOCK_KEYS = {"name", "command", "base", "grid", "resources", "notes"}
_RESOURCE_KEYS = {"cpus", "gpus"}
_REF_KEYS = {"label", "resources"}


@dataclass(frozen=True)
class Run:
    """One concrete run: a command with its full options, its identity and where it came from in the spec."""

    id: str
    command: str
    options: dict[str, Any]  # full config dict the worker builds the config from (with out set)
    identity: dict[str, Any]  # what the id hashes
    axes: dict[str, Any] | None  # the grid values of this run (display form); None for a pre-step
    experiment: str
    depends_on: tuple[str, ...] = ()
    resources: dict[str, float] = field(default_factory=dict)
    label: str | None = None  # set for pre-steps that carry a label
    legacy_id: str | None = None  # its id under the frozen legacy rule (equal to ``id`` when the rule agrees)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, validated spec: its name and the runs it expands to (pre-steps first)."""

    name: str
    path: str | None
    raw: dict[str, Any]
    runs: tuple[Run, ...]  # unique runs, pre-steps first
    plugins: tuple[str, ...] = ()
    #: (run id, experiment, axes, label) for every place a run appears: the same configuration may serve several
    #: experiments of a spec (it runs once; each experiment's report sees it)
    members: tuple[tuple[str, str, dict[str, Any] | None, str | None], ...] = ()

    def run(self, run_id: str) -> Run:
        for r in self.runs:
            if r.id == run_id:
                return r
        raise KeyError(run_id)


def canonical_json(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no whitespace, plain JSON types."""
    from bertscope.results import to_jsonable

    return json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def run_id(command: str, identity: Mapping[str, Any]) -> str:
    """``<command>-<12 hex>``: a hash of the command and its canonical identity."""
    digest = hashlib.sha256(f"{command}\n{canonical_json(identity)}".encode()).hexdigest()
    return f"{command}-{digest[:12]}"


def load_spec(path: str | Path, *, runs_dir: str | Path) -> SweepSpec:
    """Read and expand a YAML spec; every error names the file and the offending key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BertscopeError(f"cannot read spec {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise BertscopeError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    return parse_spec(raw, runs_dir=runs_dir, where=str(path), default_name=path.stem, base_dir=path.parent)


def parse_spec(raw: Any, *, runs_dir: str | Path, where: str = "spec", default_name: str = "sweep",
               base_dir: str | Path | None = None) -> SweepSpec:
    """Validate a spec mapping and expand it into runs (see the module docstring for the format)."""
    if not isinstance(raw, Mapping):
        raise BertscopeError(f"{where}: a spec is a mapping with at least 'command' and 'base' or 'grid'")
    _check_keys(raw, _TOP_KEYS, where, "top level")
    plugins = raw.get("plugins") or []
    if isinstance(plugins, str):
        plugins = [plugins]
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise BertscopeError(f"{where}: 'plugins' must be a list of module names or .py files")
    if base_dir is not None:  # make file plugins absolute so workers elsewhere find them
        plugins = [str((Path(base_dir) / p).resolve()) if p.endswith(".py") else p for p in plugins]
    try:
        load_plugins(plugins)
    except BertscopeError as exc:
        raise BertscopeError(f"{where}: plugins: {exc}") from None
    name = str(raw.get("name") or default_name)
    top_base = _mapping(raw.get("base"), where, "base")
    top_resources = _resources(raw.get("resources"), where, "resources")
    blocks = raw.get("experiments")
    if blocks is None:
        blocks = [{k: raw[k] for k in ("command", "grid") if k in raw}]
        inherited_base: dict[str, Any] = {}
        blocks[0]["base"] = top_base
    else:
        if not isinstance(blocks, list) or not blocks:
            raise BertscopeError(f"{where}: 'experiments' must be a non-empty list of blocks")
        if "grid" in raw:
            raise BertscopeError(f"{where}: 'grid' goes inside each block of 'experiments', not at the top level")
        inherited_base = top_base
    expander = _Expander(Path(runs_dir), where)
    for index, block in enumerate(blocks):
        block_where = f"{where}: experiments[{index}]" if "experiments" in raw else where
        if not isinstance(block, Mapping):
            raise BertscopeError(f"{block_where}: each experiment is a mapping (command, base, grid)")
        _check_keys(block, _BLOCK_KEYS, block_where, "experiment")
        command = block.get("command", raw.get("command"))
        if not command:
            raise BertscopeError(f"{block_where}: missing 'command' (one of {', '.join(sorted(commands()))})")
        grid = _grid(block.get("grid"), block_where)
        # a block's grid may override an inherited (top-level) base option, not its own base
        base = {**{k: v for k, v in inherited_base.items() if k not in grid},
                **_mapping(block.get("base"), block_where, "base")}
        resources = {**top_resources, **_resources(block.get("resources"), block_where, "resources")}
        experiment = str(block.get("name") or (f"{name}[{index}]" if "experiments" in raw else name))
        expander.block(str(command), base, grid, resources, experiment, block_where)
    return SweepSpec(name=name, path=where, raw=dict(raw), runs=tuple(expander.runs.values()),
                     plugins=tuple(plugins), members=tuple(expander.members))


def expand(spec: Mapping[str, Any], *, runs_dir: str | Path) -> list[Run]:
    """Shortcut for tests and notebooks: the runs of a spec mapping."""
    return list(parse_spec(spec, runs_dir=runs_dir).runs)


# ----------------------------------------------------------------------------------------------------------------


def _check_keys(mapping: Mapping[str, Any], allowed: set[str], where: str, what: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise BertscopeError(f"{where}: unknown {what} key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _mapping(value: Any, where: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BertscopeError(f"{where}: '{key}' must be a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in value.items()}


def _resources(value: Any, where: str, key: str) -> dict[str, float]:
    values = _mapping(value, where, key)
    _check_keys(values, _RESOURCE_KEYS, where, key)
    out: dict[str, float] = {}
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise BertscopeError(f"{where}: {key}.{k} must be a non-negative number, got {v!r}")
        out[k] = float(v)
    return out


def _grid(value: Any, where: str) -> dict[str, list[Any]]:
    grid = _mapping(value, where, "grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise BertscopeError(f"{where}: grid.{key} must be a non-empty list of values, got {values!r}")
        seen: list[str] = []
        for v in values:
            text = canonical_json(v)
            if text in seen:
                raise BertscopeError(f"{where}: grid.{key} lists {v!r} twice")
            seen.append(text)
    return grid


def _ref_command(value: Any) -> str | None:
    """The command of a pre-step mapping ``{<command>: {...}, label: ...}``, else None."""
    if not isinstance(value, Mapping):
        return None
    keys = [k for k in value if k not in _REF_KEYS]
    known = commands()
    if len(keys) == 1 and keys[0] in known:
        return str(keys[0])
    return None


def _display(value: Any) -> Any:
    if value is None:
        return "default"
    if isinstance(value, Mapping) and _ref_command(value):
        command = _ref_command(value)
        return str(value.get("label") or f"{command}({canonical_json(value[command])})")
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


class _Expander:
    """Builds runs and their pre-steps, deduplicated by id, pre-steps before the runs that need them."""

    def __init__(self, runs_dir: Path, where: str) -> None:
        self.runs_dir = runs_dir
        self.where = where
        self.runs: dict[str, Run] = {}
        self.members: list[tuple[str, str, dict[str, Any] | None, str | None]] = []

    def block(self, command: str, base: dict[str, Any], grid: dict[str, list[Any]], resources: dict[str, float],
              experiment: str, where: str) -> None:
        cls = self._config_class(command, where)
        known = set(cls.field_names())
        for section, keys in (("base", base), ("grid", grid)):
            unknown = sorted(k for k in keys if k not in known)
            if unknown:
                raise BertscopeError(f"{where}: {section}: unknown option(s) {', '.join(unknown)} for '{command}'; "
                                     f"known: {', '.join(sorted(known))}")
        both = sorted(set(base) & set(grid))
        if both:
            raise BertscopeError(f"{where}: option(s) {', '.join(both)} are in both base and grid; keep one")
        if "out" in base or "out" in grid:
            raise BertscopeError(f"{where}: 'out' is set by the sweep (each run writes to <runs dir>/<run id>)")
        axes = list(grid)
        for combo in itertools.product(*(grid[a] for a in axes)):
            point = dict(zip(axes, combo))
            options = {**base, **point}
            shown = {a: _display(v) for a, v in point.items()}
            self.add(command, options, resources, experiment, f"{where}: run {canonical_json(shown)}", shown)

    def add(self, command: str, options: dict[str, Any], resources: dict[str, float], experiment: str,
            where: str, axes: dict[str, Any] | None, label: str | None = None) -> Run:
        cls = self._config_class(command, where)
        refs: dict[str, Run] = {}
        resolved: dict[str, Any] = {}
        deps: list[str] = []
        for key, value in options.items():
            ref = _ref_command(value)
            if ref is None:
                resolved[key] = value
                continue
            inner = value[ref]
            if not isinstance(inner, Mapping):
                raise BertscopeError(f"{where}: {key}.{ref} must be a mapping of {ref} options")
            inner = _mapping(inner, where, f"{key}.{ref}")
            if "save_model" in self._config_class(ref, where).field_names():
                inner.setdefault("save_model", True)  # a pre-step exists to produce a model: make it save one
            pre_resources = {**resources, **_resources(value.get("resources"), where, f"{key}.resources")}
            pre = self.add(ref, inner, pre_resources, experiment,
                           f"{where}: {key}.{ref}", None, label=value.get("label"))
            refs[key] = pre
            deps.append(pre.id)
            resolved[key] = str(_output_path(ref, self.runs_dir / pre.id))
        fields = set(cls.field_names())
        if "progress" in fields:
            resolved["progress"] = False
        if "out" in fields:
            resolved["out"] = str(self.runs_dir / "_")  # placeholder: the id (which ignores out) names the real one
        try:
            config = cls.from_dict(resolved, where=where)
        except BertscopeError as exc:
            message = str(exc)
            raise BertscopeError(message if message.startswith(where) else f"{where}: {message}") from None
        full = config.to_dict()
        identity = commands()[command].identity(full)
        legacy = {k: v for k, v in full.items() if k not in _LEGACY_NON_IDENTITY | _NEWER_THAN_LEGACY}
        for key, pre in refs.items():
            identity[key] = {"@run": pre.id}
            legacy[key] = {"@run": pre.legacy_id or pre.id}
        rid = run_id(command, identity)
        if "out" in fields:
            full["out"] = str(self.runs_dir / rid)
        member = (rid, experiment, axes, label)
        if member not in self.members:
            self.members.append(member)
        if rid in self.runs:
            return self.runs[rid]
        run = Run(id=rid, command=command, options=json.loads(canonical_json(full)), identity=identity,
                  axes=axes, experiment=experiment, depends_on=tuple(deps), resources=dict(resources), label=label,
                  legacy_id=run_id(command, legacy))
        self.runs[rid] = run
        return run

    def _config_class(self, command: str, where: str) -> type[Config]:
        known = commands()
        if command not in known:
            raise BertscopeError(f"{where}: unknown command {command!r}; known: {', '.join(sorted(known))}")
        return known[command].config


def _output_path(command: str, out_dir: Path) -> Path:
    """Where a pre-step's product lives inside its output folder (its ``model_subdir``)."""
    subdir = commands()[command].model_subdir
    return out_dir / subdir if subdir else out_dir
