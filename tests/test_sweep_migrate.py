"""Stores written before commands declared their own identity rule: their runs are re-keyed once, never re-run.

The fixture (data/legacy_store.sql) was written by the code of commit fd61b70 from data/legacy.yaml (see
data/make_legacy_store.py): a ``toy-make`` pre-step whose ``cached`` option has since left its run id, three runs
reading its product (one of them failed), and two runs whose ids did not change.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bertscope import api
from bertscope.core.errors import BertscopeError
from bertscope.sweep.spec import load_spec
from bertscope.sweep.store import ResultStore

DATA = Path(__file__).with_name("data")
SPEC = DATA / "legacy.yaml"
ALLOW = {"allow_plugins": True, "plugins_from": str(DATA.parent)}  # its plugin is ../sweep_toy.py


def toy_score(x: float, seed: int, offset: float = 0.0) -> float:  # the plugin's closed form, restated
    return x * x + 0.01 * seed + offset


def legacy_store(tmp_path: Path) -> tuple[Path, Path]:
    """The fixture as a store beside its runs folder, with the run folders that sweep left behind."""
    store, runs_dir = tmp_path / "results.db", (tmp_path / "results-runs").resolve()
    conn = sqlite3.connect(store)
    conn.executescript((DATA / "legacy_store.sql").read_text(encoding="utf-8").replace("@RUNS_DIR@", str(runs_dir)))
    conn.close()
    with ResultStore(store, create=False) as s:
        for record in s.records():
            folder = Path(record.config["out"])
            folder.mkdir(parents=True)
            (folder / "written-by.txt").write_text(record.id)
            if record.command == "toy-make":
                (folder / "offset.txt").write_text(str(record.config["offset"]))
    return store, runs_dir


def snapshot(store: Path) -> tuple[dict, dict, list]:
    with ResultStore(store, create=False) as s:
        records = {r.id: r for r in s.records()}
        payloads = {rid: s.payload(rid) for rid in records}
        members = sorted((r.experiment, r.id, r.label, repr(r.axes)) for r in s.records(memberships=True))
    return records, payloads, members


def test_a_legacy_store_resumes_without_running_anything_and_is_re_keyed_once(tmp_path):
    store, runs_dir = legacy_store(tmp_path)
    spec = load_spec(SPEC, runs_dir=runs_dir, **ALLOW)
    before, payloads, members = snapshot(store)
    assert set(before) == {r.legacy_id for r in spec.runs}  # today's legacy ids are the ids fd61b70 wrote
    changed = [r for r in spec.runs if r.legacy_id != r.id]
    assert sorted(r.command for r in changed) == ["toy", "toy", "toy", "toy-make"]  # the pre-step and its readers

    # what a dry run shows, read-only: statuses found under legacy ids (a dry run itself imports no plugin, so it
    # lists none of these toy runs: it reads the store the same way for built-in commands)
    from bertscope.sweep.migrate import known_statuses

    with ResultStore(store, create=False) as read_only:
        shown = known_statuses(read_only, spec.runs)
    assert shown == {r.id: before[r.legacy_id].status for r in spec.runs}
    dry = api.sweep(**ALLOW, spec=str(SPEC), store=str(store), dry_run=True)
    assert dry.plan == () and dry.runs_not_loaded == 5  # grid points; their pre-step is not counted
    assert snapshot(store)[0].keys() == before.keys()

    result = api.sweep(**ALLOW, spec=str(SPEC), store=str(store), progress=False)
    assert result.executed == {"done": 0, "failed": 0} and result.skipped == 5 and result.migrated == 4
    assert result.counts == {"pending": 0, "running": 0, "done": 5, "failed": 1}
    after, new_payloads, new_members = snapshot(store)
    assert set(after) == {r.id for r in spec.runs}
    rename = {r.legacy_id: r.id for r in spec.runs}
    assert new_members == sorted((e, rename[rid], label, axes) for e, rid, label, axes in members)
    make = next(r for r in spec.runs if r.command == "toy-make")
    for run in spec.runs:
        old, new = before[run.legacy_id], after[run.id]
        assert (new.status, new.error, new.metrics, new.attempts, new.started, new.finished) == \
               (old.status, old.error, old.metrics, old.attempts, old.started, old.finished)
        assert new_payloads[run.id] == payloads[run.legacy_id]
        assert new.identity == run.identity and new.depends_on == run.depends_on
        assert new.config == {**old.config, **{k: run.options[k] for k in ("out", "model") if k in run.options}}
        assert new.config["out"] == str(runs_dir / run.id)
        assert (runs_dir / run.id / "written-by.txt").read_text() == run.legacy_id  # the folder moved with it
        assert run.id == run.legacy_id or not (runs_dir / run.legacy_id).exists()
        if run.depends_on:
            assert new.config["model"] == str(runs_dir / make.id) and new.identity["model"] == {"@run": make.id}
    with ResultStore(store) as s:
        assert not s.conn.execute("PRAGMA foreign_key_check").fetchall()

    again = api.sweep(**ALLOW, spec=str(SPEC), store=str(store), progress=False)  # once: now the ids are found as they are
    assert again.migrated == 0 and again.executed == {"done": 0, "failed": 0} and again.skipped == 5
    assert snapshot(store)[0].keys() == after.keys()


@pytest.mark.parametrize("migrated", [False, True])
def test_status_and_report_read_a_legacy_store_before_and_after_its_migration(tmp_path, migrated):
    store, _ = legacy_store(tmp_path)
    if migrated:
        api.sweep(**ALLOW, spec=str(SPEC), store=str(store), progress=False)
    status = api.status(store=str(store))
    assert status.counts == {"pending": 0, "running": 0, "done": 5, "failed": 1}
    assert status.by_sweep == {"legacy": {"pending": 0, "running": 0, "done": 5, "failed": 1}}
    assert [row["error"] for row in status.failed] == ["toy failure for x=5.0"]
    report = api.report(store=str(store), out=str(tmp_path / "report"))
    assert report.experiments == ("legacy/main",)  # the failing experiment has no finished run
    md = (tmp_path / "report" / "report.md").read_text()
    main = md.split("\n## legacy/main\n")[1].split("\n## ")[0]
    # "by model", not "original vs deepened": the report found the pre-step behind `made` (a toy-make run)
    assert "legacy/main: by model" in main
    assert "Models produced by a pre-step of the sweep (e.g. `deepen`): made" in main
    for model, offset in (("default", 0.0), ("made", 0.25)):
        for x in (1, 2):
            assert f"| model={model}, x={x} | {toy_score(x, 3, offset):.3f} (n=1) |" in main


def test_a_migration_killed_between_folder_and_store_finishes_on_the_next_sweep(tmp_path):
    store, runs_dir = legacy_store(tmp_path)
    make = next(r for r in load_spec(SPEC, runs_dir=runs_dir, **ALLOW).runs if r.command == "toy-make")
    (runs_dir / make.legacy_id).rename(runs_dir / make.id)  # the folder step ran, the store step did not
    result = api.sweep(**ALLOW, spec=str(SPEC), store=str(store), progress=False)
    assert result.migrated == 4 and result.executed == {"done": 0, "failed": 0}
    assert (runs_dir / make.id / "offset.txt").read_text() == "0.25"


def test_a_migration_never_overwrites_a_folder(tmp_path):
    store, runs_dir = legacy_store(tmp_path)
    make = next(r for r in load_spec(SPEC, runs_dir=runs_dir, **ALLOW).runs if r.command == "toy-make")
    (runs_dir / make.id).mkdir()
    with pytest.raises(BertscopeError, match="cannot migrate run folder .* both exist"):
        api.sweep(**ALLOW, spec=str(SPEC), store=str(store), progress=False)
    with ResultStore(store) as s:
        assert make.legacy_id in s.status_of([make.legacy_id])  # nothing was re-keyed
    assert (runs_dir / make.legacy_id / "offset.txt").is_file()
