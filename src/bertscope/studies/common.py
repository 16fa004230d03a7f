"""What every paper-2 study shares: a list of runs, their result store, a runner with the cached fast path,
and the result object / files (one JSON with every run, a CSV table, a plot as PNG, SVG and PDF) with the plots'
shared labels (the task and model in the title, the task's GLUE score in words, its majority-class line).

A study is a fixed grid plus a summary: a loop over :class:`~bertscope.studies.store.RunSpec` s, each one
fine-tuning configuration (a :class:`FinetuneConfig`). Its runs are kept in the same kind of store as a sweep's,
``OUT/runs.db`` (:mod:`bertscope.studies.store` over :mod:`bertscope.runs.store`), named by the one run identity
(:mod:`bertscope.runs.identity`: a study's run has the id a sweep's ``finetune`` run with the same options has). Each finished run is committed at once; running the same
command again loads finished runs instead of training them, a run that failed is reported (``--retry-failed`` runs
it again) and ``--overwrite`` starts over. ``bertscope status --store OUT/runs.db`` and ``bertscope report --store
OUT/runs.db`` read a study's folder as they read a sweep's store.

:class:`HeadRunner` runs a configuration through the one fine-tuning pipeline (:mod:`bertscope.finetune.pipeline`), exactly as
``finetune`` would. With a fully frozen encoder (``--freeze encoder``) and ``--cache-features`` (the studies' default)
the runs share the model, the data and the cached token vectors (:mod:`bertscope.finetune.features`) of their data setting, so
the whole study costs one encoder pass (same seed, same numbers as live runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bertscope.core.device import resolve_device
from bertscope.core.figures import draw_baseline, figure_paths, save_figure
from bertscope.core.progress import Progress, progress_bar
from bertscope.core.results import environment_info, write_csv_atomic, write_json_atomic
from bertscope.data import glue
from bertscope.data.baselines import Baseline, dev_provenances, task_baseline
from bertscope.data.labels import metric_name, model_name, task_name
from bertscope.finetune.checkpoint import Checkpointer
from bertscope.finetune.config import FinetuneConfig
from bertscope.finetune.features import DEFAULT_TOKENS, cache_root
from bertscope.finetune.head import SelectingHead
from bertscope.finetune.learning import REMEDY
from bertscope.finetune.pipeline import (
    Shared,
    compute_features,
    data_key,
    is_cached,
    load_task_data,
    prepare,
    resolve_selection,
)
from bertscope.finetune.result import FinetuneResult
from bertscope.finetune.tracking import default_run_name, parse_report_to
from bertscope.models import families, loading
from bertscope.studies.seed_points import dev_record
from bertscope.studies.store import RunSpec, RunStore, run_checkpoints

__all__ = [
    "HeadRunner",
    "StudyResult",
    "dim_importance",
    "draw_reference",
    "execute",
    "finish_study",
    "model_shape",
    "not_learned",
    "plot_title",
    "score_label",
    "summarise",
    "tracked",
]

def finetune_config(study: FinetuneConfig, **changes: Any) -> FinetuneConfig:
    """The plain :class:`FinetuneConfig` of one run: the study's fine-tuning options with ``changes``.

    With ``--report-to``, its trackers write under the study's folder and its tracker run is named after the
    study's (:func:`tracked` adds the run id)."""
    flat = study.to_dict()
    values = {k: flat[k] for k in FinetuneConfig.field_names()}
    values.update(out=None, save_model=False, overwrite=False, progress=False, log="off")  # the study reports
    if parse_report_to(study.tracking.report_to):
        values.update(report_dir=study.tracking.report_dir or study.output.out, run_name=study.tracking.run_name or default_run_name(study))
    values.update(changes)
    if "progress" in changes and "log" not in changes:  # a run shown as it trains (cross's stages): as --log says
        values["log"] = study.tracking.log
    if values["freeze"].strip().lower() != "encoder":
        values["cache_features"] = False
    return FinetuneConfig(**values)


def tracked(config: FinetuneConfig, run_id: str) -> FinetuneConfig:
    """``config`` whose tracker run is ``<study run name>/<run id>``: one tracker run per point of the study (the
    name is no identity: hashes and numbers stay)."""
    if not parse_report_to(config.tracking.report_to):
        return config
    return config.replace(run_name=f"{config.tracking.run_name or default_run_name(config)}/{run_id}")


def model_shape(config: FinetuneConfig) -> tuple[int, int]:
    """(number of layers L, hidden size H) of ``config.encoder.model`` from its config file (no weights loaded)."""
    model_config = loading.load_config(config.encoder.model)
    return families.num_layers(model_config), families.hidden_size(model_config)


# ------------------------------------------------------------------------------------------------ running


class HeadRunner:
    """Runs the fine-tuning configurations of a study through the one pipeline (:func:`bertscope.finetune.pipeline.prepare`).

    Runs on a fully frozen encoder with ``--cache-features`` (the studies' default with ``--freeze encoder``) share
    one model, one tokenised data set and one encoder pass per data setting (:class:`~bertscope.finetune.pipeline.Shared`);
    ``tokens``: the token strategies to keep from that pass (the union of what the study needs).
    """

    def __init__(self, tokens: Sequence[str] = DEFAULT_TOKENS, *, progress: Progress = False) -> None:
        self.tokens = list(tokens)
        self.progress = progress
        self._shared: dict[tuple[Any, ...], Shared] = {}
        self.last_labels: dict[str, list[Any]] = {}  # the dev labels of the last run (kept in its record)

    is_cached = staticmethod(is_cached)

    def shared(self, config: FinetuneConfig) -> Shared:
        """Model, data and feature sets of ``config``'s data setting (the pretrained encoder, frozen)."""
        key = (*data_key(config), config.selection.include_special, config.encoder.dtype, config.encoder.device, config.encoder.attention,
               config.cache.cache_dir)
        if key not in self._shared:
            self._shared.clear()  # one data setting at a time: keeps memory bounded
            device = resolve_device(config.encoder.device)
            tokenizer = loading.load_tokenizer(config.encoder.model)
            data = load_task_data(config, tokenizer)
            loaded = loading.load_model(config.encoder.model, "base", device=device, dtype="float32",
                                        attention=config.encoder.attention)
            features = compute_features(config, loaded.model, data, tokens=self.tokens, source=loaded.source,
                                        progress=self.progress)
            root = str(cache_root(config.cache.cache_dir))
            self._shared[key] = Shared(tokenizer=tokenizer, loaded=loaded, data=data, features=features,
                                       feature_root=root)
        return self._shared[key]

    def train_vectors(self, config: FinetuneConfig) -> torch.Tensor:
        """The (pretrained, frozen) training-set vectors ``[N, n_layers, H]`` the head of ``config`` would read."""
        shared = self.shared(config)
        assert shared.features is not None and shared.loaded is not None
        layers = resolve_selection(config, shared.loaded.model).layers
        return shared.features["train"].select(config.selection.token, layers)

    def run(self, config: FinetuneConfig, *, want_head: bool = False,
            checkpoints: Checkpointer | None = None) -> tuple[FinetuneResult, SelectingHead | None]:
        """Run one configuration; return its result and its trained head (the head only with ``want_head``).
        ``checkpoints``: continue from there and checkpoint there while training (:func:`run_checkpoints`)."""
        run = prepare(config, self.shared(config) if self.is_cached(config) else None)
        self.last_labels = {split: [ex.label for ex in data.examples] for split, data in run.data.eval_sets.items()}
        run.checkpoints = checkpoints
        history = run.train()
        return run.result(history), (run.trained_head if want_head else None)


def dim_importance(head: SelectingHead) -> list[float]:
    """Per hidden dimension (of the H the encoder has), how much the trained head relies on it.

    The L2 norm of the first weight layer's input column(s) of that dimension (summed over the layers read), which
    for standardised-scale inputs is the usual weight-magnitude importance; dimensions the head never saw get 0.
    """
    spec = head.spec
    first = head.hidden[0] if head.hidden is not None else head.classifier
    assert isinstance(first, torch.nn.Linear)
    weight = first.weight.detach().float().cpu()  # [out, n_layers * n_dims], layer-major
    per_input = weight.norm(dim=0).view(len(spec.layers), len(spec.dims)).sum(dim=0)
    importance = [0.0] * spec.hidden_size
    for dim, value in zip(spec.dims, per_input.tolist()):
        importance[dim] = float(value)
    return importance


def run_record(spec: RunSpec, result: FinetuneResult, *, cached: bool, seconds: float,
               extra: dict[str, Any] | None = None, labels: Mapping[str, Sequence[Any]] | None = None) -> dict[str, Any]:
    """What a study stores per run: its id and columns, seed, score, metrics, selection, the final dev labels and
    predictions (``dev``, compact: for the single-seed bootstrap), and the full result."""
    payload = result.to_dict()
    dev = dev_record(result, labels) if labels else None
    return {"complete": True, "run_id": spec.run_id, **spec.params, "seed": result.config.encoder.seed,
            "score": result.final_score, "final": result.final, "dims": list(result.selection["dims"]),
            "layers": list(result.selection["layers"]), "token": result.selection["token"], "cached": cached,
            "seconds": seconds, "learned": result.learned, **(extra or {}), **({"dev": dev} if dev else {}),
            "result": payload}


def execute(specs: Sequence[RunSpec], runner: HeadRunner, store: RunStore, *, progress: Progress = True,
            want_head: Callable[[RunSpec], bool] | None = None,
            on_head: Callable[[RunSpec, SelectingHead], dict[str, Any]] | None = None,
            desc: str = "runs", reuse_siblings: bool = False) -> list[dict[str, Any]]:
    """Run every spec not finished yet (saving each record as it finishes); return all records in spec order."""
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("run ids of a study must be unique")
    records = []
    store.register(specs)
    bar = progress_bar(specs, progress=progress, desc=desc, unit="run", seconds=0)  # plain: a line per run
    with store.held():
        for spec in bar:
            needs_head = want_head is not None and want_head(spec)
            record = store.load(spec)
            resumed = record is not None
            if record is None and reuse_siblings and not needs_head:  # a sibling study's same run: not run twice
                record = store.reuse(spec)
            if record is None:
                start = time.perf_counter()
                checkpoints = run_checkpoints(store, spec)
                with store.running(spec):
                    result, head = runner.run(tracked(spec.config, spec.run_id), want_head=needs_head,
                                              checkpoints=checkpoints)
                    extra = on_head(spec, head) if (needs_head and head is not None and on_head is not None) else None
                    record = run_record(spec, result, cached=runner.is_cached(spec.config),
                                        seconds=time.perf_counter() - start, extra=extra, labels=runner.last_labels)
                store.save(spec, record)
                if checkpoints is not None and not spec.config.checkpoints.keep_checkpoints:
                    checkpoints.remove()
            record["resumed"] = resumed
            bar.set_postfix(score=f"{record['score']:.4f}")
            records.append(record)
    bar.close()
    return records


# ------------------------------------------------------------------------------------------------ results


def summarise(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min, max and count."""
    import statistics

    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "n": len(vals)}


@dataclass(frozen=True)
class StudyResult:
    """A finished study: its options, a table (one row per point of the study), every run, and extra findings."""

    study: str
    config: Any
    table: tuple[dict[str, Any], ...]
    runs: tuple[dict[str, Any], ...]
    summary: dict[str, Any]
    environment: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    title: str = ""
    row_key: str | tuple[str, ...] = "run_id"

    def to_dict(self) -> dict[str, Any]:
        return {"format": f"bertscope-{self.study}/1", "command": self.study, "complete": True,
                "config": self.config.to_dict(), "summary": self.summary, "table": list(self.table),
                "runs": list(self.runs), "files": self.files, "environment": self.environment}

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        keys = (self.row_key,) if isinstance(self.row_key, str) else self.row_key
        for row in self.table:
            label = "/".join(str(row.get(k)) for k in keys)
            for key, value in row.items():
                if key not in keys and isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[f"{label}.{key}"] = float(value)
        for key, value in self.summary.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = float(value)
        out["runs_not_learned"] = float(len(not_learned(self.runs)))
        return out

    def render(self) -> Any:
        from rich.table import Table

        table = Table(title=self.title or self.study)
        columns = [c for c in (self.table[0] if self.table else {}) if not isinstance(self.table[0][c], (list, dict))
                   and any(row.get(c) is not None for row in self.table)]  # no all-empty columns (one seed)
        for column in columns:
            table.add_column(column, justify="right")
        for row in self.table:
            table.add_row(*[f"{row.get(c):.4f}" if isinstance(row.get(c), float) else "-" if row.get(c) is None
                            else str(row.get(c)) for c in columns])
        resumed = sum(1 for r in self.runs if r.get("resumed"))
        table.caption = (f"{len(self.runs)} runs ({resumed} loaded from earlier), "
                         f"{sum(1 for r in self.runs if r.get('cached'))} on cached features"
                         + (f"; files in {Path(next(iter(self.files.values()))).parent}" if self.files else ""))
        flagged = not_learned(self.runs)
        if flagged:
            table.caption += (f"\n[bold red]WARNING: {len(flagged)} of {len(self.runs)} runs did not learn[/] (e.g. "
                              f"{', '.join(str(r.get('run_id')) for r in flagged[:3])}): their scores sit at the "
                              f"constant predictor's and say nothing about the features. Likely remedy: {REMEDY}")
        return table


def not_learned(runs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The runs of a study flagged as not having learned (:mod:`bertscope.finetune.learning`; records stored before the
    flag existed count as learned)."""
    return [r for r in runs if r.get("learned") is False]


def finish_study(study: str, config: Any, table: list[dict[str, Any]], runs: list[dict[str, Any]],
                 summary: dict[str, Any], *, plot: Callable[[Any], None] | None, title: str,
                 row_key: str | tuple[str, ...] = "run_id") -> StudyResult:
    """Build the result and, with ``config.output.out``, write ``<study>.json``, ``<study>.csv``, ``runs.csv`` and the plot
    (``<study>.png`` at 300 dpi, ``.svg``, ``.pdf``)."""
    files: dict[str, str] = {}
    if config.output.out is not None:
        out = Path(config.output.out)
        files = {"json": str(out / f"{study}.json"), "csv": str(out / f"{study}.csv"),
                 "runs_csv": str(out / "runs.csv")}
        if plot is not None:
            files.update({fmt: str(p) for fmt, p in figure_paths(out / f"{study}.png").items()})
    result = StudyResult(study=study, config=config, table=tuple(table), runs=tuple(runs), summary=summary,
                         environment=environment_info(), files=files, title=title, row_key=row_key)
    if config.output.out is not None:
        flat = lambda row: {k: (" ".join(map(str, v)) if isinstance(v, list) else v)  # noqa: E731
                            for k, v in row.items() if not isinstance(v, dict)}
        write_csv_atomic(files["csv"], [flat(r) for r in table])
        write_csv_atomic(files["runs_csv"], [flat({k: v for k, v in r.items() if k != "result"}) for r in runs])
        if plot is not None:
            _save_plot(plot, Path(files["png"]))
        write_json_atomic(files["json"], result.to_dict())
    return result


def _save_plot(draw: Callable[[Any], None], path: Path) -> None:

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.4))
    try:
        draw(ax)
        fig.tight_layout()
        save_figure(fig, path)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------ plot labels


def score_label(task: str | None) -> str:
    """The y label of a study's score plot: "RTE dev GLUE score (= accuracy)", "MRPC dev GLUE score (mean of F1
    and accuracy)"."""
    if not task:
        return "dev GLUE score"
    info = glue.get_task(task)
    metrics = [metric_name(m) for m in info.metrics]
    what = f"= {metrics[0]}" if len(metrics) == 1 else "mean of " + " and ".join(metrics)
    return f"{info.dir_name} dev GLUE score ({what})"


def plot_title(config: Any, what: str, note: str = "") -> str:
    """A study plot's title: what it shows for which task, then the model (and ``note``, e.g. the error bars)."""
    task = task_name(config.data.task) if config.to_dict().get("task") else ""
    second = " · ".join(p for p in (model_name(config.encoder.model), note) if p)
    return f"{task + ': ' if task else ''}{what}\n{second}"


def draw_reference(ax: Any, task: str | None, records: Sequence[dict[str, Any]],
                   metric: str = "score") -> Baseline | None:
    """Draw the task's majority-class line (from the dev labels the runs were scored on, when they came from a
    local GLUE copy; else uniform chance) across a score plot; returns it (None for regression or no task)."""
    if not task:
        return None
    baseline = task_baseline(task, dev_provenances(list(records), glue.get_task(task).name))
    value = None if baseline is None else baseline.value(metric)
    if baseline is None or value is None:
        return None
    where = f", {baseline.majority_label}" if baseline.kind == "majority" else ", uniform"
    draw_baseline(ax, value, f"{baseline.label} baseline ({value:.3f}{where})")
    return baseline
