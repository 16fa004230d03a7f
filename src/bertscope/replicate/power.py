"""``bertscope power``: how noisy each claim's paired difference is at a training size, and the seeds it needs.

A budget that decides claims is sized from measured noise, not from a guess. For each setting (task x training
examples x epochs) this runs the paper's protocol with fixed seeds through the same sweep machinery as
``replicate`` (so the runs have the ids replicate's runs have, and a store shared with a replication reuses them),
reads every claim row as replicate does (:func:`bertscope.replicate.claims.claims_for`), and reports per row:

* the mean paired difference and its standard deviation over seeds (the noise that decides how many seeds a claim
  needs: shared data order and head initialisation cancel in the pair, so it is far below either side's own);
* the seeds that row needs, as a plug-in estimate (true difference and standard deviation taken to be the measured
  ones): the smallest n whose 95% t interval clears the verdict's nearest boundary, and the first look of the
  budget's adaptive plan whose (stricter) interval does;
* for the rows of studies, whose run records keep their dev predictions, the same standard deviation when each run
  is scored on a smaller seeded subset of the dev set (the same examples for every run): the dev-size axis without
  training again;
* the seconds one seed of the protocol took at that setting (from the store's run durations).

``docs/power.md`` is this command's ``power.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bertscope.core.options import parse_name_list, parse_seed_list
from bertscope.core.registry import CommandInfo
from bertscope.core.results import write_json_atomic, write_text_atomic
from bertscope.core.sequential import LookPlan
from bertscope.core.stats import margin, t_interval, tolerance_label
from bertscope.data.glue import compute_metrics
from bertscope.replicate.claims import Claim, RunRow, claims_for
from bertscope.replicate.config import PowerConfig, parse_settings
from bertscope.replicate.protocols import BUDGETS, TOLERANCES, Protocol, protocol
from bertscope.replicate.runner import located, rows_from_store
from bertscope.runs.store import ResultStore
from bertscope.sweep.commands import ANALYSES
from bertscope.sweep.config import SweepConfig
from bertscope.sweep.driver import run_sweep

__all__ = ["COMMAND", "PowerResult", "PowerRow", "Setting", "resampled", "run_power", "seeds_needed", "settings_of"]

#: The most seeds a plug-in estimate looks for; beyond it a row is reported as needing more.
MAX_SEEDS = 64


@dataclass(frozen=True)
class Setting:
    """One point of the power study: the task the fine-tuning claims run on, training examples and epochs."""

    task: str
    max_train: int | None
    epochs: int

    @property
    def label(self) -> str:
        train = "all" if self.max_train is None else str(self.max_train)
        return f"{self.task}, {train} train x {self.epochs} epoch{'s' if self.epochs != 1 else ''}"

    def sweep_name(self, paper: str) -> str:
        return f"power-{paper}-{self.task}-t{self.max_train or 'all'}-e{self.epochs}"

    def options(self) -> dict[str, Any]:
        return {"max_train": self.max_train, "epochs": self.epochs}


@dataclass(frozen=True)
class PowerRow:
    """One claim row at one setting (and dev size): its paired difference's mean and standard deviation over seeds,
    and the seeds it needs (None: more than :data:`MAX_SEEDS`, or a mean on the boundary)."""

    claim: str
    scope: str
    kind: str
    tolerance: float | None
    setting: str
    dev_examples: int | None  # None: every dev example the runs were scored on
    seeds: int
    mean: float | None
    std: float | None
    seeds_fixed: int | None
    seeds_looks: int | None
    learned: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def settings_of(config: PowerConfig) -> list[Setting]:
    """Every (task, training examples, epochs) the config names, in that order."""
    return [Setting(t, n, e) for t, n, e in parse_settings(config.settings)]


def seeds_needed(mean: float | None, std: float | None, kind: str, tolerance: float | None,
                 looks: LookPlan | None = None) -> int | None:
    """The fewest seeds whose interval, centred on ``mean`` with ``std``, lies wholly on one side of the nearest
    boundary: at 95% for every n (``looks`` None), or at the level of each look of ``looks`` (only its seed
    counts). None when no n up to :data:`MAX_SEEDS` (or the last look) does it."""
    if mean is None or std is None or not (math.isfinite(mean) and math.isfinite(std)):
        return None
    clearance = margin(mean, kind, tolerance)
    candidates = (range(2, MAX_SEEDS + 1) if looks is None else looks.looks)
    for index, n in enumerate(candidates):
        level = 0.95 if looks is None else looks.level(index)
        bounds = t_interval(0.0, std, n, level)
        if bounds is not None and bounds[1] < clearance:
            return n
    return None


def resampled(rows: Sequence[RunRow], size: int, *, seed: int = 0) -> tuple[list[RunRow], set[str]]:
    """``rows`` with every study run rescored on ``size`` dev examples drawn once (seeded; the same examples for
    every run, as a smaller dev set would be), and the ids of the rows whose every run was rescored (runs whose
    records keep no dev predictions, and ``finetune`` runs, cannot be)."""
    out: list[RunRow] = []
    rescored_ids: set[str] = set()
    for row in rows:
        command = ANALYSES.get(row.experiment)  # the protocol names a study's experiment after its command
        records = (row.payload or {}).get("runs")
        if not row.points or not isinstance(records, list) or command is None or command.study_points is None:
            out.append(row)
            continue
        rescored, complete = [], True
        for record in records:
            dev = record.get("dev") or {}
            labels, predictions = dev.get("labels") or {}, dev.get("predictions") or {}
            split = next(iter(labels), None)
            task = record.get("task") or row.task
            if split is None or task is None or len(labels[split]) < size:
                complete = False
                rescored.append(record)
                continue
            chosen = np.random.default_rng(seed).choice(len(labels[split]), size, replace=False)
            score = compute_metrics(task, [predictions[split][i] for i in chosen],
                                    [labels[split][i] for i in chosen])["combined_score"]
            rescored.append({**record, "score": score})
        # the points are read from the runs (a single-seed study's points otherwise come from its table)
        config = {**((row.payload or {}).get("config") or {}), "seeds": str(row.seed)}
        payload = {**(row.payload or {}), "runs": rescored, "config": config}
        out.append(replace(row, payload=payload, points=tuple(command.study_points(payload))))
        if complete:
            rescored_ids.add(row.id)
    return out, rescored_ids


def _row(claim: Claim, setting: Setting, dev: int | None, looks: LookPlan) -> PowerRow:
    d = claim.difference
    mean = d.mean if d.n else None
    learned = "" if claim.heads is None else f"{claim.heads[0]}/{claim.heads[1]}"
    return PowerRow(claim.id, claim.scope, claim.kind, claim.tolerance, setting.label, dev, d.n, mean, d.std,
                    seeds_needed(mean, d.std, claim.kind, claim.tolerance),
                    seeds_needed(mean, d.std, claim.kind, claim.tolerance, looks), learned)


@dataclass(frozen=True)
class PowerResult:
    """The study: every row at every setting and dev size, the seconds per seed of each setting, the files."""

    config: PowerConfig
    rows: tuple[PowerRow, ...]
    seconds_per_seed: dict[str, float]
    files: dict[str, str]
    wall_seconds: float
    failed: int

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        from bertscope.core.results import environment_info

        return {"command": "power", "format": "bertscope-power/1", "config": self.config.to_dict(),
                "environment": environment_info(), "rows": [r.to_dict() for r in self.rows],
                "seconds_per_seed": self.seconds_per_seed, "files": self.files, "wall_seconds": self.wall_seconds,
                "failed_runs": self.failed}

    def metrics(self) -> dict[str, float]:
        return {"rows": float(len(self.rows)), "failed_runs": float(self.failed), "wall_seconds": self.wall_seconds}

    def render(self) -> Any:
        from rich.table import Table

        table = Table(title=f"power study: {self.config.paper}")
        for column in ("claim", "scope", "setting", "dev", "n", "mean", "paired sd", "seeds (95%)", "seeds (looks)"):
            table.add_column(column)
        for r in self.rows:
            table.add_row(r.claim, r.scope, r.setting, _dev(r.dev_examples), str(r.seeds), _num(r.mean),
                          _num(r.std), _seeds(r.seeds_fixed), _seeds(r.seeds_looks))
        return table


def _num(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:+.4f}"


def _seeds(value: int | None) -> str:
    return f"> {MAX_SEEDS}" if value is None else str(value)


def _dev(value: int | None) -> str:
    return "all" if value is None else str(value)


def _markdown(result_rows: Sequence[PowerRow], per_seed: Mapping[str, float], config: PowerConfig,
              looks: LookPlan, command: str) -> str:
    lines = [f"# Power study: {config.paper} on {config.model or 'the embedded model'}", "",
             f"Regenerate: `{command}`", "",
             "Each row is one claim row of `replicate` at one setting: the mean paired difference (claimed minus "
             "reference side) and its standard deviation over the seeds run, and the seeds it needs if the true "
             "difference and noise are the measured ones (a plug-in estimate): with one 95% interval, and at the "
             f"looks of `--budget {config.budget}` ({', '.join(map(str, looks.looks))} seeds, alpha spent over "
             "them). `> " f"{MAX_SEEDS}` means the mean sits too close to a boundary for any affordable number of "
             "seeds. Rows at a smaller dev size rescore every study run on the same seeded subset of its dev "
             "predictions (no new training); rows of `finetune` runs (freezing) and cross stages are not rescored.",
             "", "## Seconds per seed", "", "| setting | seconds per seed of the whole protocol |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in per_seed.items()]
    lines += ["", "## Rows", "", "| claim | scope | kind | setting | dev | n | mean | paired sd | seeds (95%) | "
              "seeds (looks) | learned heads |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result_rows:
        kind = f"{r.kind} {tolerance_label(r.kind, r.tolerance)}".rstrip()
        lines.append(f"| {r.claim} | {r.scope} | {kind} | {r.setting} | {_dev(r.dev_examples)} | {r.seeds} | "
                     f"{_num(r.mean)} | {_num(r.std)} | {_seeds(r.seeds_fixed)} | {_seeds(r.seeds_looks)} | "
                     f"{r.learned} |")
    lines += ["", "Tolerances: " + ", ".join(f"{k} ±{v:g}" for k, v in TOLERANCES.items() if k.startswith("p2."))]
    return "\n".join(lines) + "\n"


def _plan(config: PowerConfig, setting: Setting, seeds: tuple[int, ...]) -> Protocol:
    models: tuple[str | None, ...] = (config.model,) if config.model else (None,)
    plan = protocol(config.paper or "", config.budget, models=models, tasks=(setting.task,), seeds=seeds,
                    finetune=setting.options())
    if config.experiments:
        keep = set(parse_name_list(config.experiments, option="--experiments"))
        plan = replace(plan, experiments=tuple(e for e in plan.experiments if e.name in keep))
    return located(replace(plan, sweep_name=setting.sweep_name(plan.paper)), config.data_dir)


def _command_line(config: PowerConfig) -> str:
    import shlex

    parts = ["bertscope", "power", config.paper or "", "--budget", config.budget, "--settings", config.settings,
             "--seeds", config.seeds, "--dev-sizes", config.dev_sizes]
    for flag, value in (("--experiments", config.experiments), ("--model", config.model),
                        ("--data-dir", config.data_dir), ("--store", config.store), ("--out", config.out)):
        if value is not None:
            parts += [flag, value]
    return shlex.join(parts)


def run_power(config: PowerConfig) -> PowerResult:
    """Run (or resume) every setting's protocol, then write power.md and power.json; see the module docstring."""
    start = time.perf_counter()
    seeds = parse_seed_list(config.seeds)
    looks = BUDGETS[config.budget].look_plan(config.paper or "paper2")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    store_path = Path(config.store) if config.store else out / "power.db"
    sizes = [None if s == "all" else int(s) for s in parse_name_list(config.dev_sizes, option="--dev-sizes")]
    rows: list[PowerRow] = []
    per_seed: dict[str, float] = {}
    failed = 0
    for setting in settings_of(config):
        plan = _plan(config, setting, seeds)
        spec_path = out / f"{plan.name}.yaml"
        write_text_atomic(spec_path, yaml.safe_dump(plan.to_spec(), sort_keys=False))
        sweep = run_sweep(SweepConfig(spec=str(spec_path), store=str(store_path), execution=config.execution,
                                      progress=config.progress))
        failed += sweep.counts.get("failed", 0)
        with ResultStore(store_path, create=False) as store:
            runs = rows_from_store(store, plan.name)
            durations = [r.duration for r in store.records(sweep=plan.name) if r.status == "done" and r.duration]
        per_seed[setting.label] = sum(durations) / len(seeds)
        for size in sizes:
            chosen, rescored = (runs[0], set()) if size is None else resampled(runs[0], size)
            rows += [_row(claim, setting, size, looks) for claim in claims_for(plan.paper, chosen)
                     if claim.difference.n and (size is None or (claim.runs and set(claim.runs) <= rescored))]
    command = _command_line(config)
    markdown = _markdown(rows, per_seed, config, looks, command)
    files = {"markdown": str(out / "power.md"), "json": str(out / "power.json")}
    result = PowerResult(config, tuple(rows), per_seed, files, time.perf_counter() - start, failed)
    write_text_atomic(Path(files["markdown"]), markdown)
    write_json_atomic(Path(files["json"]), result.to_dict())
    return result


COMMAND = CommandInfo("power", PowerConfig, run_power, PowerResult,
                      "measure the noise of each claim's paired difference per training size, epochs and dev size, "
                      "and the seeds each claim needs (power.md, power.json): what sizes a replicate budget",
                      sweepable=False)
