"""The sweep driver: run every not-yet-done run of a spec and commit each outcome to the result store.

``run_sweep`` holds the store's lock, records the spec's runs as pending, resets runs a dead sweep left ``running``, skips runs already done (and failed
ones unless asked), hands the rest to an executor as their pre-steps finish, and commits each outcome as it
arrives. Killing it at any moment loses only the runs in flight, which the next invocation starts again; ids are
deterministic, so nothing is ever duplicated. Stopped by SIGTERM or Ctrl-C, it stops its workers (SIGTERM, then
SIGKILL after a grace period), notes the runs in flight as interrupted and re-raises, so the CLI exits 143 or 130;
killed outright, its workers follow it within seconds (:mod:`.executors`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertscope.core.errors import BertscopeError, Terminated
from bertscope.core.registry import CommandInfo
from bertscope.runs.store import STATUSES, ResultStore
from bertscope.sweep.config import SweepConfig
from bertscope.sweep.executors import Executor, Task, make_executor
from bertscope.sweep.spec import Run, SweepSpec, commands, load_spec

__all__ = ["COMMAND", "DRY_RUN_ROWS", "SweepResult", "default_runs_dir", "run_sweep"]

#: A dry run's table shows this many runs (a terminal table of 100,000 rows helps nobody; the result has them all).
DRY_RUN_ROWS = 200


def default_runs_dir(store: str | Path) -> Path:
    """``results.db`` -> ``results-runs/`` beside it: each run writes its own files to ``<runs dir>/<run id>``."""
    store = Path(store)
    return store.parent / f"{store.stem}-runs"


@dataclass(frozen=True)
class SweepResult:
    """What a sweep invocation did: runs planned, skipped, executed (done/failed), and the store's final counts."""

    config: SweepConfig
    name: str
    store: str
    runs_dir: str
    plan: tuple[dict[str, Any], ...]  # per run: id, command, experiment, axes, status before, status after
    counts: dict[str, int]
    executed: dict[str, int]
    skipped: int
    wall_seconds: float
    failures: tuple[dict[str, str], ...] = ()
    dry_run: bool = False
    #: a dry run imports no plugin: the plugins, their commands it needed and how many grid points those were
    plugins_not_loaded: tuple[str, ...] = ()
    commands_not_loaded: tuple[str, ...] = ()
    runs_not_loaded: int = 0

    @property
    def exit_code(self) -> int:
        """1 when any run of the sweep is failed, so scripts notice; 0 otherwise."""
        return 1 if self.counts.get("failed", 0) and not self.dry_run else 0

    def to_dict(self) -> dict[str, Any]:
        from bertscope.core.results import environment_info

        return {"command": "sweep", "config": self.config.to_dict(), "environment": environment_info(),
                "name": self.name, "store": self.store, "runs_dir": self.runs_dir, "counts": self.counts,
                "executed": self.executed, "skipped": self.skipped, "wall_seconds": self.wall_seconds,
                "failures": list(self.failures), "runs": list(self.plan), "dry_run": self.dry_run,
"plugins_not_loaded": list(self.plugins_not_loaded),
                "commands_not_loaded": list(self.commands_not_loaded), "runs_not_loaded": self.runs_not_loaded}

    def metrics(self) -> dict[str, float]:
        out = {f"runs.{k}": float(v) for k, v in self.counts.items()}
        out.update({f"executed.{k}": float(v) for k, v in self.executed.items()})
        out["wall_seconds"] = self.wall_seconds
        return out

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        parts: list[Any] = []
        if self.dry_run:
            plan = Table(title=f"sweep {self.name}: {len(self.plan)} runs (dry run)")
            for column in ("run id", "experiment", "axes", "status"):
                plan.add_column(column)
            for row in self.plan[:DRY_RUN_ROWS]:
                axes = ", ".join(f"{k}={v}" for k, v in (row.get("axes") or {}).items()) or "(pre-step)"
                plan.add_row(row["id"], row["experiment"], axes, row["status"])
            parts.append(plan)
            if len(self.plan) > DRY_RUN_ROWS:
                parts.append(f"... and {len(self.plan) - DRY_RUN_ROWS} more run(s) (every run: the API's "
                             "SweepResult.plan)")
            if self.plugins_not_loaded:
                parts.append(f"plugins not loaded (a dry run never imports them): {', '.join(self.plugins_not_loaded)}"
                             + (f"; {self.runs_not_loaded} run(s) of their commands "
                                f"({', '.join(self.commands_not_loaded)}) not listed" if self.runs_not_loaded else "")
                             + ("" if self.config.allow_plugins else "; a real run needs --allow-plugins"))
        table = Table(title=f"sweep {self.name} -> {self.store}")
        for column in ("", *STATUSES):
            table.add_column(column, justify="right")
        table.add_row("store", *(str(self.counts.get(s, 0)) for s in STATUSES))
        if not self.dry_run:
            table.add_row("this run", "", "", str(self.executed.get("done", 0)), str(self.executed.get("failed", 0)))
        parts.append(table)
        if self.failures:
            failed = Table(title="failed runs")
            failed.add_column("run id")
            failed.add_column("error")
            for row in self.failures:
                failed.add_row(row["id"], row["error"])
            parts.append(failed)
        if not self.dry_run:
            parts.append(f"{self.skipped} run(s) already done were skipped; wall time {self.wall_seconds:.1f} s; "
                         f"run files under {self.runs_dir}")
        return Group(*parts)


def run_sweep(config: SweepConfig) -> SweepResult:
    """Execute the spec's runs that are not done yet; see the module docstring."""
    start = time.perf_counter()
    store_path = Path(config.store)
    runs_dir = Path(config.runs_dir) if config.runs_dir else default_runs_dir(store_path)
    spec = load_spec(config.spec or "", runs_dir=runs_dir.resolve(), allow_plugins=config.allow_plugins,
                     plugins_from=config.plugins_from, dry_run=config.dry_run, max_runs=config.max_runs)
    if config.dry_run:
        return _dry_run(config, spec, store_path, runs_dir, start)
    store = ResultStore(store_path)
    lock = store.lock
    try:
        lock.acquire()
        try:
            store.register(spec.name, spec.raw, spec.path, spec.runs, spec.members)
            store.reset_interrupted()  # we hold the lock: anything still 'running' belongs to a dead sweep
            return _drive(config, spec, store, runs_dir, start)
        finally:
            lock.release()
    finally:
        store.close()


def _dry_run(config: SweepConfig, spec: SweepSpec, store_path: Path, runs_dir: Path, start: float) -> SweepResult:
    statuses: dict[str, str] = {}
    if store_path.is_file():
        with ResultStore(store_path, create=False) as store:
            statuses = store.status_of(r.id for r in spec.runs)
    plan = tuple({"id": r.id, "command": r.command, "experiment": r.experiment, "axes": r.axes,
                  "status": statuses.get(r.id, "new")} for r in spec.runs)
    counts = dict.fromkeys(STATUSES, 0)
    for row in plan:
        if row["status"] in counts:
            counts[row["status"]] += 1
    return SweepResult(config=config, name=spec.name, store=str(store_path), runs_dir=str(runs_dir), plan=plan,
                       counts=counts, executed={"done": 0, "failed": 0}, skipped=counts["done"],
                       wall_seconds=time.perf_counter() - start, dry_run=True, plugins_not_loaded=spec.plugins,
                       commands_not_loaded=spec.not_loaded, runs_not_loaded=spec.not_loaded_runs)


def _drive(config: SweepConfig, spec: SweepSpec, store: ResultStore, runs_dir: Path, start: float) -> SweepResult:
    ids = [r.id for r in spec.runs]
    before = store.status_of(ids)
    status = dict(before)
    todo: list[Run] = [r for r in spec.runs
                       if status[r.id] == "pending" or (status[r.id] == "failed" and config.retry_failed)]
    todo_ids = {r.id for r in todo}
    skipped = sum(1 for r in spec.runs if status[r.id] == "done")
    for r in todo:  # what the scheduler below sees: to be run in this invocation
        status[r.id] = "pending"
    executed = {"done": 0, "failed": 0}
    failures: list[dict[str, str]] = []
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a path that crosses a file, a folder we may not create
        raise BertscopeError(f"cannot create --runs-dir {runs_dir}: {exc.strerror or exc}") from None
    bar = _progress(len(todo), spec.name, enabled=config.progress)

    def settle(run_id: str, ok: bool, error: str | None) -> None:
        status[run_id] = "done" if ok else "failed"
        executed[status[run_id]] += 1
        if not ok:
            failures.append({"id": run_id, "error": error or "unknown error"})
            bar.write(f"failed {run_id}: {error}", file=sys.stderr)
        bar.update(1)
        bar.set_postfix(done=executed["done"], failed=executed["failed"], refresh=False)

    executor: Executor | None = None
    queue = list(todo)
    in_flight: set[str] = set()
    try:
        if todo:
            run_on = config.execution
            executor = make_executor(run_on.executor, workers=run_on.workers, address=run_on.address,
                                     threads=run_on.threads, cpus=run_on.cpus_per_run, gpus=run_on.gpus_per_run)
        while queue or in_flight:
            # start every run whose pre-steps are done, as long as the executor has free slots
            for run in list(queue):
                if len(in_flight) >= executor.slots:  # type: ignore[union-attr]
                    break
                dep_states = [status.get(d, "done") for d in run.depends_on]
                broken = [d for d, s in zip(run.depends_on, dep_states) if s == "failed"]
                if broken:
                    queue.remove(run)
                    error = f"pre-step {broken[0]} failed"
                    store.mark_failed(run.id, error=error)
                    settle(run.id, False, error)
                    continue
                if any(s != "done" for s in dep_states):
                    continue
                queue.remove(run)
                store.mark_running(run.id)
                options = _retrying(run) if before[run.id] == "failed" else run.options
                executor.submit(Task(run.id, run.command, options, spec.plugins, run.resources,  # type: ignore[union-attr]
                                     allow_plugins=config.allow_plugins))
                in_flight.add(run.id)
            if not in_flight:
                if queue:  # pre-steps outside this invocation's work are not done: cannot proceed
                    for run in queue:
                        error = "a pre-step is not done (re-run with --retry-failed)"
                        store.mark_failed(run.id, error=error)
                        settle(run.id, False, error)
                    queue.clear()
                break
            for outcome in executor.wait():  # type: ignore[union-attr]
                if outcome.run_id not in in_flight:
                    continue
                in_flight.discard(outcome.run_id)
                if outcome.ok:
                    store.mark_done(outcome.run_id, metrics=outcome.metrics, payload=outcome.payload,
                                    duration=outcome.duration, worker=outcome.worker, environment=outcome.environment)
                else:
                    store.mark_failed(outcome.run_id, error=outcome.error or "unknown error",
                                      traceback=outcome.traceback, duration=outcome.duration, worker=outcome.worker,
                                      environment=outcome.environment)
                settle(outcome.run_id, outcome.ok, outcome.error)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as errors.Terminated: stop the workers, then say so
        bar.close()
        try:
            stopping, executor = executor, None  # closed here, not again below
            if stopping is not None:
                stopping.close()
        finally:
            how = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
            store.mark_interrupted(sorted(in_flight), reason=f"interrupted by {how}; started again by the next sweep")
        raise
    finally:
        bar.close()
        if executor is not None:
            executor.close()
    after = store.status_of(ids)
    counts = dict.fromkeys(STATUSES, 0)
    for rid in ids:
        counts[after[rid]] += 1
    stored_failures = [f for f in failures if f["id"] in todo_ids]
    reported = {f["id"] for f in stored_failures}
    for rid in ids:  # failures from earlier invocations that were not retried
        if after[rid] == "failed" and rid not in reported:
            stored_failures.append({"id": rid, "error": (store.record(rid).error or "") + " (not retried)"})
    plan = tuple({"id": r.id, "command": r.command, "experiment": r.experiment, "axes": r.axes,
                  "status_before": before[r.id], "status": after[r.id]} for r in spec.runs)
    return SweepResult(config=config, name=spec.name, store=str(store.path), runs_dir=str(runs_dir), plan=plan,
                       counts=counts, executed=executed, skipped=skipped, wall_seconds=time.perf_counter() - start,
                       failures=tuple(stored_failures))


def _retrying(run: Run) -> dict[str, Any]:
    """A failed run's options when ``--retry-failed`` starts it again: a study (which resumes in its folder) also
    retries its own failed runs there (``retry_failed``, no part of its identity)."""
    info = commands().get(run.command)
    if info is not None and info.resumes_in_out and "retry_failed" in info.config.field_names():
        return {**run.options, "retry_failed": True}
    return run.options


class _PlainProgress:
    """The sweep's progress where stderr is no terminal (a pipe, a batch job's log file): one timestamped line per
    finished run instead of a bar redrawn with carriage returns; the subset of tqdm's interface the driver uses."""

    def __init__(self, total: int, name: str, stream: Any) -> None:
        self.total, self.name, self.n, self.stream = total, name, 0, stream
        self.postfix: dict[str, Any] = {}

    def write(self, text: str, file: Any = None) -> None:
        print(text, file=file or self.stream, flush=True)

    def update(self, count: int = 1) -> None:
        self.n += count

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix = values
        shown = ", ".join(f"{k} {v}" for k, v in values.items())
        self.write(f"{time.strftime('%H:%M:%S')} sweep {self.name}: {self.n}/{self.total} runs ({shown})", self.stream)

    def close(self) -> None:
        pass


def _progress(total: int, name: str, *, enabled: bool, stream: Any = None) -> Any:
    """A tqdm bar on a terminal; plain timestamped lines elsewhere; nothing with ``--no-progress``."""
    from tqdm.auto import tqdm

    stream = sys.stderr if stream is None else stream
    try:
        terminal = bool(stream.isatty())
    except (AttributeError, OSError, ValueError):  # a closed or detached stream is no terminal
        terminal = False
    if enabled and not terminal:
        return _PlainProgress(total, name, stream)
    return tqdm(total=total, desc=f"sweep {name}", unit="run", disable=not enabled, file=stream,
                dynamic_ncols=True)


COMMAND = CommandInfo("sweep", SweepConfig, run_sweep, SweepResult,
                      "run an experiment spec (YAML grid) into a resumable result store, locally or on Ray",
                      sweepable=False)
