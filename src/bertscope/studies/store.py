"""A study's runs and where they are kept: each run's spec and identity, the study's result store ``OUT/runs.db``
(:mod:`bertscope.runs.store`, the kind of store a sweep keeps) and the checkpoints of an interrupted run.

A study's run is named by the one run identity (:mod:`bertscope.runs.identity`): by default ``finetune``'s over its
options, so it has the id a sweep's ``finetune`` run with the same options has; a ``cross`` stage names its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import sqlite3
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertscope.core.errors import BertscopeError
from bertscope.core.results import to_jsonable
from bertscope.finetune.checkpoint import Checkpointer
from bertscope.finetune.command import COMMAND as FINETUNE
from bertscope.finetune.config import FinetuneConfig
from bertscope.runs.identity import run_id, run_identity
from bertscope.runs.store import ResultStore, StoredRun, StoreLock, remove_store, study_store

__all__ = ["RunSpec", "RunStore", "finetune_identity", "finetune_run_id", "run_checkpoints"]

#: A sweep run's folder, named by its run id (``<command>-<12 hex>``, :func:`bertscope.runs.identity.run_id`).
_RUN_FOLDER = re.compile(r"[a-z0-9][a-z0-9-]*-[0-9a-f]{12}")

#: Options that drive several runs and are never set on one run (so never part of a run's identity).
_DRIVER_OPTIONS = frozenset({"seeds"})


def finetune_identity(config: FinetuneConfig) -> dict[str, Any]:
    """The identity of one study run: ``finetune``'s (:func:`bertscope.runs.identity.run_identity`)."""
    return run_identity(FINETUNE, {k: v for k, v in config.to_dict().items() if k not in _DRIVER_OPTIONS})


def finetune_run_id(config: FinetuneConfig) -> str:
    """The id of one study run: a sweep's ``finetune`` run with the same options has the same one."""
    return run_id(FINETUNE.name, finetune_identity(config))


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: a readable id (unique in the study), its table columns and its fine-tuning options.

    Its identity is ``finetune``'s over ``config``, unless the study names another (``command`` and ``identity``:
    a cross stage, whose numbers depend on the stages before it)."""

    run_id: str
    params: dict[str, Any]
    config: FinetuneConfig
    command: str = FINETUNE.name
    identity: dict[str, Any] | None = None

    def key(self) -> tuple[str, dict[str, Any], str]:
        """(command, identity, run id) as the store keeps the run."""
        identity = self.identity if self.identity is not None else finetune_identity(self.config)
        return self.command, identity, run_id(self.command, identity)


def _metrics(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a study run reports to the store (and so to ``status``/``report``): its score and final metrics."""
    out: dict[str, Any] = {"score": record.get("score")}
    for split, values in (record.get("final") or {}).items():
        out.update({f"final.{split}.{name}": value for name, value in (values or {}).items()})
    return out


class RunStore:
    """A study's runs in its result store ``OUT/runs.db`` (checkpoints of interrupted runs in ``OUT/runs/``);
    nothing is stored when ``out`` is None. ``study`` names the study in the store (its "sweep" and experiment)."""

    def __init__(self, out: str | Path | None, *, fresh: bool = False, retry_failed: bool = False,
                 study: str = "study", options: Mapping[str, Any] | None = None) -> None:
        self.study = study
        self.options = to_jsonable(dict(options or {}))
        self.retry_failed = retry_failed
        self.path = None if out is None else study_store(out)
        self.folder = None if out is None else Path(out) / "runs"
        if self.path is not None and self.folder is not None:
            if self.path.parent.exists() and not self.path.parent.is_dir():
                raise BertscopeError(f"--out {self.path.parent} exists and is not a folder")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if fresh:
                with StoreLock(self.path):  # never pull the store from under a running study
                    remove_store(self.path)
                shutil.rmtree(self.folder, ignore_errors=True)  # checkpoints of interrupted runs
            with self._open() as store:  # this invocation's grid replaces the last one's in the store's listing
                store.register(study, self.options, None, [], [])

    @classmethod
    def of(cls, config: Any) -> RunStore:
        """The store of a study's config (its ``out``, ``--overwrite``, ``--retry-failed`` and command)."""
        return cls(config.output.out, fresh=config.output.overwrite,
                   retry_failed=getattr(config.output, "retry_failed", False),
                   study=config.command or "study", options=config.to_dict())

    def _open(self) -> ResultStore:
        assert self.path is not None
        return ResultStore(self.path)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the store's lock while the study runs (a second study on the same folder is refused); runs left
        ``running`` by a study that was killed start again."""
        if self.path is None:
            yield
            return
        with StoreLock(self.path):
            with self._open() as store:
                store.reset_interrupted()
            yield

    def register(self, specs: Sequence[RunSpec]) -> None:
        """Record ``specs`` as the study's runs (pending unless known): ``status`` shows the whole grid."""
        if self.path is None:
            return
        runs, members = [], []
        for spec in specs:
            command, identity, rid = spec.key()
            axes = {**spec.params, "seed": spec.config.encoder.seed}
            runs.append(StoredRun(id=rid, command=command, options=to_jsonable(spec.config.to_dict()),
                                  identity=identity, experiment=self.study, axes=axes, label=spec.run_id))
            members.append((rid, self.study, axes, spec.run_id))
        with self._open() as store:
            store.register(self.study, self.options, None, runs, members, append=True)

    def load(self, spec: RunSpec) -> dict[str, Any] | None:
        """The finished run's record, or None (not run yet, or interrupted). A run that failed earlier is an error
        naming it, unless ``--retry-failed`` (then it runs again)."""
        if self.path is None:
            return None
        rid = spec.key()[2]
        with self._open() as store:
            status = store.status_of([rid]).get(rid)
            if status == "failed" and not self.retry_failed:
                raise BertscopeError(f"{self.study} run {spec.run_id!r} ({rid}) failed earlier: "
                                     f"{store.error_of(rid)}; pass --retry-failed to run it again")
            payload = store.payload(rid) if status == "done" else None
        if payload is None:
            return None
        return {**payload, "run_id": spec.run_id, **spec.params}  # a run two points share: this point's columns

    def reuse(self, spec: RunSpec) -> dict[str, Any] | None:
        """The record of the same run finished by a sibling study of the same sweep (another ``runs.db`` one folder
        over, in a folder named by its run id as a sweep or replication keeps them), saved into this store; None
        when none has it, or when this study is not one of a sweep's runs (a user's own folders are never mixed).

        A run's id is its identity (command and every option that changes its numbers), so a sibling's finished
        run with this id is this run: ``[CLS]`` of the last layer with all dimensions is the tokens study's
        reference and the dims study's, and it runs once. Stores that cannot be read are passed over."""
        if self.path is None or not _RUN_FOLDER.fullmatch(self.path.parent.name):
            return None
        rid = spec.key()[2]
        for sibling in sorted(self.path.parent.parent.glob(f"*/{self.path.name}")):
            if sibling == self.path or not _RUN_FOLDER.fullmatch(sibling.parent.name):
                continue
            try:
                with ResultStore(sibling, create=False) as store:
                    payload = store.payload(rid) if store.status_of([rid]).get(rid) == "done" else None
            except (BertscopeError, sqlite3.Error, OSError):
                continue
            if payload is not None:
                record = {**payload, "run_id": spec.run_id, **spec.params, "reused_from": str(sibling.parent),
                          "seconds": 0.0, "seconds_in_source": payload.get("seconds")}
                self.save(spec, record)
                return record
        return None

    @contextlib.contextmanager
    def running(self, spec: RunSpec) -> Iterator[None]:
        """Mark ``spec`` running while the block trains it; an error marks it failed (with its traceback)."""
        if self.path is None:
            yield
            return
        rid = spec.key()[2]
        with self._open() as store:
            store.mark_running(rid)
        try:
            yield
        except Exception as exc:
            with self._open() as store:
                store.mark_failed(rid, error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                                  traceback=traceback.format_exc(), worker=_worker())
            raise

    def save(self, spec: RunSpec, record: dict[str, Any]) -> None:
        """Commit a finished run: its record (the payload), metrics and duration in one transaction."""
        if self.path is None:
            return
        payload = to_jsonable(record)
        with self._open() as store:
            store.mark_done(spec.key()[2], metrics=_metrics(payload), payload=payload,
                            duration=record.get("seconds"), worker=_worker(), environment=None)

    def where(self, spec: RunSpec) -> str:
        """``run <id> in OUT/runs.db``: a stored run, named for a message."""
        return f"run {spec.key()[2]} in {self.path}"

    def checkpoint_folder(self, spec: RunSpec) -> Path | None:
        """``OUT/runs/<run id>.ckpt``: where an interrupted run's checkpoints wait for the next start."""
        return None if self.folder is None else self.folder / f"{spec.key()[2]}.ckpt"


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_checkpoints(store: RunStore, spec: RunSpec, **extra_identity: Any) -> Checkpointer | None:
    """The checkpoints of one study run, ``OUT/runs/<run id>.ckpt`` (none without ``--out``): an interrupted
    run continues from there the next time the study is started. ``extra_identity``: what else its numbers depend
    on (``cross``: the stages before it). A checkpoint of other options is discarded (the id makes that rare)."""
    path = store.checkpoint_folder(spec)
    if path is None:
        return None
    checkpoints = Checkpointer(path, {**finetune_identity(spec.config), **extra_identity})
    if checkpoints.changed():
        checkpoints.remove()
    return checkpoints
