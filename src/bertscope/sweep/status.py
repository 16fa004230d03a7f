"""``bertscope status``: a read-only summary of a result store, safe while a sweep is writing it.

Counts by status (per sweep and overall), whether a sweep holds the store right now (and then the runs in flight),
runs a dead sweep left ``running``, the slowest finished runs and the failed ones with their errors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bertscope.core.errors import BertscopeError
from bertscope.core.registry import CommandInfo
from bertscope.runs.store import STATUSES, ResultStore, RunRecord
from bertscope.sweep.config import StatusConfig

__all__ = ["STATUS_COMMAND", "StatusResult", "sweep_status"]


@dataclass(frozen=True)
class StatusResult:
    """Counts by status (per sweep), the slowest finished runs and the failed runs with their errors."""

    config: StatusConfig
    counts: dict[str, int]
    by_sweep: dict[str, dict[str, int]]
    slowest: tuple[dict[str, Any], ...]
    failed: tuple[dict[str, Any], ...]
    interrupted: int = 0  # runs marked running while no sweep holds the store
    active: bool = False  # a sweep holds the store right now
    running: tuple[dict[str, Any], ...] = ()  # runs in flight (while a sweep is active), with seconds so far
    extra: dict[str, Any] = field(default_factory=dict)
    damaged: str | None = None  # the line naming damaged records that were skipped

    def to_dict(self) -> dict[str, Any]:
        from bertscope.core.results import environment_info

        return {"command": "status", "config": self.config.to_dict(), "environment": environment_info(),
                "counts": self.counts, "by_sweep": self.by_sweep, "slowest": list(self.slowest),
                "failed": list(self.failed), "interrupted": self.interrupted, "active": self.active,
                "running": list(self.running), "damaged": self.damaged}

    def metrics(self) -> dict[str, float]:
        return {f"runs.{k}": float(v) for k, v in self.counts.items()}

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        counts = Table(title=f"{self.config.store}: {sum(self.counts.values())} runs"
                             + (" (a sweep is running)" if self.active else ""))
        counts.add_column("sweep")
        for status in STATUSES:
            counts.add_column(status, justify="right")
        for name, by_status in self.by_sweep.items():
            counts.add_row(name, *(str(by_status.get(s, 0)) for s in STATUSES))
        counts.add_row("all", *(str(self.counts.get(s, 0)) for s in STATUSES), style="bold")
        parts: list[Any] = [counts]
        if self.damaged:
            parts.append(self.damaged)
        if self.interrupted:
            parts.append(f"{self.interrupted} run(s) were interrupted (no sweep is running); the next "
                         "`bertscope sweep` starts them again")
        if self.running:
            parts.append(_table("running now", ("run id", "seconds so far", "axes"),
                                [(r["id"], f"{r['seconds']:.0f}", _axes_text(r["axes"])) for r in self.running]))
        if self.slowest:
            parts.append(_table("slowest finished runs", ("run id", "seconds", "axes", "worker"),
                                [(r["id"], f"{r['duration']:.2f}", _axes_text(r["axes"]), r["worker"] or "")
                                 for r in self.slowest]))
        if self.failed:
            parts.append(_table("failed runs", ("run id", "attempts", "axes", "error"),
                                [(r["id"], str(r["attempts"]), _axes_text(r["axes"]), r["error"] or "")
                                 for r in self.failed]))
        return Group(*parts)


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


def _axes_text(axes: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (axes or {}).items()) or "(pre-step)"


def sweep_status(config: StatusConfig) -> StatusResult:
    """Read-only summary of a store (safe while a sweep is writing it)."""
    with ResultStore(config.store, create=False) as store:
        active = store.lock.held_elsewhere()
        records: list[RunRecord] = store.records(sweep=config.sweep)
        by_sweep: dict[str, dict[str, int]] = {}
        names = [config.sweep] if config.sweep else [s["name"] for s in store.sweeps()]
        for name in names:
            by_sweep[name] = store.counts(sweep=name)
        counts = dict.fromkeys(STATUSES, 0)
        for record in records:
            counts[record.status] += 1
        damaged = store.damaged_line()
    done = sorted((r for r in records if r.status == "done" and r.duration is not None),
                  key=lambda r: r.duration or 0.0, reverse=True)
    slowest = tuple({"id": r.id, "duration": r.duration, "axes": r.axes, "worker": r.worker}
                    for r in done[: config.slowest])
    failed_rows = [r for r in records if r.status == "failed"]
    failed = tuple({"id": r.id, "attempts": r.attempts, "axes": r.axes, "error": r.error}
                   for r in failed_rows[: config.failed])
    interrupted = 0 if active else counts["running"]
    running = tuple({"id": r.id, "seconds": time.time() - (r.started or time.time()), "axes": r.axes}
                    for r in records if r.status == "running") if active else ()
    if not records and config.sweep is None:
        raise BertscopeError(damaged or f"store {config.store} holds no runs yet")
    return StatusResult(config=config, counts=counts, by_sweep=by_sweep, slowest=slowest, failed=failed,
                        interrupted=interrupted, active=active, running=running, damaged=damaged)


STATUS_COMMAND = CommandInfo("status", StatusConfig, sweep_status, StatusResult,
                             "counts by status, slowest and failed runs of a result store (a sweep's, or a "
                             "study's OUT/runs.db)", sweepable=False)
