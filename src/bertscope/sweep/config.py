"""The options of ``sweep`` and ``status``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from bertscope.core.config import Config, Options, group, opt
from bertscope.core.errors import BertscopeError
from bertscope.finetune.distributed import refuse_data_parallel

__all__ = ["MAX_RUNS", "ExecutorOptions", "StatusConfig", "SweepConfig", "executor_flags", "worker_threads"]

#: the most grid points a spec may hold unless ``--max-runs`` says otherwise: counted before any run is built, so
#: a typo that makes 10^8 runs is one line, not gigabytes (a listed run takes a few kB of memory)
MAX_RUNS = 100_000


@dataclass(frozen=True)
class ExecutorOptions(Options):
    """Where a sweep's runs execute: local worker processes or a Ray cluster, and what each run reserves. One group
    for every command that drives a sweep (``sweep``, ``replicate``), so their options and help never drift."""

    executor: str = opt("local", "where runs execute: local processes or a Ray cluster", choices=("local", "ray"))
    workers: int | None = opt(None, "local: worker processes (default 1: runs in this process); ray without "
                                    "--address: CPUs of the local Ray instance (default: all)")
    address: str | None = opt(None, "Ray cluster address (auto, host:port or ray://host:port); default: start a "
                                    "local Ray instance", metavar="ADDR")
    cpus_per_run: float | None = opt(None, "Ray: CPUs each run reserves (overrides the spec's resources; default 1)")
    gpus_per_run: float | None = opt(None, "Ray: GPUs each run reserves (overrides the spec's resources; default 0)")
    threads: int | None = opt(None, "torch threads per local worker (default: CPU count / workers)")

    def validate(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise BertscopeError(f"--workers must be at least 1, got {self.workers}")
        if self.address is not None and self.executor != "ray":
            raise BertscopeError("--address needs --executor ray")
        for name, value in (("--cpus-per-run", self.cpus_per_run), ("--gpus-per-run", self.gpus_per_run)):
            if value is not None and value < 0:
                raise BertscopeError(f"{name} must not be negative, got {value}")
        if self.threads is not None and self.threads < 1:
            raise BertscopeError(f"--threads must be at least 1, got {self.threads}")


def worker_threads(options: ExecutorOptions) -> int | None:
    """The torch threads one local worker runs with: ``--threads``, else with several worker processes the CPU
    count shared among them (what :class:`~bertscope.sweep.executors.ProcessExecutor` gives each), else None (the
    process's own setting; on Ray, what the cluster's worker has)."""
    import os

    if options.threads:
        return options.threads
    if options.executor == "local" and (options.workers or 1) > 1:
        return max(1, (os.cpu_count() or 1) // (options.workers or 1))
    return None


def executor_flags(options: ExecutorOptions) -> list[str]:
    """The command-line flags that give ``options`` (those that differ from the defaults), for a command line written
    into a result so that it re-runs on the same executor."""
    defaults = ExecutorOptions()
    flags: list[str] = []
    for name, value in options.to_dict().items():
        if value != getattr(defaults, name):
            flags += [f"--{name.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    return flags


@dataclass(frozen=True, init=False)
class SweepConfig(Config):
    """Run every configuration of an experiment spec (YAML) into a resumable SQLite result store."""

    command = "sweep"

    spec: str | None = opt(None, "experiment spec (YAML): command, base options, grid axes", positional=True,
                           metavar="SPEC")
    store: str = opt("results.db", "SQLite result store (created if missing; re-running resumes it)", metavar="DB")
    execution: ExecutorOptions = group(ExecutorOptions)
    runs_dir: str | None = opt(None, "folder for each run's own output folder (named by run id); default: "
                                     "<store>-runs/ beside the store", metavar="DIR")
    retry_failed: bool = opt(False, "run failed runs again (done runs are always kept)")
    dry_run: bool = opt(False, "validate the spec and list its runs with their stored status; run nothing (never "
                               "imports the spec's plugins)")
    allow_plugins: bool = opt(False, "import the spec's plugins (their code runs in the driver and every worker); "
                                     "without it a spec with plugins is refused")
    plugins_from: str = opt("spec", "with --allow-plugins, where plugin files may come from: spec (the spec's "
                                    "folder or below), a folder (in it or below), or any (also module names)",
                            metavar="spec|any|DIR")
    max_runs: int = opt(MAX_RUNS, "refuse a spec whose grids hold more runs than this (counted before any run is "
                                 "built, so a runaway grid is one line)", metavar="N")
    progress: bool = opt(True, "show overall progress")

    def validate(self) -> None:
        refuse_data_parallel(self.command)  # a sweep parallelises runs itself; under torchrun it would run n times
        if not self.spec:
            raise BertscopeError("give the experiment spec: bertscope sweep SPEC.yaml --store results.db")
        if self.max_runs < 1:
            raise BertscopeError(f"--max-runs must be at least 1, got {self.max_runs}")
        if self.plugins_from != "spec" and not self.allow_plugins:
            raise BertscopeError("--plugins-from says where plugins may come from; add --allow-plugins to import them")
        if self.plugins_from not in ("spec", "any") and not os.path.isdir(os.path.expanduser(self.plugins_from)):
            raise BertscopeError(f"--plugins-from must be spec, any or an existing folder, got {self.plugins_from!r}")


@dataclass(frozen=True)
class StatusConfig(Config):
    """Counts of a result store's runs by status, the slowest runs and the failed ones with their errors."""

    command = "status"

    store: str = opt("results.db", "SQLite result store written by `bertscope sweep`, or a study's OUT/runs.db",
                     metavar="DB")
    sweep: str | None = opt(None, "only this sweep (its spec's name); default: every run in the store")
    slowest: int = opt(5, "how many of the slowest finished runs to list")
    failed: int = opt(20, "how many failed runs to list (with their errors)")

    def validate(self) -> None:
        if self.slowest < 0 or self.failed < 0:
            raise BertscopeError("--slowest and --failed must not be negative")
