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
``plugins:`` names modules whose ``BERTSCOPE_COMMANDS`` add commands (:mod:`bertscope.sweep.plugins`). A plugin is
code: it is imported only with ``allow_plugins`` (and from where ``plugins_from`` permits), never on a dry run, which
expands the runs of the built-in commands and counts those of the plugins' commands as not loaded.

Every run is validated up front by building the command's config (so a bad key or value fails before anything
runs, naming the key) and gets a deterministic id from its canonical configuration: all options with defaults
filled in, minus those its command declares as not changing the result (``CommandInfo.not_identity``, at least
the location options such as ``out`` and ``data_dir``), with pre-step outputs replaced by the pre-step's id. The
same experiment therefore has the same id in every sweep and on every machine (two grid points of one block that
collapse to the same run, ``seed: [1, 1.0]`` or values of an option outside the identity, are an error). The
identity and the id are :mod:`bertscope.runs.identity`'s, the same a study or ``finetune --seeds`` gives a run.

Expansion is linear in the number of runs (a 100,000-run grid is listed in seconds): membership and duplicate checks
use sets, the registry is read once per spec and canonical JSON takes a fast path for plain values.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertscope.core.config import Config
from bertscope.core.errors import BertscopeError
from bertscope.core.registry import CommandInfo, Registry
from bertscope.core.safe_yaml import load_yaml_file
from bertscope.finetune.config import FinetuneConfig
from bertscope.runs.identity import canonical_json, dumps_plain, identity_id, plain, run_id, run_identity
from bertscope.sweep.commands import ANALYSES
from bertscope.sweep.config import MAX_RUNS
from bertscope.sweep.plugins import check_plugin_sources, commands, load_plugins

__all__ = [
    "MAX_RUNS",
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
    #: a dry run imports no plugin: the commands its grid points needed from them, and how many points that was
    not_loaded: tuple[str, ...] = ()
    not_loaded_runs: int = 0

    @functools.cached_property
    def _by_id(self) -> dict[str, Run]:
        return {r.id: r for r in self.runs}

    def run(self, run_id: str) -> Run:
        return self._by_id[run_id]


def load_spec(path: str | Path, *, runs_dir: str | Path, allow_plugins: bool = False, plugins_from: str = "spec",
              dry_run: bool = False, max_runs: int = MAX_RUNS) -> SweepSpec:
    """Read and expand a YAML spec (read by :mod:`bertscope.core.safe_yaml`: UTF-8, bounded size and aliases); every
    error names the file and the offending key. Its plugins are imported only with ``allow_plugins`` and never with
    ``dry_run`` (see :func:`parse_spec`)."""
    path = Path(path)
    raw = load_yaml_file(path, what="spec")
    return parse_spec(raw, runs_dir=runs_dir, where=str(path), default_name=path.stem, base_dir=path.parent,
                      allow_plugins=allow_plugins, plugins_from=plugins_from, dry_run=dry_run, max_runs=max_runs)


def parse_spec(raw: Any, *, runs_dir: str | Path, where: str = "spec", default_name: str = "sweep",
               base_dir: str | Path | None = None, allow_plugins: bool = False, plugins_from: str = "spec",
               dry_run: bool = False, max_runs: int = MAX_RUNS) -> SweepSpec:
    """Validate a spec mapping and expand it into runs (see the module docstring for the format).

    A spec with ``plugins`` is code: without ``allow_plugins`` it is refused (one line naming the flag); with it, each
    plugin must come from where ``plugins_from`` permits (:func:`~bertscope.sweep.plugins.check_plugin_sources`;
    the spec's folder is ``base_dir``, or the current folder for a mapping). ``dry_run`` imports nothing: the
    points of the plugins' commands are counted in :attr:`SweepSpec.not_loaded_runs`, the rest expand as usual.
    The grid points of all blocks are counted before any is expanded; more than ``max_runs`` is refused.
    """
    if not isinstance(raw, Mapping):
        raise BertscopeError(f"{where}: a spec is a mapping with at least 'command' and 'base' or 'grid'")
    _check_keys(raw, _TOP_KEYS, where, "top level")
    plugins = raw.get("plugins") or []
    if isinstance(plugins, str):
        plugins = [plugins]
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise BertscopeError(f"{where}: 'plugins' must be a list of module names or .py files")
    spec_dir = Path(base_dir) if base_dir is not None else Path.cwd()
    # make file plugins absolute so workers elsewhere find them
    plugins = [str((spec_dir / p).resolve()) if p.endswith(".py") else p for p in plugins]
    registry: Registry = commands()
    if plugins:
        try:
            if allow_plugins:
                check_plugin_sources(plugins, spec_dir=spec_dir, source=plugins_from)
            if dry_run:
                registry = ANALYSES  # a dry run runs no plugin code, whatever a notebook loaded before
            elif not allow_plugins:
                raise BertscopeError(f"the spec's plugins ({', '.join(plugins)}) are code that would run here: "
                                     "pass --allow-plugins to import them (--dry-run lists the other runs without)")
            else:
                load_plugins(plugins)
                registry = commands()
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
    parsed = []
    for index, block in enumerate(blocks):
        block_where = f"{where}: experiments[{index}]" if "experiments" in raw else where
        if not isinstance(block, Mapping):
            raise BertscopeError(f"{block_where}: each experiment is a mapping (command, base, grid)")
        _check_keys(block, _BLOCK_KEYS, block_where, "experiment")
        command = block.get("command", raw.get("command"))
        if not command:
            raise BertscopeError(f"{block_where}: missing 'command' (one of {', '.join(sorted(registry))})")
        grid = _grid(block.get("grid"), block_where)
        # a block's grid may override an inherited (top-level) base option, not its own base
        base = {**{k: v for k, v in inherited_base.items() if k not in grid},
                **_mapping(block.get("base"), block_where, "base")}
        resources = {**top_resources, **_resources(block.get("resources"), block_where, "resources")}
        experiment = str(block.get("name") or (f"{name}[{index}]" if "experiments" in raw else name))
        parsed.append((str(command), base, grid, resources, experiment, block_where))
    points = sum(math.prod(len(values) for values in grid.values()) for _, _, grid, *_ in parsed)
    if points > max_runs:
        raise BertscopeError(f"{where}: its grids hold {_count(points)} runs, more than the limit of {max_runs:,}; "
                             "split the spec, or raise the limit with --max-runs")
    expander = _Expander(Path(runs_dir), where, registry, skip_unknown=bool(plugins) and dry_run)
    for block_args in parsed:
        expander.block(*block_args)
    return SweepSpec(name=name, path=where, raw=dict(raw), runs=tuple(expander.runs.values()),
                     plugins=tuple(plugins), members=tuple(expander.members.values()),
                     not_loaded=tuple(sorted(expander.not_loaded)), not_loaded_runs=expander.not_loaded_runs)


def expand(spec: Mapping[str, Any], *, runs_dir: str | Path, allow_plugins: bool = False,
           plugins_from: str = "spec") -> list[Run]:
    """Shortcut for tests and notebooks: the runs of a spec mapping."""
    return list(parse_spec(spec, runs_dir=runs_dir, allow_plugins=allow_plugins, plugins_from=plugins_from).runs)


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
        seen: set[str] = set()
        for v in values:
            text = canonical_json(v)
            if text in seen:
                raise BertscopeError(f"{where}: grid.{key} lists {v!r} twice")
            seen.add(text)
    return grid


def _ref_key(value: Any) -> str | None:
    """The one non-``label``/``resources`` key of a mapping value (a pre-step's command, if it names one)."""
    if not isinstance(value, Mapping):
        return None
    keys = [k for k in value if k not in _REF_KEYS]
    return str(keys[0]) if len(keys) == 1 else None


def _ref_command(value: Any, known: Registry) -> str | None:
    """The command of a pre-step mapping ``{<command>: {...}, label: ...}``, else None."""
    key = _ref_key(value)
    return key if key is not None and key in known else None


def _not_a_pre_step(value: Mapping[Any, Any], known: Registry, where: str) -> BertscopeError:
    """Why a mapping option value is no pre-step ``{<command>: {options}, label: ..., resources: ...}``: a
    misspelled command or key is caught here, by ``--dry-run``, not later as a model name nobody can find."""
    shape = "a pre-step is {<command>: {options}, label: ..., resources: ...}"
    named = [str(k) for k in value if k in known]
    others = sorted(str(k) for k in value if k not in known and k not in _REF_KEYS)
    if len(named) > 1:
        return BertscopeError(f"{where}: a pre-step names one command, not {', '.join(named)}; {shape}")
    if named:
        return BertscopeError(f"{where}: unknown pre-step key(s) {', '.join(others)} beside '{named[0]}' "
                              f"(allowed: {', '.join(sorted(_REF_KEYS))}); {shape}")
    return BertscopeError(f"{where}: no option takes a mapping and {', '.join(others) or 'it'} names no command a "
                          f"pre-step can run (known: {', '.join(sorted(known))}); {shape}")


def _count(n: int) -> str:
    """A count people can read: 100,000 or 1.0e+08."""
    return f"{n:,}" if n < 10**9 else f"{n:.1e}"


def _display(value: Any, known: Registry) -> Any:
    if value is None:
        return "default"
    command = _ref_command(value, known)
    if command:
        return str(value.get("label") or f"{command}({canonical_json(value[command])})")
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


class _NotLoaded(Exception):
    """A grid point needs a command of a plugin that this (dry) run did not import."""

    def __init__(self, command: str) -> None:
        super().__init__(command)
        self.command = command


class _Expander:
    """Builds runs and their pre-steps, deduplicated by id, pre-steps before the runs that need them.

    ``skip_unknown`` (a dry run of a spec with plugins): a command the registry lacks is a plugin's, not a typo;
    its points are counted, not expanded."""

    def __init__(self, runs_dir: Path, where: str, registry: Registry, *, skip_unknown: bool = False) -> None:
        self.runs_dir = runs_dir
        self.where = where
        self.registry = registry
        self.skip_unknown = skip_unknown
        self.runs: dict[str, Run] = {}
        #: an ordered set: (run id, experiment, axes as JSON, label) -> member
        self.members: dict[tuple[str, str, str | None, str | None],
                           tuple[str, str, dict[str, Any] | None, str | None]] = {}
        self.not_loaded: set[str] = set()
        self.not_loaded_runs = 0
        self._field_sets: dict[type[Config], frozenset[str]] = {}

    def block(self, command: str, base: dict[str, Any], grid: dict[str, list[Any]], resources: dict[str, float],
              experiment: str, where: str) -> None:
        if self.skip_unknown and command not in self.registry:
            self.not_loaded.add(command)
            self.not_loaded_runs += math.prod(len(v) for v in grid.values())
            return
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
        points: dict[str, dict[str, Any]] = {}  # run id -> the point that made it: points must differ in their run
        for combo in itertools.product(*(grid[a] for a in axes)):
            point = dict(zip(axes, combo))
            options = {**base, **point}
            shown = {a: _display(v, self.registry) for a, v in point.items()}
            shown_json = canonical_json(shown)
            try:
                run = self.add(command, options, resources, experiment, f"{where}: run {shown_json}", shown,
                               axes_key=shown_json)
            except _NotLoaded as missing:
                self.not_loaded.add(missing.command)
                self.not_loaded_runs += 1
                continue
            first = points.setdefault(run.id, point)
            if first is not point:
                differ = [a for a in axes if canonical_json(first[a]) != canonical_json(point[a])]
                pairs = "; ".join(f"{a}: {first[a]!r} and {point[a]!r}" for a in differ)
                raise BertscopeError(f"{where}: grid values collapse to the same run {run.id} ({pairs}): equal once "
                                     f"validated, or not part of what '{command}' computes; list each value once")

    def add(self, command: str, options: dict[str, Any], resources: dict[str, float], experiment: str,
            where: str, axes: dict[str, Any] | None, label: str | None = None, axes_key: str | None = None) -> Run:
        cls = self._config_class(command, where)
        refs: dict[str, Run] = {}
        resolved: dict[str, Any] = {}
        deps: list[str] = []
        for key, value in options.items():
            ref = _ref_command(value, self.registry)
            if ref is None:
                missing = _ref_key(value)
                if self.skip_unknown and missing is not None and isinstance(value[missing], Mapping):
                    raise _NotLoaded(missing)  # a pre-step of a plugin's command
                if isinstance(value, Mapping):  # no option takes a mapping: it was meant as a pre-step
                    raise _not_a_pre_step(value, self.registry, f"{where}: {key}")
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
            resolved[key] = str(_output_path(self.registry[ref], self.runs_dir / pre.id))
        fields = self._fields(cls)
        if "progress" in fields:
            resolved["progress"] = False
        if issubclass(cls, FinetuneConfig) and "log" not in resolved:  # fine-tuning runs stay quiet unless asked
            resolved["log"] = "off"
        if "out" in fields:
            resolved["out"] = str(self.runs_dir / "_")  # placeholder: the id (which ignores out) names the real one
        try:
            config = cls.from_dict(resolved, where=where)
        except BertscopeError as exc:
            message = str(exc)
            raise BertscopeError(message if message.startswith(where) else f"{where}: {message}") from None
        full = plain(config.to_dict())  # plain JSON values from here on: hashed without another conversion
        identity = run_identity(self.registry[command], full)
        for key, pre in refs.items():
            identity[key] = {"@run": pre.id}
        rid = identity_id(command, dumps_plain(identity))
        if "out" in fields:
            full["out"] = str(self.runs_dir / rid)
        self.members.setdefault((rid, experiment, axes_key, label), (rid, experiment, axes, label))
        if rid in self.runs:
            return self.runs[rid]
        run = Run(id=rid, command=command, options=full, identity=identity,
                  axes=axes, experiment=experiment, depends_on=tuple(deps), resources=dict(resources), label=label)
        self.runs[rid] = run
        return run

    def _fields(self, cls: type[Config]) -> frozenset[str]:
        known = self._field_sets.get(cls)
        if known is None:
            known = self._field_sets[cls] = frozenset(cls.field_names())
        return known

    def _config_class(self, command: str, where: str) -> type[Config]:
        known = self.registry
        if command not in known:
            if self.skip_unknown:
                raise _NotLoaded(command)
            raise BertscopeError(f"{where}: unknown command {command!r}; known: {', '.join(sorted(known))}")
        return known[command].config


def _output_path(info: CommandInfo, out_dir: Path) -> Path:
    """Where a pre-step's product lives inside its output folder (its ``model_subdir``)."""
    return out_dir / info.model_subdir if info.model_subdir else out_dir
