"""What a command is, declared once next to the command: its config class, runner, result type and metadata.

Every command module ends with one :class:`CommandInfo` (``COMMAND = CommandInfo(...)``). Nothing here imports a
command: :mod:`bertscope.sweep.commands` collects the analysis commands (the ones a sweep runs), :mod:`bertscope.api` adds
``sweep``, ``status`` and ``report`` on top. The CLI, the API, the sweep machinery and the report all read these
records, so a fact about a command (does it resume inside its own folder? where does it save a model? which options
never change its numbers?) lives in one place.

This module imports nothing of bertscope but ``config``; it sits at the bottom with ``errors`` and ``results``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bertscope.core.config import Config

__all__ = ["LOCATION_OPTIONS", "NEUTRAL_VALUES", "SECTION_KINDS", "CommandInfo", "Registry", "ReportSection",
           "StudyPoint"]

#: Options that only say where things are, how a run looks while it runs or which kernel computes it (``attention``:
#: sdpa and eager give the same numbers up to float rounding, tested in tests/test_attention.py): they never change
#: a result, so they are never part of a run's identity (:mod:`bertscope.runs.identity`). Commands add their own
#: (``not_identity``).
LOCATION_OPTIONS: frozenset[str] = frozenset({"out", "progress", "data_dir", "cache_dir", "head_cache", "overwrite",
                                              "retry_failed", "attention"})

#: Options added after bertscope 0.1.0, each with the value that does what runs did before the option existed. An
#: option at that value is left out of a run's identity, so adding an option never re-keys a sweep store or a study
#: folder; a run that sets it to anything else (the new behaviour) gets a new identity. Every new result-affecting
#: option goes here with its neutral value.
NEUTRAL_VALUES: Mapping[str, Any] = MappingProxyType({
    "seeds": None,  # several seeds of one run or study (each seed is its own run)
    "tolerance": 0.01,  # the margin of "as good as" verdicts
    "head_from": "self",  # reconstruct: whose head decodes (the default, auto, changes deepened variants)
    "fit": "sgd",  # the head's training loop (auto resolves to sgd where no probe can apply: configs.FinetuneConfig)
})

#: One fine-tuning point inside a study's payload: (extra axes such as ``{"layer": 3}``, score).
StudyPoint = tuple[dict[str, Any], float]

#: The kinds of report section (each drawn by :mod:`bertscope.report.sections`), in the order a report shows them:
#: ``line`` (a score per numbered position, e.g. hidden layers; a heatmap when tasks vary too), ``subsets`` (score
#: vs subset size k of ``strategy:k`` values with a ``random`` control and an ``all`` reference line), ``bars``
#: (a score per named choice) and ``matrix`` (what was fine-tuned first x what was fine-tuned and evaluated after).
SECTION_KINDS = ("line", "subsets", "bars", "matrix")


@dataclass(frozen=True)
class ReportSection:
    """How a command's runs look in a report, declared beside the command (``CommandInfo(report=...)``).

    The report draws a section for every declared axis that varies in an experiment (a sweep's grid value or a
    study's point axis), whichever command declared it: a sweep of ``finetune`` over ``layer`` gets the section the
    ``layers`` study declares. ``axis``: the axis (``across``: the second one, for a ``matrix``); ``heading``: the
    section's heading; ``noun``: what the axis is called in titles and captions; ``text``: a paragraph under the
    heading; ``stem``: the plots' file-name stem (default: the axis). ``points``: for a study, the (axes, score)
    points inside one stored payload (one per fine-tuning run it holds), which the report and ``replicate`` read.
    """

    axis: str
    kind: str
    heading: str
    noun: str = ""
    text: str = ""
    across: str | None = None
    stem: str = ""
    points: Callable[[Mapping[str, Any]], list[StudyPoint]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in SECTION_KINDS:
            raise ValueError(f"report section kind {self.kind!r} is none of {', '.join(SECTION_KINDS)}")
        if (self.kind == "matrix") != (self.across is not None):
            raise ValueError("a matrix section, and only a matrix section, names its second axis (across)")

    @property
    def axes(self) -> tuple[str, ...]:
        """The axes an experiment must vary for this section to apply."""
        return (self.axis,) if self.across is None else (self.axis, self.across)


@dataclass(frozen=True)
class CommandInfo:
    """One command of the CLI / API / sweep, declared once beside its runner.

    ``resumes_in_out``: a re-run with the same ``out`` continues the command's own finished work (the studies), so a
    sweep keeps a run's folder when it retries it. ``model_subdir``: where in ``out`` the model it produces lives
    (``""`` = ``out`` itself, ``None`` = it produces none), for sweep pre-steps (``model: {"@run": ...}``).
    ``not_identity``: options that never change its numbers (left out of run ids and hashes).
    ``report``: the section its runs get in a report (:class:`ReportSection`); a study's declares its ``points``.
    ``sweepable``: a sweep may run it (not ``sweep``, ``status``, ``report`` themselves).
    """

    name: str
    config: type[Config]
    run: Callable[[Any], Any]
    result: type
    help: str
    resumes_in_out: bool = False
    model_subdir: str | None = None
    not_identity: frozenset[str] = LOCATION_OPTIONS
    report: ReportSection | None = None
    sweepable: bool = True

    @property
    def study_points(self) -> Callable[[Mapping[str, Any]], list[StudyPoint]] | None:
        """For a study, the (axes, score) points inside one stored payload (its report section's ``points``)."""
        return None if self.report is None else self.report.points

    @property
    def is_study(self) -> bool:
        return self.study_points is not None

    def identity(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options of one run that determine its result (its identity), in field order, as the config class sees
        them (:meth:`Config.identity_values`): all but ``not_identity`` and the options added since 0.1.0 that sit
        at their neutral value (:data:`NEUTRAL_VALUES`)."""
        return {k: v for k, v in self.config.identity_values(options).items()
                if k not in self.not_identity and not (k in NEUTRAL_VALUES and v == NEUTRAL_VALUES[k])}


@dataclass(frozen=True)
class Registry(Mapping[str, CommandInfo]):
    """An immutable name -> :class:`CommandInfo` mapping; :meth:`with_commands` makes an extended copy (plugins)."""

    commands: Mapping[str, CommandInfo] = field(default_factory=dict)

    def __post_init__(self) -> None:  # a read-only view of a private copy: nobody changes a registry in place
        object.__setattr__(self, "commands", MappingProxyType(dict(self.commands)))

    @classmethod
    def of(cls, infos: Iterable[CommandInfo]) -> Registry:
        out: dict[str, CommandInfo] = {}
        for info in infos:
            if info.name in out:
                raise ValueError(f"command {info.name!r} declared twice")
            out[info.name] = info
        return cls(out)

    def with_commands(self, infos: Iterable[CommandInfo]) -> Registry:
        return Registry.of([*self.commands.values(), *infos])

    def __getitem__(self, name: str) -> CommandInfo:
        return self.commands[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.commands)

    def __len__(self) -> int:
        return len(self.commands)

    def sweepable(self) -> Registry:
        return Registry({n: c for n, c in self.commands.items() if c.sweepable})

    def studies(self) -> tuple[str, ...]:
        return tuple(n for n, c in self.commands.items() if c.is_study)
