"""A one-axis study: the same head configuration run once per value of one fine-tuning option (paper 2).

``layers`` (the hidden layer read) and ``tokens`` (the token vector read) are each one :class:`Axis`, a declaration,
run by the one function :func:`run_axis`: one run per value (and per ``--seeds`` seed), a table row per value with
its interval over seeds, an "as good as" comparison of every value with the axis's reference value, a summary, a
plot and the study's files (:func:`~bertscope.studies.common.finish_study`). The axis also gives the study's
command its report section (:meth:`Axis.section`) and the points the report reads (:meth:`Axis.points`).

A value's run is ``finetune`` with that option set (``--layer 4``, ``--token mean``), under the run id
``"<word> <value>"`` and the hash of its fine-tuning options: a seed's runs are the single-seed study's.
:func:`seed_runs` (the loop over seeds) is shared with ``dims``, whose points are groups of subsets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bertscope.core import stats
from bertscope.core.progress import progress_setting
from bertscope.core.registry import ReportSection, StudyPoint
from bertscope.studies.common import (
    HeadRunner,
    StudyResult,
    draw_reference,
    execute,
    finetune_config,
    finish_study,
    plot_title,
    score_label,
)
from bertscope.studies.seed_points import (
    by_seed,
    comparison,
    comparison_columns,
    error_bars,
    metric_means,
    point,
    run_seeds,
    score_columns,
    seed_config,
    seed_note,
)
from bertscope.studies.store import RunSpec, RunStore

__all__ = ["Axis", "axis_points", "run_axis", "seed_runs"]


@dataclass(frozen=True)
class Axis:
    """One study axis, as data.

    ``study``: the command (and its files' names). ``option``: the fine-tuning option a value sets, also the axis
    the report and ``replicate`` see. ``column``: its column in the table and in each run record. ``word``: run ids
    are ``"<word> <value>"``. ``values``: the values, from the study's options (in the order run and shown).
    ``reference``: the value every other is compared with ("as good as", within ``--tolerance``), or None.
    ``versus``: the comparison's table column. ``also_worse``: also record the verdict "worse than the reference".
    ``tokens``: the token vectors the shared encoder pass keeps. ``fixed``: the settings every value shares, for
    titles. ``context``: what the summary records beside the best value (in order). ``plot``: ``line`` (values are
    positions) or ``bars``; ``what``, ``xlabel``, ``label``: the plot's title, x label and legend entry; ``note``:
    what one point is called in the plot's note on its error bars. ``section``: the report section's heading and
    ``noun`` (its kind follows ``plot``), and its plots' file-name ``stem``.
    """

    study: str
    option: str
    column: str
    word: str
    values: Callable[[Any], list[Any]]
    reference: Callable[[Sequence[Any]], Any]
    versus: str
    tokens: Callable[[Any, Sequence[Any]], list[str]]
    fixed: Callable[[Any], str]
    context: Callable[[Any, Sequence[Mapping[str, Any]]], dict[str, Any]]
    plot: str
    what: str
    xlabel: str
    label: str
    note: str
    heading: str
    noun: str = ""
    text: str = ""
    stem: str = ""
    also_worse: bool = False
    #: the option's text for a value, when one run has two spellings (the last layer, ``6`` or ``-1``): one spelling
    #: gives the run one identity, so another study's run of the same configuration is reused, not run again
    canonical: Callable[[Any, Any], str] | None = None

    def spec(self, config: Any, value: Any) -> RunSpec:
        """The run of one value: the study's fine-tuning options with this option set."""
        text = self.canonical(config, value) if self.canonical else str(value)
        return RunSpec(f"{self.word} {value}", {self.column: value}, finetune_config(config, **{self.option: text}))

    def points(self, payload: Mapping[str, Any]) -> list[StudyPoint]:
        """One point per value (``({option: value}, score)``); with several seeds one per run, seed as replicate."""
        return axis_points(payload, self.column, self.option)

    def section(self) -> ReportSection:
        """The report section of this study's runs (and of any sweep that varies ``option``)."""
        return ReportSection(self.option, self.plot, self.heading, noun=self.noun, text=self.text,
                             stem=self.stem, points=self.points)


def axis_points(payload: Mapping[str, Any], column: str, axis: str) -> list[StudyPoint]:
    """The (axes, score) points of a one-axis study's payload: its table's rows, or with several seeds its runs."""
    if (payload.get("config") or {}).get("seeds"):  # several seeds: one point per run, seed as the replicate
        return [({axis: r[column], "seed": r.get("seed")}, float(r["score"])) for r in payload.get("runs") or []
                if column in r and r.get("score") is not None]
    return [({axis: row[column]}, float(row["score"])) for row in payload.get("table") or []
            if column in row and row.get("score") is not None]


def seed_runs(study: str, config: Any, seeds: Sequence[int],
              runs: Callable[[Any, str], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every seed's runs (``runs(single-seed options, progress label)``), seed after seed: a seed's runs are the
    single-seed study's (same ids and hashes)."""
    records: list[dict[str, Any]] = []
    for seed in seeds:
        records += runs(seed_config(config, seed), study if len(seeds) == 1 else f"{study}, seed {seed}")
    return records


def run_axis(axis: Axis, config: Any) -> StudyResult:
    """Run the study ``axis`` declares with ``config`` (resuming finished runs) and write its files."""
    values = axis.values(config)
    store = RunStore.of(config)
    runner = HeadRunner(axis.tokens(config, values), progress=progress_setting(config.output.progress, config.tracking.log))
    seeds = run_seeds(config)
    records = seed_runs(axis.study, config, seeds, lambda per_seed, desc: execute(
        [axis.spec(per_seed, v) for v in values], runner, store,
        progress=progress_setting(config.output.progress, config.tracking.log), desc=desc, reuse_siblings=True))
    reference = axis.reference(values)
    reference_runs = None if reference is None else by_seed(records, seeds, **{axis.column: reference})
    table, comparisons = [], []
    for value in values:
        runs = by_seed(records, seeds, **{axis.column: value})
        versus = (None if reference_runs is None or value == reference
                  else comparison(config.data.task, runs, reference_runs, "no_worse", config.tolerance))
        worse: dict[str, Any] = {}
        if versus is not None:
            if axis.also_worse:
                worse = {"verdict_worse": stats.verdict(stats.Interval(**versus["difference"]), "worse")}
            comparisons.append({axis.column: value, "versus": reference, **versus, **worse})
        table.append({axis.column: value, **score_columns(point(runs)),
                      **metric_means([r for group in runs.values() for r in group]),
                      **comparison_columns(versus, axis.versus),
                      **({f"{axis.versus}_worse": worse.get("verdict_worse")} if axis.also_worse else {})})
    best = max(table, key=lambda row: row["score"])
    summary = {f"best_{axis.word}": best[axis.column], "best_score": best["score"], **axis.context(config, records),
               "seeds": list(seeds), "tolerance": config.tolerance, "comparisons": comparisons}
    fixed = axis.fixed(config)

    def plot(ax: Any) -> None:
        bars = error_bars(table)
        if axis.plot == "line":
            xs = [r[axis.column] for r in table]
            if bars is None:
                ax.plot(xs, [r["score"] for r in table], marker="o", label=axis.label)
            else:
                ax.errorbar(xs, [r["score"] for r in table], yerr=bars, marker="o", capsize=3,
                            label=f"{axis.label} (mean, 95% interval)")
            draw_reference(ax, config.data.task, records)
            ax.set_xticks(xs)
        else:
            ax.bar(range(len(table)), [r["score"] for r in table], yerr=bars, capsize=3,
                   label=axis.label + (" (mean, 95% interval)" if bars else ""))
            draw_reference(ax, config.data.task, records)
            ax.set_xticks(range(len(table)), [r[axis.column] for r in table], rotation=20)
        ax.set_xlabel(axis.xlabel)
        ax.set_ylabel(score_label(config.data.task))
        ax.set_title(plot_title(config, f"{axis.what} ({fixed})", seed_note(config, axis.note)), fontsize=9)
        ax.grid(alpha=0.3, **({} if axis.plot == "line" else {"axis": "y"}))
        ax.legend(fontsize=8)

    return finish_study(axis.study, config, table, records, summary, plot=plot,
                        title=f"{axis.study} {config.data.task}: {fixed}"
                              + (f", {len(seeds)} seeds" if len(seeds) > 1 else ""), row_key=axis.column)
