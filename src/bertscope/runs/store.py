"""The one result store: one SQLite file holding every run's configuration, status, metrics, timings and provenance.

A sweep keeps its runs here (``--store results.db``), a study keeps its runs in ``OUT/runs.db`` (:func:`study_store`;
a study is a fixed grid plus a summary) and ``finetune --seeds`` its seeds in the same place, so ``bertscope status``,
``bertscope report``, resuming and ``--retry-failed`` work the same on each. Runs are named by
:func:`bertscope.runs.identity.run_id`.

Why SQLite: one file, no server, transactional, readable with any SQLite client. One process writes a store at a
time (a sweep's driver, whose workers return their results to it, or the study running in it). Every state change is one transaction, and a run becomes ``done`` in
the same transaction that stores its metrics and full result payload, so a ``kill -9`` at any moment leaves each
run either finished (with its result) or not, never half-written. Runs are keyed by their deterministic id, so a
re-run of the same sweep finds them instead of adding duplicates. A second sweep (or study) on the same store is
refused while the first is alive (an OS file lock, :mod:`filelock`, that dies with its process). Stores written by
development versions before 0.2.0 (a study's ``runs/*.json``, sweep stores keyed by older ids) are not read.

Statuses: ``pending`` (known, not started), ``running`` (handed to a worker; found on a store no sweep holds, it
means the sweep was interrupted and the run will be started again), ``done``, ``failed`` (with its error).

Whether a ``running`` run is live or stale is decided by the store lock alone, never by the run's folder: a sweep
that takes the lock knows every ``running`` run belongs to a dead sweep and makes it ``pending`` again
(:meth:`ResultStore.reset_interrupted`), whatever files its folder holds. A sweep stopped by SIGTERM or Ctrl-C
also notes why in each stopped run's error (:meth:`ResultStore.mark_interrupted`); a killed one cannot, and its
runs read the same once its lock is gone.

Length: the schema, each transaction that changes a run's state, the decoding that names and skips damaged records
and the lock on the store's resolved path are one contract (what a finished run is); they change together.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from bertscope.core.errors import BertscopeError
from bertscope.data import glue

__all__ = ["STATUSES", "STUDY_STORE", "ResultStore", "RunRecord", "StoreLock", "StoredRun", "remove_store", "resolved_store",
           "study_store"]

STATUSES = ("pending", "running", "done", "failed")
SCHEMA_VERSION = 1

#: A study's store inside its output folder (its summary files sit beside it; interrupted runs' checkpoints in
#: ``OUT/runs/``).
STUDY_STORE = "runs.db"


def study_store(out: str | os.PathLike[str]) -> Path:
    """Where a study (or ``finetune --seeds``) with ``--out OUT`` keeps its runs: ``OUT/runs.db``."""
    return Path(out) / STUDY_STORE


def remove_store(path: str | os.PathLike[str]) -> None:
    """Delete a store file and SQLite's companions (``-wal``, ``-shm``): ``--overwrite`` starts over."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    config TEXT NOT NULL,            -- JSON: every option the run was built with
    identity TEXT NOT NULL,          -- JSON: what the id hashes
    depends_on TEXT NOT NULL DEFAULT '[]',
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    error TEXT,
    traceback TEXT,
    metrics TEXT,                    -- JSON: result.metrics()
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,                    -- when the run was handed to a worker
    finished REAL,                   -- when its outcome was committed
    duration REAL,                   -- seconds the command itself ran (measured in the worker)
    worker TEXT,                     -- host:pid that ran it
    environment TEXT,                -- JSON: results.environment_info() in the worker
    git_commit TEXT
);
CREATE TABLE IF NOT EXISTS payloads (run_id TEXT PRIMARY KEY REFERENCES runs(id), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY, spec TEXT NOT NULL, spec_path TEXT, created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_runs (
    sweep TEXT NOT NULL, run_id TEXT NOT NULL REFERENCES runs(id), experiment TEXT NOT NULL,
    axes TEXT NOT NULL, label TEXT, position INTEGER NOT NULL,
    PRIMARY KEY (sweep, experiment, run_id)
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""


@dataclass(frozen=True)
class StoredRun:
    """What :meth:`ResultStore.register` needs of a run that no sweep spec made (a study's run, one seed):
    a sweep's :class:`~bertscope.sweep.spec.Run` has the same attributes."""

    id: str
    command: str
    options: dict[str, Any]
    identity: dict[str, Any]
    experiment: str
    axes: dict[str, Any] | None
    depends_on: tuple[str, ...] = ()
    label: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """One row of the store, decoded."""

    id: str
    command: str
    config: dict[str, Any]
    identity: dict[str, Any]
    depends_on: tuple[str, ...]
    status: str
    error: str | None
    metrics: dict[str, float | None]
    attempts: int
    created: float
    started: float | None
    finished: float | None
    duration: float | None
    worker: str | None
    environment: dict[str, Any] | None
    git_commit: str | None
    sweep: str | None = None
    experiment: str | None = None
    axes: dict[str, Any] | None = None
    label: str | None = None
    traceback: str | None = None


def resolved_store(path: str | os.PathLike[str]) -> Path:
    """The one spelling of a store path: absolute, ``~`` expanded, every symlink (of the file or a folder above it)
    followed. Two spellings of one store (``r.db``, ``./x/../r.db``, a link to it or to its folder) give one path,
    hence one lock file. A hard link to the store file is a second name no path arithmetic can see: don't."""
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


class StoreLock:
    """An exclusive OS lock on ``<store>.lock`` (:class:`filelock.FileLock`): one sweep per store at a time, released
    when the process dies. The holder writes ``pid N`` into the file so a refused sweep can say who holds it.

    The lock file sits beside the store's *resolved* path (:func:`resolved_store`), so the lock holds however the
    store is spelt: two drivers reaching one store through a symlink contend for one lock file."""

    def __init__(self, store_path: str | os.PathLike[str]) -> None:
        self.store = Path(store_path)
        try:
            self.path = Path(f"{resolved_store(store_path)}.lock")
        except (OSError, RuntimeError) as exc:  # a symlink loop, an unreadable folder on the way
            raise BertscopeError(f"cannot resolve the store path {store_path}: {exc}") from None
        self._lock: FileLock | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise BertscopeError(f"store {self.store} is in use by a running sweep or study ({self._holder()}); "
                                 "wait for it or stop it first") from None
        except OSError as exc:  # a read-only folder: no lock file, so no sweep may write here (Timeout is one too)
            raise BertscopeError(f"cannot create the store's lock file {self.path}: {exc.strerror or exc}") from None
        self._lock = lock
        with contextlib.suppress(OSError):  # only a courtesy for the error message above
            self.path.write_text(f"pid {os.getpid()}", encoding="utf-8")

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def held_elsewhere(self) -> bool:
        """True when some live process (or another lock object of this one) holds the lock; takes it only briefly."""
        if not self.path.exists():
            return False
        probe = FileLock(self.path, timeout=0)
        try:
            probe.acquire()
        except Timeout:
            return True
        probe.release()
        return False

    def _holder(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8").strip() or "another process"
        except OSError:
            return "another process"

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Damaged(Exception):
    """A stored record that cannot be decoded (why, in words): its run is skipped and named, never a traceback."""


def _dumps(value: Any) -> str:
    from bertscope.core.results import to_jsonable

    return json.dumps(to_jsonable(value), sort_keys=True)


def _clean_metrics(metrics: Any) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in dict(metrics or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        out[str(key)] = None if number != number or number in (float("inf"), float("-inf")) else number
    return out


def _read_only_place(path: Path) -> bool:
    """True when the store's folder is on a read-only filesystem or may not be written by this process."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return True
    except (OSError, AttributeError):  # no statvfs (Windows): ask access() alone
        pass
    return not os.access(folder, os.W_OK)


def _store_error(path: Path, exc: sqlite3.DatabaseError) -> BertscopeError:
    """One line for SQLite's failures on an opened store: read-only, damaged, locked, or anything else."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "readonly" in text or "read-only" in text:
        return BertscopeError(f"result store {path} is read-only ({text}); make it writable or use another --store")
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return BertscopeError(f"result store {path} is damaged ({text}); restore a backup, or try "
                              f"`sqlite3 {path} .recover`")
    return BertscopeError(f"result store {path}: {text}")


class _Cursor(sqlite3.Cursor):
    """A cursor whose SQLite errors become one-line :class:`BertscopeError` naming the store file (a damaged page
    can surface at any statement or fetch, not only when the store is opened)."""

    connection: _Connection

    def _guard(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except sqlite3.DatabaseError as exc:
            if not self.connection.translate_errors:
                raise
            raise _store_error(self.connection.path, exc) from None

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        return self._guard(super().execute, sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> _Cursor:
        return self._guard(super().executemany, sql, parameters)

    def fetchone(self) -> Any:
        return self._guard(super().fetchone)

    def fetchall(self) -> list[Any]:
        return self._guard(super().fetchall)

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        return self._guard(super().fetchmany, size)


class _Connection(sqlite3.Connection):
    """A connection whose statements run on :class:`_Cursor` (``sqlite3.Connection.execute`` would bypass it)."""

    path: Path = Path()
    translate_errors = False  # off while the store is opened: there a failure means "not a result store"

    def cursor(self, factory: Any = None) -> _Cursor:  # type: ignore[override]  # one factory, not the overloads
        return super().cursor(factory or _Cursor)

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> _Cursor:
        return self.cursor().executemany(sql, parameters)


class ResultStore:
    """A sweep result store in one SQLite file (created on first use)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise BertscopeError(f"no result store at {self.path} (a sweep's --store file, or a study's "
                                 f"OUT/{STUDY_STORE})")
        if self.path.exists() and self.path.is_dir():
            raise BertscopeError(f"--store {self.path} is a folder; give a file such as results.db")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a path that crosses a file, a folder we may not create
            raise BertscopeError(f"cannot create the folder of --store {self.path}: {exc.strerror or exc}") from None
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, factory=_Connection)
            self.conn.path = self.path
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            exists = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='runs'").fetchone()
            if not exists and not create:
                raise BertscopeError(f"{self.path} is not a bertscope result store (no runs table)")
            if not exists:  # a new store: create it (readers of an existing store never write)
                self.conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, and vice versa
                with self.transaction():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self.conn.execute(statement)
                    self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                      (str(SCHEMA_VERSION),))
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                raise sqlite3.DatabaseError("no schema version")
            if int(row[0]) > SCHEMA_VERSION:
                raise BertscopeError(f"store {self.path} was written by a newer bertscope (schema {row[0]})")
        except sqlite3.DatabaseError as exc:
            if "malformed" in str(exc) or "readonly" in str(exc):
                raise _store_error(self.path, exc) from None
            if _read_only_place(self.path):  # SQLite cannot even open a WAL store where it may not write
                raise BertscopeError(f"result store {self.path} is on a read-only filesystem or in a folder that "
                                     f"cannot be written ({exc}); copy it somewhere writable") from None
            raise BertscopeError(f"{self.path} is not a bertscope result store: {exc}") from None
        self.conn.translate_errors = True
        #: run id -> why its row or payload could not be read: such runs are skipped by every reader, who says so
        self.damaged: dict[str, str] = {}

    # -- plumbing ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any error."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            with contextlib.suppress(BertscopeError, sqlite3.Error):  # the first error is the one to report
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def lock(self) -> StoreLock:
        return StoreLock(self.path)

    # -- writing (driver only) --------------------------------------------------------------------------------

    def register(self, sweep: str, spec: dict[str, Any], spec_path: str | None, runs: Iterable[Any],
                 members: Iterable[tuple[str, str, Any, str | None]] | None = None, *, append: bool = False) -> int:
        """Record a sweep (or study) and its runs as pending (runs already known keep their status). Returns new runs.

        ``members`` lists (run id, experiment, axes, label) for every experiment a run belongs to; by default
        each run's own experiment/axes/label. They replace the sweep's earlier memberships, or with ``append`` are
        added after them (a study registers its runs group by group).
        """
        runs = list(runs)
        if members is None:
            members = [(r.id, r.experiment, r.axes, r.label) for r in runs]
        now = time.time()
        added = 0
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO sweeps(name, spec, spec_path, created, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET spec=excluded.spec, spec_path=excluded.spec_path, "
                "updated=excluded.updated", (sweep, _dumps(spec), spec_path, now, now))
            offset = 0
            if append:
                offset = conn.execute("SELECT COUNT(*) FROM sweep_runs WHERE sweep=?", (sweep,)).fetchone()[0]
            else:
                conn.execute("DELETE FROM sweep_runs WHERE sweep=?", (sweep,))
            for run in runs:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO runs(id, command, config, identity, depends_on, status, created) "
                    "VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                    (run.id, run.command, _dumps(run.options), _dumps(run.identity), _dumps(list(run.depends_on)),
                     now))
                added += cursor.rowcount
            for position, (run_id, experiment, axes, label) in enumerate(members, start=offset):
                conn.execute(
                    "INSERT OR REPLACE INTO sweep_runs(sweep, run_id, experiment, axes, label, position) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (sweep, run_id, experiment, _dumps(axes), label, position))
        return added

    def mark_running(self, run_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE runs SET status='running', started=?, attempts=attempts+1, error=NULL, "
                         "traceback=NULL WHERE id=?", (time.time(), run_id))

    def mark_done(self, run_id: str, *, metrics: dict[str, Any], payload: Any, duration: float | None,
                  worker: str | None, environment: dict[str, Any] | None) -> None:
        """Commit a finished run: metrics, full payload, timings and provenance in one transaction."""
        data = zlib.compress(json.dumps(payload, allow_nan=True).encode("utf-8"), 6)
        commit = ((environment or {}).get("git") or {}).get("commit")
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO payloads(run_id, data) VALUES (?, ?)", (run_id, data))
            conn.execute(
                "UPDATE runs SET status='done', metrics=?, error=NULL, traceback=NULL, finished=?, duration=?, "
                "worker=?, environment=?, git_commit=? WHERE id=?",
                (_dumps(_clean_metrics(metrics)), time.time(), duration, worker, _dumps(environment), commit, run_id))

    def mark_failed(self, run_id: str, *, error: str, traceback: str | None = None, duration: float | None = None,
                    worker: str | None = None, environment: dict[str, Any] | None = None) -> None:
        commit = ((environment or {}).get("git") or {}).get("commit")
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET status='failed', error=?, traceback=?, finished=?, duration=?, worker=?, "
                "environment=COALESCE(?, environment), git_commit=COALESCE(?, git_commit) WHERE id=?",
                (error, traceback, time.time(), duration, worker, _dumps(environment) if environment else None,
                 commit, run_id))

    def mark_interrupted(self, run_ids: Iterable[str], *, reason: str) -> int:
        """Note why runs still ``running`` were stopped (e.g. "interrupted by SIGTERM"). They stay ``running``, which
        on a store no sweep holds means interrupted, and the next sweep starts them again. Returns runs noted."""
        now = time.time()
        with self.transaction() as conn:
            return sum(conn.execute("UPDATE runs SET error=?, finished=? WHERE status='running' AND id=?",
                                    (reason, now, rid)).rowcount for rid in run_ids)

    def reset_interrupted(self, run_ids: Iterable[str] | None = None) -> int:
        """Runs left ``running`` by a dead sweep go back to ``pending`` (call with the store lock held)."""
        with self.transaction() as conn:
            if run_ids is None:
                return conn.execute("UPDATE runs SET status='pending' WHERE status='running'").rowcount
            ids = list(run_ids)
            count = 0
            for rid in ids:
                count += conn.execute("UPDATE runs SET status='pending' WHERE status='running' AND id=?",
                                      (rid,)).rowcount
            return count

    # -- reading ----------------------------------------------------------------------------------------------

    def sweeps(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT name, spec_path, created, updated FROM sweeps ORDER BY created").fetchall()
        return [dict(r) for r in rows]

    def status_of(self, run_ids: Iterable[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for rid in run_ids:
            row = self.conn.execute("SELECT status FROM runs WHERE id=?", (rid,)).fetchone()
            if row is not None:
                out[rid] = row[0]
        return out

    def records(self, *, sweep: str | None = None, status: str | None = None, command: str | None = None,
                memberships: bool = False) -> list[RunRecord]:
        """One record per run, with its first membership (in ``sweep`` when given); with ``memberships`` one
        record per (sweep, experiment) a run belongs to, as reports need."""
        if sweep is not None and not self.conn.execute("SELECT 1 FROM sweeps WHERE name=?", (sweep,)).fetchone():
            known = ", ".join(s["name"] for s in self.sweeps()) or "none"
            raise BertscopeError(f"no sweep named {sweep!r} in {self.path}; sweeps: {known}")
        query = "SELECT r.*, s.sweep, s.experiment, s.axes, s.label FROM runs r LEFT JOIN sweep_runs s ON s.run_id = r.id"
        if not memberships:
            query += (" AND s.rowid = (SELECT MIN(rowid) FROM sweep_runs x WHERE x.run_id = r.id"
                      + (" AND x.sweep = :sweep" if sweep else "") + ")")
        where = []
        if sweep is not None:
            where.append("s.sweep = :sweep")
        if status is not None:
            where.append("r.status = :status")
        if command is not None:
            where.append("r.command = :command")
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY s.sweep, s.position, r.created"
        rows = self.conn.execute(query, {"sweep": sweep, "status": status, "command": command}).fetchall()
        records = []
        for row in rows:
            try:
                records.append(self._record(row))
            except _Damaged as exc:
                self.damaged[str(row["id"])] = str(exc)
        return records

    def record(self, run_id: str) -> RunRecord:
        rows = [r for r in self.records() if r.id == run_id]
        if not rows:
            raise BertscopeError(f"no run {run_id!r} in {self.path}")
        return rows[0]

    def error_of(self, run_id: str) -> str | None:
        """The stored error of a run (None when it has none or is unknown)."""
        row = self.conn.execute("SELECT error FROM runs WHERE id=?", (run_id,)).fetchone()
        return None if row is None else row[0]

    def payload(self, run_id: str) -> dict[str, Any] | None:
        """A done run's full result; None when it has none, or when its stored bytes are damaged (then the run is
        noted in :attr:`damaged`, and its readers skip what it would have added)."""
        row = self.conn.execute("SELECT data FROM payloads WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(zlib.decompress(row[0]).decode("utf-8"))
        except (zlib.error, TypeError, UnicodeDecodeError, ValueError) as exc:
            self.damaged[run_id] = f"payload is damaged ({type(exc).__name__})"
            return None
        if not isinstance(value, dict):
            self.damaged[run_id] = "payload is not a JSON object"
            return None
        return value

    def damaged_line(self) -> str | None:
        """One line naming the damaged records readers skipped so far, or None."""
        if not self.damaged:
            return None
        shown = "; ".join(f"{rid}: {why}" for rid, why in sorted(self.damaged.items())[:5])
        more = f"; and {len(self.damaged) - 5} more" if len(self.damaged) > 5 else ""
        return f"skipped {len(self.damaged)} damaged record(s) of {self.path}: {shown}{more}"

    def counts(self, *, sweep: str | None = None) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        if sweep is None:
            rows = self.conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
        else:
            rows = self.conn.execute("SELECT r.status, COUNT(DISTINCT r.id) FROM runs r JOIN sweep_runs s "
                                     "ON s.run_id=r.id WHERE s.sweep=? GROUP BY r.status", (sweep,)).fetchall()
        for status, count in rows:
            counts[status] = count
        return counts

    @staticmethod
    def _record(row: sqlite3.Row) -> RunRecord:
        def load(text: str | None, default: Any, column: str = "") -> Any:
            if text is None:
                return default
            try:
                value = json.loads(text)
            except (TypeError, ValueError):
                raise _Damaged(f"{column} is not JSON") from None
            expected = dict if default is None else type(default)  # None: an object or null
            if (value is not None and not isinstance(value, expected)) or (value is None and default is not None):
                raise _Damaged(f"{column} is a JSON {type(value).__name__}, not a {expected.__name__}")
            return value

        if row["status"] not in STATUSES:
            raise _Damaged(f"status {row['status']!r} is none of {', '.join(STATUSES)}")
        metrics = load(row["metrics"], {}, "metrics")
        if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in metrics.values()):
            raise _Damaged("metrics are not numbers")
        return RunRecord(
            id=row["id"], command=row["command"], config=load(row["config"], {}, "config"),
            identity=load(row["identity"], {}, "identity"), depends_on=tuple(load(row["depends_on"], [], "depends_on")),
            status=row["status"], error=row["error"],
            metrics={glue.canonical_metric_key(k): v for k, v in metrics.items()},
            attempts=row["attempts"],
            created=row["created"], started=row["started"], finished=row["finished"], duration=row["duration"],
            worker=row["worker"], environment=load(row["environment"], None, "environment"),
            git_commit=row["git_commit"], sweep=row["sweep"], experiment=row["experiment"],
            axes=load(row["axes"], None, "axes"), label=row["label"],
            traceback=row["traceback"],
        )
