"""Where runs execute: in this process, in N local worker processes, or as Ray tasks on a cluster.

Workers only *compute*: :func:`execute` builds the command's config, runs it and returns an :class:`Outcome`
(metrics, the full result payload, timing, provenance, or the error). The sweep driver alone writes the store, so
the store never sees two writers, and a run whose worker dies is simply marked failed. Every executor has the same
small interface (``slots``, ``submit``, ``wait``, ``close``) so the driver's scheduling loop is the same for all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback as _traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any, Protocol

from bertscope.core.errors import BertscopeError, Terminated
from bertscope.core.results import run_environment
from bertscope.sweep.plugins import commands, load_plugins

__all__ = ["CLAIM_TIMEOUT_SECONDS", "EXECUTORS", "STOP_GRACE_SECONDS", "WATCHDOG_SECONDS", "Executor", "Outcome",
           "ProcessExecutor", "RayExecutor", "SerialExecutor", "Task", "execute", "make_executor"]

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


def execute(task: Task) -> Outcome:
    """Run one task in this process and return its outcome; never raises for a failing run."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    start = time.perf_counter()
    claim = None
    try:
        from bertscope.core.results import to_jsonable
        from bertscope.finetune.tracking import parse_report_to
        from bertscope.models.loading import quiet_hugging_face

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
        claim = _claim_folder(out)  # no process of an earlier, stopped attempt still writes there
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
                       worker=worker, environment=run_environment())
    except BertscopeError as exc:
        error, trace = str(exc), None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a bug or a crash inside the command: record it, keep the sweep going
        error = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
        trace = _traceback.format_exc()
    finally:
        if claim is not None:
            claim.release()
    return Outcome(task.run_id, False, error=error, traceback=trace, duration=time.perf_counter() - start,
                   worker=worker, environment=run_environment())


#: How long a run waits for a process of an earlier attempt to let go of its folder (a stopped worker exits in
#: seconds: see :func:`_worker_init`).
CLAIM_TIMEOUT_SECONDS = 60.0


def _claim_folder(out: str | None) -> Any:
    """Hold the OS lock ``<parent>/.<name>.lock`` beside a run's folder for as long as the run writes into it.

    The lock dies with its process, so taking it proves that no worker of an earlier attempt (one whose sweep was
    killed) is still alive to write a result into the folder this attempt is about to clear and fill."""
    if not out:
        return None
    from filelock import FileLock, Timeout

    folder = Path(out)
    path = folder.parent / f".{folder.name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path)
        lock.acquire(timeout=CLAIM_TIMEOUT_SECONDS)
    except Timeout:
        raise BertscopeError(f"run folder {folder} is still being written by another process after "
                             f"{CLAIM_TIMEOUT_SECONDS:.0f} s (a worker of a stopped sweep?); run the sweep again "
                             "once it has exited") from None
    except OSError as exc:
        raise BertscopeError(f"cannot lock run folder {folder}: {exc.strerror or exc}") from None
    return lock


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


#: Seconds a stopped worker gets to run its command's clean-up (``status.json`` "interrupted") before SIGKILL.
STOP_GRACE_SECONDS = 10.0
#: How often a worker's watchdog checks that its driver is still alive.
WATCHDOG_SECONDS = 1.0


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"received signal {signum}")


def _set_parent_death_signal(signum: int) -> None:
    """Linux only: the kernel sends ``signum`` to this process when its parent dies, SIGKILL of the parent included."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signum, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def _watch_parent(parent: int) -> None:
    """A daemon thread's loop: once the driver is gone (re-parented, so ``getppid`` changed), stop like SIGTERM,
    and exit hard if the clean-up has not finished within the grace period."""
    while os.getppid() == parent:
        time.sleep(WATCHDOG_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE_SECONDS)
    os._exit(143)


def _worker_init(threads: int | None, parent: int | None = None) -> None:
    """A worker's set-up. It dies with its driver (parent-death signal on Linux, a watchdog everywhere), so a
    killed sweep leaves no process behind that could write into a run folder the next sweep owns."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    signal.signal(signal.SIGTERM, _raise_terminated)  # stopped: the command cleans up as after Ctrl-C
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MKL_NUM_THREADS"] = str(threads)
    if parent is not None:
        _set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != parent:  # the driver died before the signal was armed
            os._exit(143)
        threading.Thread(target=_watch_parent, args=(parent,), name="bertscope-watchdog", daemon=True).start()


def _worker_main(conn: Connection, threads: int | None, parent: int) -> None:
    """A worker process: run the tasks the driver sends, one at a time, until it sends ``None`` or goes away."""
    _worker_init(threads, parent)
    try:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):  # the driver is gone
                return
            if task is None:
                return
            outcome = execute(task)
            try:
                conn.send(outcome)
            except (EOFError, OSError):
                return
            except Exception as exc:  # e.g. an unpicklable payload: the run fails, the worker lives on
                conn.send(Outcome(task.run_id, False, error=f"result not transferable: {type(exc).__name__}: {exc}",
                                  duration=outcome.duration, worker=outcome.worker))
    except KeyboardInterrupt:  # stopped by the driver (SIGTERM) or orphaned: the command has cleaned up
        os._exit(143)


def _death_text(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


@dataclass
class _Worker:
    """One worker process and the driver's end of its pipe; ``task`` is the run it has in hand."""

    process: Any  # multiprocessing.process.BaseProcess (spawn context)
    conn: Connection
    task: Task | None = None


class ProcessExecutor:
    """N local worker processes (spawned, so CUDA and torch threads start clean); one run per worker at a time.

    A pool of our own rather than :class:`concurrent.futures.ProcessPoolExecutor`: there, one worker's death breaks
    the whole pool (``BrokenProcessPool``) and fails every run in flight; here each worker has its own pipe and
    process sentinel, so a worker that dies (killed, out of memory, segfault) fails only its own run and is
    replaced. Workers live as long as the driver, no longer (see :func:`_worker_init`)."""

    def __init__(self, workers: int, threads: int | None = None) -> None:
        import multiprocessing

        self.slots = workers
        self.threads = threads if threads else max(1, (os.cpu_count() or 1) // workers)
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[_Worker] = []

    def _start_worker(self) -> _Worker:
        mine, theirs = self.context.Pipe(duplex=True)
        process = self.context.Process(target=_worker_main, args=(theirs, self.threads, os.getpid()),
                                       name="bertscope-sweep-worker", daemon=True)
        process.start()
        theirs.close()
        worker = _Worker(process, mine)
        self.workers.append(worker)
        return worker

    def submit(self, task: Task) -> None:
        task = Task(**{**task.__dict__, "threads": task.threads or self.threads, "quiet": True})
        for worker in [w for w in self.workers if w.task is None]:
            if not worker.process.is_alive():  # died while idle: nothing of ours was lost
                self._discard(worker)
                continue
            try:
                worker.conn.send(task)
            except OSError:  # died just now
                self._discard(worker)
                continue
            worker.task = task
            return
        worker = self._start_worker()
        worker.conn.send(task)
        worker.task = task

    def wait(self) -> list[Outcome]:
        busy = [w for w in self.workers if w.task is not None]
        if not busy:
            return []
        ready = set(mp_wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
        outcomes: list[Outcome] = []
        for worker in busy:
            if worker.conn not in ready and worker.process.sentinel not in ready:
                continue
            task, outcome = worker.task, None
            assert task is not None
            with contextlib.suppress(EOFError, OSError):
                if worker.conn.poll():  # a result sent just before the worker exited still counts
                    outcome = worker.conn.recv()
            worker.task = None
            if outcome is None:  # the worker died with this run in hand: this run alone fails
                worker.process.join(timeout=5)
                outcome = Outcome(task.run_id, False, error=f"worker process died ({_death_text(worker.process.exitcode)}"
                                                            "; killed, out of memory or crashed)")
                self._discard(worker)
            outcomes.append(outcome)
        return outcomes

    def _discard(self, worker: _Worker) -> None:
        with contextlib.suppress(OSError):
            worker.conn.close()
        self.workers.remove(worker)

    def close(self) -> None:
        """Stop every worker: idle ones are asked to exit; busy ones (an interrupted sweep) get SIGTERM, so their
        command cleans up as after Ctrl-C, and SIGKILL after :data:`STOP_GRACE_SECONDS`."""
        for worker in self.workers:
            if worker.task is None:
                with contextlib.suppress(OSError, ValueError):
                    worker.conn.send(None)
            else:
                with contextlib.suppress(OSError, ValueError):
                    worker.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        try:
            for worker in self.workers:
                worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
        finally:  # also after a second Ctrl-C or SIGTERM during the grace period: no more grace
            for worker in list(self.workers):
                if worker.process.is_alive():
                    with contextlib.suppress(OSError, ValueError):
                        worker.process.kill()
                    worker.process.join(timeout=5)
                self._discard(worker)


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
