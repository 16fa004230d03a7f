"""Where runs execute: in this process, in N local worker processes, or as Ray tasks on a cluster.

Workers only *compute*: :func:`execute` builds the command's config, runs it and returns an :class:`Outcome`
(metrics, the full result payload, timing, provenance, or the error). The sweep driver alone writes the store, so
the store never sees two writers, and a run whose worker dies is simply marked failed. Every executor has the same
small interface (``slots``, ``submit``, ``wait``, ``close``) so the driver's scheduling loop is the same for all.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import os
import shutil
import socket
import time
import traceback as _traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bertscope.errors import BertscopeError
from bertscope.sweep.plugins import commands, load_plugins

__all__ = ["EXECUTORS", "Executor", "Outcome", "ProcessExecutor", "RayExecutor", "SerialExecutor", "Task",
           "execute", "make_executor"]

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Task:
    """What a worker needs to run one run: plain data, picklable, no store handle."""

    run_id: str
    command: str
    options: dict[str, Any]
    plugins: tuple[str, ...] = ()
    resources: dict[str, float] = field(default_factory=dict)
    threads: int | None = None
    quiet: bool = False  # a worker process: silence library progress bars (the sweep shows overall progress)
    allow_plugins: bool = False  # the driver was allowed to import ``plugins`` (--allow-plugins): so may the worker


@dataclass(frozen=True)
class Outcome:
    """What a worker hands back: the result (ok) or the error, with timing and provenance."""

    run_id: str
    ok: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    payload: Any = None
    error: str | None = None
    traceback: str | None = None
    duration: float | None = None
    worker: str | None = None
    environment: dict[str, Any] | None = None


@functools.lru_cache(maxsize=1)
def _static_environment() -> dict[str, Any]:
    from bertscope.results import environment_info

    return environment_info()


def _environment() -> dict[str, Any]:
    import datetime as _dt

    info = dict(_static_environment())
    info["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return info


def execute(task: Task) -> Outcome:
    """Run one task in this process and return its outcome; never raises for a failing run."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    start = time.perf_counter()
    try:
        from bertscope.loading import quiet_hugging_face
        from bertscope.results import to_jsonable
        from bertscope.tracking import parse_report_to

        if task.plugins and not task.allow_plugins:
            raise BertscopeError("the run's spec has plugins, and the sweep was not started with --allow-plugins: "
                                 "not importing them")
        if task.plugins:
            load_plugins(task.plugins)
        registry = commands()
        if task.threads:
            import torch

            torch.set_num_threads(task.threads)
        if task.command not in registry:
            raise BertscopeError(f"command {task.command!r} is not registered in this worker (missing plugin?)")
        start = time.perf_counter()  # the run's own time: after imports and thread set-up
        out = task.options.get("out")
        command = registry[task.command]
        # an interrupted attempt starts over, unless the command resumes its own finished work in its folder
        if out and Path(out).is_dir() and not command.resumes_in_out:
            shutil.rmtree(out)
        options = task.options
        if ("run_name" in command.config.field_names() and not options.get("run_name")
                and parse_report_to(options.get("report_to"))):
            options = {**options, "run_name": task.run_id}  # its tracker run is named by its run id
        config = command.config.from_dict(options, where=f"run {task.run_id}")
        with quiet_hugging_face(logs=False) if task.quiet else contextlib.nullcontext():
            result = command.run(config)
        metrics = dict(result.metrics())
        payload = to_jsonable(result.to_dict())
        return Outcome(task.run_id, True, metrics=metrics, payload=payload, duration=time.perf_counter() - start,
                       worker=worker, environment=_environment())
    except BertscopeError as exc:
        error, trace = str(exc), None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a bug or a crash inside the command: record it, keep the sweep going
        error = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
        trace = _traceback.format_exc()
    return Outcome(task.run_id, False, error=error, traceback=trace, duration=time.perf_counter() - start,
                   worker=worker, environment=_environment())


class Executor(Protocol):
    """Runs tasks; ``wait`` returns finished outcomes (at least one while anything is in flight)."""

    slots: int

    def submit(self, task: Task) -> None: ...

    def wait(self) -> list[Outcome]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """One run at a time in the driver's own process (the default; simplest to debug)."""

    slots = 1

    def __init__(self, threads: int | None = None) -> None:
        self.queue: list[Task] = []
        self.threads = threads

    def submit(self, task: Task) -> None:
        if self.threads and not task.threads:
            task = Task(**{**task.__dict__, "threads": self.threads})
        self.queue.append(task)

    def wait(self) -> list[Outcome]:
        return [execute(self.queue.pop(0))] if self.queue else []

    def close(self) -> None:
        self.queue.clear()


def _worker_init(threads: int | None) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MKL_NUM_THREADS"] = str(threads)


class ProcessExecutor:
    """N local worker processes (spawned, so CUDA and torch threads start clean); one run per worker at a time."""

    def __init__(self, workers: int, threads: int | None = None) -> None:
        self.slots = workers
        self.threads = threads if threads else max(1, (os.cpu_count() or 1) // workers)
        self.in_flight: dict[cf.Future[Outcome], Task] = {}
        self.pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        import multiprocessing

        return cf.ProcessPoolExecutor(max_workers=self.slots, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_worker_init, initargs=(self.threads,))

    def submit(self, task: Task) -> None:
        task = Task(**{**task.__dict__, "threads": task.threads or self.threads, "quiet": True})
        self.in_flight[self.pool.submit(execute, task)] = task

    def wait(self) -> list[Outcome]:
        if not self.in_flight:
            return []
        done, _ = cf.wait(list(self.in_flight), return_when=cf.FIRST_COMPLETED)
        outcomes: list[Outcome] = []
        broken = False
        for future in done:
            task = self.in_flight.pop(future)
            try:
                outcomes.append(future.result())
            except cf.process.BrokenProcessPool:
                broken = True
                outcomes.append(Outcome(task.run_id, False, error="worker process died (killed or out of memory)"))
            except Exception as exc:  # e.g. an unpicklable result
                outcomes.append(Outcome(task.run_id, False, error=f"{type(exc).__name__}: {exc}"))
        if broken:  # the pool is unusable: fail what was in it and start a fresh one
            for future, task in list(self.in_flight.items()):
                outcomes.append(Outcome(task.run_id, False, error="worker process died (killed or out of memory)"))
                del self.in_flight[future]
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
        return outcomes

    def close(self) -> None:
        if self.in_flight:  # interrupted: stop the runs in flight now (they are started again on resume)
            for process in list(getattr(self.pool, "_processes", {}).values()):
                with contextlib.suppress(Exception):
                    process.terminate()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.in_flight.clear()


class RayExecutor:
    """Runs are Ray tasks with their CPU/GPU requirements, on an existing cluster (``address``) or a local Ray."""

    def __init__(self, address: str | None, workers: int | None, cpus: float | None, gpus: float | None) -> None:
        try:
            import ray
        except ImportError:
            raise BertscopeError("--executor ray needs Ray: pip install 'bertscope[ray]'") from None
        self.ray = ray
        self.started_here = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address:
                _check_reachable(address)
            try:
                if address:
                    ray.init(address=address, **kwargs)
                else:
                    ray.init(num_cpus=workers or None, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"at {address}" if address else "locally"
                raise BertscopeError(f"cannot start or reach Ray {where}: {str(exc).splitlines()[0]}") from None
            self.started_here = True
        self.default_cpus = 1.0 if cpus is None else cpus
        self.default_gpus = 0.0 if gpus is None else gpus
        self.cli_cpus, self.cli_gpus = cpus, gpus
        total = ray.cluster_resources().get("CPU", 1.0)
        self.slots = max(1, int(total // max(self.default_cpus, 1e-9)) if self.default_cpus else int(total))
        self.remote = ray.remote(max_retries=0)(execute)
        self.in_flight: dict[Any, Task] = {}

    def submit(self, task: Task) -> None:
        cpus = self.cli_cpus if self.cli_cpus is not None else task.resources.get("cpus", self.default_cpus)
        gpus = self.cli_gpus if self.cli_gpus is not None else task.resources.get("gpus", self.default_gpus)
        task = Task(**{**task.__dict__, "quiet": True})
        ref = self.remote.options(num_cpus=cpus, num_gpus=gpus, name=task.run_id).remote(task)
        self.in_flight[ref] = task

    def wait(self) -> list[Outcome]:
        if not self.in_flight:
            return []
        ready, _ = self.ray.wait(list(self.in_flight), num_returns=1)
        outcomes: list[Outcome] = []
        for ref in ready:
            task = self.in_flight.pop(ref)
            try:
                outcomes.append(self.ray.get(ref))
            except Exception as exc:  # the worker crashed, was killed, or the node went away
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                outcomes.append(Outcome(task.run_id, False, error=f"ray: {type(exc).__name__}: {message}"))
        return outcomes

    def close(self) -> None:
        for ref in list(self.in_flight):
            with contextlib.suppress(Exception):  # already finished or gone
                self.ray.cancel(ref, force=True)
        self.in_flight.clear()
        if self.started_here:
            self.ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes, when a ``host:port`` (or ``ray://host:port``) cluster address is unreachable."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise BertscopeError(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}") from None


def make_executor(kind: str, *, workers: int | None = None, address: str | None = None, threads: int | None = None,
                  cpus: float | None = None, gpus: float | None = None) -> Executor:
    """The executor for ``--executor``/``--workers``: serial when local with one worker."""
    if kind == "ray":
        return RayExecutor(address, workers, cpus, gpus)
    if kind != "local":
        raise BertscopeError(f"--executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if address:
        raise BertscopeError("--address is for --executor ray")
    return SerialExecutor(threads) if (workers or 1) <= 1 else ProcessExecutor(int(workers or 1), threads)
