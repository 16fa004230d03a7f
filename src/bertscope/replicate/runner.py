"""``bertscope replicate paper1|paper2``: run a paper's protocol as a sweep, then turn its store into claims.

The protocol (:mod:`.protocols`) is written to ``OUT/spec.yaml`` and run by the sweep driver into the store, so a
re-run resumes: finished runs are skipped (the result says how many ran and how many were skipped), interrupted
ones start again. The claims (:mod:`.claims`) are computed from the store's records of this sweep only, and written
by :mod:`.render`. Each run's effective options (the config it ran with, whatever the commands' defaults were then)
go into claims.json.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_name_list, parse_seed_list
from bertscope.core.registry import CommandInfo
from bertscope.core.results import write_text_atomic
from bertscope.core.sequential import LookPlan
from bertscope.data.baselines import dev_provenances, task_baseline
from bertscope.replicate.claims import Claim, RunRow, claims_for
from bertscope.replicate.claims_files import (
    claims_markdown,
    claims_payload,
    learned_cell,
    seeds_cell,
    write_claims,
)
from bertscope.replicate.config import ReplicateConfig, training_size
from bertscope.replicate.cost import Estimate, compute_fractions, estimate_spec, fraction_line
from bertscope.replicate.protocols import BUDGETS, PAPERS, Protocol, Stage, arm_options, protocol
from bertscope.runs.store import ResultStore, RunRecord
from bertscope.sweep.commands import ANALYSES
from bertscope.sweep.config import SweepConfig, executor_flags, worker_threads
from bertscope.sweep.driver import SweepResult, run_sweep

__all__ = ["COMMAND", "ReplicateResult", "located", "look_plan", "protocol_of", "rows_from_store", "run_replicate"]


@dataclass(frozen=True)
class ReplicateResult:
    """A replication: its protocol, what the sweep did this time, the claims and the files written."""

    config: ReplicateConfig
    protocol: Protocol
    sweep: SweepResult
    claims: tuple[Claim, ...]
    files: dict[str, str]
    wall_seconds: float
    estimate: Estimate | None = None
    compute: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        return self.sweep.exit_code

    def to_dict(self) -> dict[str, Any]:
        from bertscope.core.results import environment_info

        return {"command": "replicate", "config": self.config.to_dict(), "environment": environment_info(),
                "sweep": {"name": self.sweep.name, "store": self.sweep.store, "counts": self.sweep.counts,
                          "executed": self.sweep.executed, "skipped": self.sweep.skipped,
                          "dry_run": self.sweep.dry_run},
                "claims": [c.to_dict() for c in self.claims], "files": self.files,
                "wall_seconds": self.wall_seconds, "estimate": self.estimate.to_dict() if self.estimate else None,
                "compute": self.compute}

    def metrics(self) -> dict[str, float]:
        out = {f"verdict.{v}": float(sum(1 for c in self.claims if c.verdict == v))
               for v in ("supported", "not supported", "inconclusive")}
        out["executed.done"] = float(self.sweep.executed.get("done", 0))
        out["claims.not_learned"] = float(sum(1 for c in self.claims if c.heads and c.heads[0] < c.heads[1]))
        out["skipped"] = float(self.sweep.skipped)
        out["wall_seconds"] = self.wall_seconds
        return out

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        if self.sweep.dry_run:
            return Group(self.sweep.render(), self.estimate.line() if self.estimate else "",
                         f"spec written to {self.files.get('spec')}; nothing ran")
        table = Table(title=f"replicate {self.protocol.paper} --budget {self.protocol.budget.name}")
        for column in ("claim", "scope", "difference", "verdict", "seeds", "learned heads"):
            table.add_column(column)
        for c in self.claims:
            table.add_row(c.statement, c.scope, c.difference.format(3), c.verdict, seeds_cell(c), learned_cell(c))
        runs = (f"{self.sweep.executed.get('done', 0)} run(s) done now, {self.sweep.executed.get('failed', 0)} "
                f"failed, {self.sweep.skipped} already done and skipped; {self.wall_seconds:.0f} s")
        if self.compute:
            runs += f"; {fraction_line(self.compute)}"
        return Group(table, runs, f"claims: {self.files.get('markdown')} · {self.files.get('html')}")


def look_plan(config: ReplicateConfig) -> LookPlan | None:
    """The looks of adaptive seeds (``--seeds auto``, the default of a budget with looks), or None for fixed
    seeds."""
    budget = BUDGETS[config.budget]
    adaptive = config.seeds == "auto" or (config.seeds is None and (bool(budget.looks.get(config.paper or ""))
                                                                    or config.max_seeds is not None))
    return budget.look_plan(config.paper or "", config.max_seeds) if adaptive else None


def protocol_of(config: ReplicateConfig, rounds: Mapping[str, int | Sequence[Stage]] | None = None) -> Protocol:
    """The protocol a config asks for (models and tasks parsed from their comma lists); ``rounds``: the seed count
    (or stages) of each experiment in this round of adaptive seeds."""
    models: tuple[str | None, ...] = (parse_name_list(config.model, option="--model") if config.model else (None,))
    tasks = parse_name_list(config.tasks, option="--tasks") if config.tasks else None
    seeds = parse_seed_list(config.seeds) if config.seeds not in (None, "auto") else None
    plan = protocol(config.paper or "", config.budget, models=models, tasks=tasks, seeds=seeds, rounds=rounds,
                    finetune=training_size(config))
    return located(plan, config.data_dir)


def located(plan: Protocol, data_dir: str | None) -> Protocol:
    """Every run of ``plan`` that reads GLUE gets ``--data-dir`` (a location option: the runs' ids do not
    change)."""
    if data_dir is None:
        return plan
    return replace(plan, experiments=tuple(
        replace(e, base={**e.base, "data_dir": data_dir})
        if "data_dir" in ANALYSES[e.command].config.field_names() else e for e in plan.experiments))


def _command_line(config: ReplicateConfig) -> str:
    parts = ["bertscope", "replicate", config.paper or "", "--budget", config.budget]
    for flag, value in (("--seeds", config.seeds), ("--max-seeds", config.max_seeds), ("--model", config.model),
                        ("--tasks", config.tasks), ("--data-dir", config.data_dir),
                        ("--max-train", config.max_train), ("--epochs", config.epochs), ("--store", config.store),
                        ("--out", config.out)):
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts + executor_flags(config.execution))


def rows_from_store(store: ResultStore, sweep: str) -> tuple[list[RunRow], list[dict[str, Any]]]:
    """The done runs of ``sweep`` as claim rows (one per membership: a run may serve several experiments), and
    every run's record for claims.json: id, experiment, axes, status and its effective options."""
    rows: list[RunRow] = []
    runs: list[dict[str, Any]] = []
    for record in store.records(sweep=sweep, memberships=True):
        runs.append(_run_entry(record))
        if record.status != "done" or record.axes is None:  # pre-steps (deepen) carry no claim on their own
            continue
        payload = store.payload(record.id)
        info = ANALYSES.get(record.command)
        points = tuple(info.study_points(payload)) if info and info.study_points and payload else ()
        trains = record.command == "finetune" or bool(info and info.study_points)
        rows.append(RunRow(record.id, record.experiment or "", dict(record.axes), dict(record.metrics), payload,
                           points, dict(record.config),
                           _chances(payload, dict(record.axes), dict(record.config)) if trains else {}))
    return rows, runs


def _chances(payload: Any, axes: dict[str, Any], options: dict[str, Any]) -> dict[str, float]:
    """Task -> the majority-class score of the dev examples a run was scored on (bertscope.data.baselines), for the
    claims' "both sides at chance" guard; a task whose labels cannot be read is left out."""
    named = axes.get("task", options.get("task")) or options.get("tasks") or ""
    out: dict[str, float] = {}
    for task in (t.strip() for t in str(named).split(",") if t.strip()):
        try:
            baseline = task_baseline(task, dev_provenances(payload or {}, task))
        except (BertscopeError, OSError, ValueError, KeyError):
            continue
        value = None if baseline is None else baseline.value("final.combined_score")
        if value is not None:
            out[task] = float(value)
    return out


def _run_entry(record: RunRecord) -> dict[str, Any]:
    return {"id": record.id, "command": record.command, "experiment": record.experiment, "axes": record.axes,
            "label": record.label, "status": record.status, "error": record.error, "duration": record.duration,
            "options": record.config}


Rounds = dict[str, tuple[Stage, ...]]


def _next_round(claims: Sequence[Claim], rows: Sequence[RunRow], rounds: Mapping[str, Sequence[Stage]],
                commands: Mapping[str, str]) -> Rounds:
    """Each experiment's stages for the next round. An experiment grows to as many seeds as the most any of its
    open claims' next look reads (it serves every claim that rests on one of its runs); decided claims add
    nothing. The new seeds train only the arms open claims read (``commands``: experiment -> its command, which
    says how a run is narrowed, :data:`~bertscope.replicate.protocols.ARM_OPTIONS`); an open claim that reads an
    experiment whole keeps its runs whole."""
    experiment_of = {row.id: row.experiment for row in rows}
    seeds = {name: stages[-1].seeds for name, stages in rounds.items()}
    arms: dict[str, set[str]] = {}
    whole: set[str] = set()
    for claim in claims:
        if claim.needs_seeds:
            for name in {experiment_of[run] for run in claim.runs if run in experiment_of} & set(rounds):
                seeds[name] = max(seeds[name], claim.needs_seeds)
                if name in claim.arms:
                    arms.setdefault(name, set()).update(claim.arms[name])
                else:
                    whole.add(name)
    grown = {name: tuple(stages) for name, stages in rounds.items()}
    for name, count in seeds.items():
        if count > grown[name][-1].seeds:
            narrow = None if name in whole else arms.get(name)
            grown[name] += (Stage(count, arm_options(commands.get(name, ""), narrow)),)
    return grown


def _write_spec(path: Path, plan: Protocol, config: ReplicateConfig) -> None:
    write_text_atomic(path, f"# {PAPERS[plan.paper]}\n# written by: {_command_line(config)}\n"
                      + yaml.safe_dump(plan.to_spec(), sort_keys=False))


def _combined(rounds: Sequence[SweepResult]) -> SweepResult:
    """One sweep result for the rounds of an adaptive replication: runs executed in any round, skipped in the
    first (later rounds skip what earlier rounds ran), the store's final counts."""
    executed = {key: sum(r.executed.get(key, 0) for r in rounds) for key in ("done", "failed")}
    return replace(rounds[-1], executed=executed, skipped=rounds[0].skipped,
                   wall_seconds=sum(r.wall_seconds for r in rounds),
                   failures=tuple(f for r in rounds for f in r.failures))


def run_replicate(config: ReplicateConfig) -> ReplicateResult:
    """Run (or resume) the protocol, then write the claims; see the module docstring.

    With adaptive seeds the protocol runs in rounds: every experiment starts at the first look's seeds; after each
    round the claims are read at their looks, and only the experiments of claims still open get more seeds (up to
    what their next look reads). A round that adds no run ends it, so failed runs cannot make it loop."""
    start = time.perf_counter()
    looks = look_plan(config)
    plan = protocol_of(config)
    rounds: Rounds | None = None if looks is None else {e.name: (Stage(looks.looks[0]),) for e in plan.experiments}
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    store_path = Path(config.store) if config.store else out / "replicate.db"
    spec_path = out / "spec.yaml"
    files = {"spec": str(spec_path)}
    # the most it can cost: adaptive seeds may stop sooner
    largest = plan if looks is None else protocol_of(config, {e.name: looks.max_seeds for e in plan.experiments})
    estimate = estimate_spec(largest.to_spec(), store_path.parent, gpu_tflops=config.gpu_tflops,
                             utilisation=config.gpu_utilisation,
                             announce=plan.budget.name == "full" and not config.dry_run)
    sweeps: list[SweepResult] = []
    while True:
        plan = protocol_of(config, rounds)
        _write_spec(spec_path, plan, config)
        sweeps.append(run_sweep(SweepConfig(spec=str(spec_path), store=str(store_path),
                                            execution=config.execution,
                                            retry_failed=config.retry_failed and len(sweeps) == 0,
                                            dry_run=config.dry_run, progress=config.progress)))
        if config.dry_run:
            return ReplicateResult(config, plan, sweeps[-1], (), files, time.perf_counter() - start, estimate)
        with ResultStore(store_path, create=False) as store:
            rows, runs = rows_from_store(store, plan.name)
        claims = tuple(claims_for(plan.paper, rows, looks))
        if rounds is None:
            break
        grown = _next_round(claims, rows, rounds, {e.name: e.command for e in plan.experiments})
        if grown == rounds:
            break
        rounds = grown
    sweep = _combined(sweeps)
    # adds each done run's model FLOPs and compute fraction to its entry; the peak at a worker's threads
    compute = compute_fractions(runs, threads=worker_threads(config.execution))
    title = f"bertscope replicate {plan.paper} --budget {plan.budget.name}: claims"
    context = {"paper": plan.paper, "reference": PAPERS[plan.paper], "budget": plan.budget.name,
               "budget_note": plan.budget.note, "models": [m or "default (embedded MiniLM-L6-H384)"
                                                           for m in plan.models],
               "tasks": list(plan.tasks),
               "seeds": list(plan.budget.seeds) if rounds is None else {
                   "auto": looks.to_dict() if looks else None,
                   "per_experiment": {name: stages[-1].seeds for name, stages in rounds.items()},
                   # the seeds each round added and the options narrowing them to the arms still open
                   "stages": {name: [s.to_dict() for s in stages] for name, stages in rounds.items()}},
               "store": str(store_path),
               "sweep": plan.name, "spec": str(spec_path), "command": _command_line(config),
               "runs_done": sum(1 for r in runs if r["status"] == "done"),
               "runs_failed": sum(1 for r in runs if r["status"] == "failed"),
               "estimate": estimate.to_dict(), "compute": compute}
    markdown = claims_markdown(title, claims, command=_command_line(config), assumptions=plan.assumptions,
                               context={k: v for k, v in context.items()
                                        if k not in ("command", "reference", "estimate", "compute")},
                               header=(fraction_line(compute), f"Estimate: {estimate.line()}"))
    payload = claims_payload(claims, context=context, assumptions=plan.assumptions, runs=runs)
    files.update(write_claims(out, title, markdown, payload))
    return ReplicateResult(config, plan, sweep, claims, files, time.perf_counter() - start, estimate,
                           compute)


COMMAND = CommandInfo("replicate", ReplicateConfig, run_replicate, ReplicateResult,
                      "run a paper's protocol (smoke/small/full budget) into a resumable store and write its claims "
                      "table (claims.md, claims.json, claims.html)", sweepable=False)
