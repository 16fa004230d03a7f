"""The SQLite result store: transactional status changes, payload round trip, no duplicates, the sweep lock."""

from __future__ import annotations

import math
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bertscope.core.errors import BertscopeError
from bertscope.runs.store import ResultStore, StoreLock
from bertscope.sweep.spec import parse_spec
from conftest import user_error as _user_error

TOY = str(Path(__file__).with_name("sweep_toy.py"))


def _runs(tmp_path, n=3):
    return parse_spec({"plugins": [TOY], "command": "toy", "grid": {"x": list(range(n)), "seed": [7]}},
                      runs_dir=tmp_path / "runs", default_name="s", allow_plugins=True,
                      plugins_from=str(Path(TOY).parent)).runs


def test_register_is_idempotent_and_keeps_status(tmp_path):
    runs = _runs(tmp_path)
    with ResultStore(tmp_path / "r.db") as store:
        assert store.register("s", {"command": "toy"}, "s.yaml", runs) == 3
        store.mark_running(runs[0].id)
        store.mark_done(runs[0].id, metrics={"score": 1.5}, payload={"a": [1, 2]}, duration=0.1, worker="w",
                        environment={"git": {"commit": "abc"}, "versions": {"torch": "x"}})
        assert store.register("s", {"command": "toy"}, "s.yaml", runs) == 0  # same runs: nothing new
        assert store.counts() == {"pending": 2, "running": 0, "done": 1, "failed": 0}
        rows = store.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        assert rows == 3
        record = store.record(runs[0].id)
        assert record.status == "done" and record.metrics == {"score": 1.5} and record.attempts == 1
        assert record.git_commit == "abc" and record.axes == {"x": 0, "seed": 7} and record.sweep == "s"
        assert record.config["out"] == str(tmp_path / "runs" / runs[0].id)
        assert store.payload(runs[0].id) == {"a": [1, 2]}
        assert store.payload(runs[1].id) is None


def test_failed_runs_keep_their_error_and_interrupted_runs_go_back_to_pending(tmp_path):
    runs = _runs(tmp_path)
    with ResultStore(tmp_path / "r.db") as store:
        store.register("s", {}, None, runs)
        store.mark_running(runs[0].id)
        store.mark_failed(runs[0].id, error="boom", traceback="Traceback ...")
        store.mark_running(runs[1].id)
        assert store.reset_interrupted() == 1
        assert store.status_of(r.id for r in runs) == {runs[0].id: "failed", runs[1].id: "pending",
                                                       runs[2].id: "pending"}
        failed = store.record(runs[0].id)
        assert failed.error == "boom" and failed.traceback == "Traceback ..."


def test_non_finite_metrics_are_stored_as_null(tmp_path):
    runs = _runs(tmp_path, 1)
    with ResultStore(tmp_path / "r.db") as store:
        store.register("s", {}, None, runs)
        store.mark_done(runs[0].id, metrics={"a": math.nan, "b": 2, "c": "text"}, payload={"v": math.nan},
                        duration=None, worker=None, environment=None)
        assert store.record(runs[0].id).metrics == {"a": None, "b": 2.0}
        assert math.isnan(store.payload(runs[0].id)["v"])


def test_metrics_stored_under_bertscope_0_1_names_read_as_evaluate_names(tmp_path):
    runs = _runs(tmp_path, 1)
    with ResultStore(tmp_path / "r.db") as store:
        store.register("s", {}, None, runs)
        store.mark_done(runs[0].id, metrics={"final.score": 0.5, "final.validation.mcc": 0.1, "3.score": 0.7,
                                             "3.validation.spearman": 0.2}, payload={}, duration=None, worker=None,
                        environment=None)
        assert store.record(runs[0].id).metrics == {"final.combined_score": 0.5,
                                                    "final.validation.matthews_correlation": 0.1, "3.score": 0.7,
                                                    "3.validation.spearmanr": 0.2}


def test_an_error_inside_a_transaction_rolls_back(tmp_path):
    runs = _runs(tmp_path, 1)
    with ResultStore(tmp_path / "r.db") as store:
        store.register("s", {}, None, runs)
        with pytest.raises(RuntimeError), store.transaction() as conn:
            conn.execute("UPDATE runs SET status='done'")
            raise RuntimeError("crash between writes")
        assert store.counts()["done"] == 0


def test_store_survives_reopening_and_is_readable_by_plain_sqlite(tmp_path):
    runs = _runs(tmp_path, 2)
    with ResultStore(tmp_path / "r.db") as store:
        store.register("s", {}, None, runs)
        store.mark_done(runs[1].id, metrics={"score": 3.0}, payload={}, duration=1.0, worker=None, environment=None)
    conn = sqlite3.connect(tmp_path / "r.db")
    assert conn.execute("SELECT status FROM runs WHERE id=?", (runs[1].id,)).fetchone()[0] == "done"
    conn.close()


def test_user_errors_for_bad_store_paths(tmp_path):
    with pytest.raises(BertscopeError, match="no result store"):
        ResultStore(tmp_path / "missing.db", create=False)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(BertscopeError, match="not a bertscope result store"):
        ResultStore(junk)
    with pytest.raises(BertscopeError, match="is a folder"):
        ResultStore(tmp_path)
    other = tmp_path / "other.db"  # somebody else's SQLite file: readers refuse it and leave it untouched
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (a)")
    conn.commit()
    conn.close()
    with pytest.raises(BertscopeError, match="not a bertscope result store"):
        ResultStore(other, create=False)
    conn = sqlite3.connect(other)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["t"]
    conn.close()
    with ResultStore(tmp_path / "r.db") as store, pytest.raises(BertscopeError, match="no sweep named 'x'"):
        store.records(sweep="x")


def test_the_lock_admits_one_sweep_and_dies_with_its_process(tmp_path):
    store_path = tmp_path / "r.db"
    first = StoreLock(store_path)
    first.acquire()
    try:
        assert StoreLock(store_path).held_elsewhere()
        with pytest.raises(BertscopeError, match=r"in use by a running sweep or study \(pid"):
            StoreLock(store_path).acquire()
    finally:
        first.release()
    assert not StoreLock(store_path).held_elsewhere()
    # a process that dies while holding the lock (even by SIGKILL) releases it
    code = ("import os, signal; from bertscope.runs.store import StoreLock; "
            f"StoreLock({str(store_path)!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code], check=False)
    with StoreLock(store_path):
        pass


@pytest.mark.parametrize("spelling", ["folder link", "file link", "relative", "dotted"])
def test_the_lock_holds_however_the_store_path_is_spelt(tmp_path, monkeypatch, spelling):
    real = tmp_path / "real"
    real.mkdir()
    store_path = real / "r.db"
    ResultStore(store_path).close()
    if spelling == "folder link":
        (tmp_path / "link").symlink_to(real, target_is_directory=True)
        other = tmp_path / "link" / "r.db"
    elif spelling == "file link":
        other = tmp_path / "alias.db"
        other.symlink_to(store_path)
    elif spelling == "relative":
        monkeypatch.chdir(real)
        other = Path("r.db")
    else:
        other = tmp_path / "real" / ".." / "real" / "." / "r.db"
    assert StoreLock(other).path == StoreLock(store_path).path == store_path.resolve().with_name("r.db.lock")
    with StoreLock(store_path):
        assert StoreLock(other).held_elsewhere()
        with pytest.raises(BertscopeError, match=f"store {re.escape(str(other))} is in use"):
            StoreLock(other).acquire()
    with StoreLock(other), pytest.raises(BertscopeError, match="is in use"):  # and the other way round
        StoreLock(store_path).acquire()


def test_a_store_path_in_a_symlink_loop_is_one_line(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(BertscopeError, match="cannot resolve the store path"):
        StoreLock(tmp_path / "a" / "r.db")


def _filled_store(tmp_path, n=40):
    runs = _runs(tmp_path, n)
    path = tmp_path / "r.db"
    with ResultStore(path) as store:
        store.register("s", {"command": "toy"}, "s.yaml", runs)
        for run in runs:
            store.mark_running(run.id)
            store.mark_done(run.id, metrics={"score": 1.0}, payload={"a": list(range(300))}, duration=0.1,
                            worker="w", environment={})
    return path, runs




def test_a_store_with_a_corrupted_page_is_one_line_in_status_and_report(tmp_path, capsys):
    path, _ = _filled_store(tmp_path)
    page = 4096
    assert path.stat().st_size > 8 * page  # the damage below hits data pages, not the header
    with open(path, "r+b") as handle:
        handle.seek(3 * page)
        handle.write(bytes(range(256)) * (4 * page // 256))
    for argv in (["status", "--store", str(path)], ["report", "--store", str(path), "--out", str(tmp_path / "rep")]):
        err = _user_error(argv, capsys)
        assert f"result store {path} is damaged" in err
    assert not (tmp_path / "rep").exists()


def test_a_read_only_store_is_read_by_status_and_refused_by_a_sweep(tmp_path, capsys, monkeypatch):
    """SQLite opens a file it may not write read-only; that is simulated here (tests may run as root) by opening
    every connection with ``mode=ro``: readers work, the sweep's first write is one line naming the store."""
    from bertscope.cli import main

    path, _ = _filled_store(tmp_path, 2)
    spec = tmp_path / "s.yaml"
    spec.write_text(f"plugins: [{TOY}]\ncommand: toy\ngrid: {{x: [0, 1, 5], seed: [7]}}\n", encoding="utf-8")
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda where, **kw: connect(f"file:{where}?mode=ro", uri=True, **kw))
    capsys.readouterr()
    assert main(["status", "--store", str(path)]) == 0
    err = _user_error(["sweep", str(spec), "--store", str(path), "--no-progress", "--allow-plugins", "--plugins-from", "any"], capsys)
    assert f"result store {path} is read-only" in err
    monkeypatch.undo()
    with ResultStore(path, create=False) as store:  # nothing was changed
        assert store.counts() == {"pending": 0, "running": 0, "done": 2, "failed": 0}
