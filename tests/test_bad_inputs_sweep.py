"""Bad inputs to ``sweep``, ``status`` and ``report`` through the CLI: each ends in exit 2, one line on stderr, no
traceback, nothing that looks like a result, and no runaway memory (the house rule for every failure a user can
cause; tests/test_bad_inputs.py holds the model-folder and fine-tuning side).

Specs here use the built-in ``reconstruct`` command (no plugin): a dry run validates every run without a model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import user_error

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _laughs(levels: int = 12) -> str:
    """A YAML alias bomb in a spec's free-form ``notes``: 9**levels strings once expanded, a few hundred bytes."""
    lines = ["command: reconstruct", "notes:", "  a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def _huge_grid(axes: int = 4, width: int = 100) -> str:
    """``width**axes`` grid points (10^8 by default) from a spec of a few kilobytes."""
    grid = {"seed": list(range(width)), "max_length": list(range(8, 8 + width)),
            "batch_size": list(range(1, width + 1)), "fit_steps": list(range(1, width + 1))}
    return json.dumps({"command": "reconstruct", "grid": dict(list(grid.items())[:axes])})


#: (case, spec file contents, words the one line must hold)
SPECS: list[tuple[str, str | bytes, str]] = [
    ("spec not UTF-8", "command: reconstruct\nnotes: caf\xe9\n".encode("latin-1"),
     "not UTF-8 text (byte 0xe9 at offset 31)"),
    ("alias bomb", _laughs(), "once its aliases (*name) are expanded"),
    ("recursive alias", "command: reconstruct\nnotes: &a [1, *a]\n", "refers to a list or mapping that contains it"),
    ("nested 10,000 deep", "command: reconstruct\nnotes: " + "[" * 10_000 + "]" * 10_000 + "\n",
     "nested deeper than"),
    ("10^8-run grid", _huge_grid(), "its grids hold 100,000,000 runs, more than the limit of 100,000"),
    ("misspelled pre-step command",
     "command: reconstruct\ngrid:\n  model: [{deepn: {model: m, layer_map: '0,1'}, label: 2L}]\n",
     "deepn names no command a pre-step can run"),
    ("misspelled pre-step key",
     "command: reconstruct\ngrid:\n  model: [{deepen: {model: m, layer_map: '0,1'}, lable: 2L}]\n",
     "unknown pre-step key(s) lable beside 'deepen'"),
    ("unknown pre-step option",
     "command: reconstruct\ngrid:\n  model: [{deepen: {model: m, layer_mapp: '0,1'}}]\n",
     "unknown option(s) layer_mapp for 'deepen'"),
    ("spec is a list", "- command: reconstruct\n", "a spec is a mapping"),
    ("two documents", "command: reconstruct\n---\ncommand: reconstruct\n", "expected a single document"),
]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "run"])
@pytest.mark.parametrize("case, text, words", SPECS, ids=[c for c, _, _ in SPECS])
def test_a_bad_spec_is_one_line_before_anything_runs(case, text, words, dry_run, tmp_path, capsys) -> None:
    spec = _write(tmp_path / "spec.yaml", text)
    store = tmp_path / "r.db"
    err = user_error(["sweep", str(spec), "--store", str(store), "--no-progress",
                      *(["--dry-run"] if dry_run else [])], capsys)
    assert words in err
    assert not store.exists() and not (tmp_path / "r-runs").exists()


def _child_peak_kb(argv: list[str], tmp_path: Path) -> tuple[int, str, int]:
    """(exit code, stderr, peak resident kB) of the CLI in a fresh process, which reports its own peak."""
    code = ("import resource, sys\nfrom bertscope.cli import main\ncode = main(sys.argv[1:])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(code)\n")
    env = {"PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    return done.returncode, done.stderr.strip(), int(done.stdout.split()[-1])


@pytest.mark.parametrize("case, text", [("10^8-run grid", _huge_grid()), ("alias bomb", _laughs(30))],
                         ids=["10^8-run grid", "alias bomb"])
def test_a_runaway_spec_is_refused_in_bounded_memory(case, text, tmp_path) -> None:
    """The same process with a one-run spec is the baseline: the runaway one may not grow past it by 100 MB."""
    small = _write(tmp_path / "small.yaml", "command: reconstruct\ngrid: {seed: [1]}\n")
    code, _, baseline = _child_peak_kb(["sweep", str(small), "--dry-run", "--store", "r.db", "--no-progress"],
                                       tmp_path)
    assert code == 0
    spec = _write(tmp_path / "spec.yaml", text)
    code, err, peak = _child_peak_kb(["sweep", str(spec), "--dry-run", "--store", "r.db", "--no-progress"],
                                     tmp_path)
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    assert peak - baseline < 100_000, (peak, baseline)


#: (case, extra sweep flags, words)
SWEEP_FLAGS: list[tuple[str, list[str], str]] = [
    ("--max-runs 0", ["--max-runs", "0"], "--max-runs must be at least 1"),
    ("--max-runs below the grid", ["--max-runs", "2"], "its grids hold 3 runs, more than the limit of 2"),
]


@pytest.mark.parametrize("case, flags, words", SWEEP_FLAGS, ids=[c for c, _, _ in SWEEP_FLAGS])
def test_bad_sweep_flags_are_one_line(case, flags, words, tmp_path, capsys) -> None:
    spec = _write(tmp_path / "spec.yaml", "command: reconstruct\ngrid: {seed: [1, 2, 3]}\n")
    err = user_error(["sweep", str(spec), "--store", str(tmp_path / "r.db"), "--dry-run", *flags], capsys)
    assert words in err


_Damage = Callable[[Path], None]


# -- damaged store records -------------------------------------------------------------------------------------

TOY = str(Path(__file__).with_name("sweep_toy.py"))


def _filled_store(tmp_path: Path, n: int = 4) -> tuple[Path, list[str]]:
    from bertscope.runs.store import ResultStore
    from bertscope.sweep.spec import parse_spec

    runs = parse_spec({"plugins": [TOY], "command": "toy", "grid": {"x": list(range(1, n + 1)), "seed": [7]}},
                      runs_dir=tmp_path / "runs", default_name="s", allow_plugins=True,
                      plugins_from=str(Path(TOY).parent)).runs
    path = tmp_path / "r.db"
    with ResultStore(path) as store:
        store.register("s", {"command": "toy"}, "s.yaml", runs)
        for run in runs:
            store.mark_running(run.id)
            store.mark_done(run.id, metrics={"score": float(run.options["x"])},
                            payload={"score": 1.0, "records": [{"layer": 0, "top1": 0.5}]}, duration=0.1,
                            worker="w", environment={})
    return path, [r.id for r in runs]


def _sql(path: Path, statement: str, *args: object) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute(statement, args)
    conn.commit()
    conn.close()


def _flip_payload_byte(path: Path, run_id: str) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    data = bytearray(conn.execute("SELECT data FROM payloads WHERE run_id=?", (run_id,)).fetchone()[0])
    data[len(data) // 2] ^= 0xFF
    conn.execute("UPDATE payloads SET data=? WHERE run_id=?", (bytes(data), run_id))
    conn.commit()
    conn.close()


#: (case, damage of one run's record, words naming why)
DAMAGES: list[tuple[str, Callable[[Path, str], None], str]] = [
    ("flipped payload byte", _flip_payload_byte, "payload is damaged"),
    ("payload not zlib", lambda p, r: _sql(p, "UPDATE payloads SET data=? WHERE run_id=?", b"plain bytes", r),
     "payload is damaged"),
    ("metrics not JSON", lambda p, r: _sql(p, "UPDATE runs SET metrics='{score: 1' WHERE id=?", r),
     "metrics is not JSON"),
    ("config a JSON list", lambda p, r: _sql(p, "UPDATE runs SET config='[1, 2]' WHERE id=?", r),
     "config is a JSON list, not a dict"),
    ("metrics not numbers", lambda p, r: _sql(p, "UPDATE runs SET metrics='{\"score\": \"high\"}' WHERE id=?", r),
     "metrics are not numbers"),
]


@pytest.mark.parametrize("case, damage, words", DAMAGES, ids=[c for c, _, _ in DAMAGES])
def test_a_damaged_record_is_named_and_skipped_by_status_and_report(case, damage, words, tmp_path, capsys) -> None:
    from bertscope.cli import main

    path, ids = _filled_store(tmp_path)
    damage(path, ids[1])
    capsys.readouterr()
    assert main(["status", "--store", str(path)]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    if "payload" not in words:  # status reads no payload (it stays quick on any store)
        assert "skipped 1 damaged record(s)" in " ".join(out.out.split()) and ids[1] in out.out.replace("\n", "")
    report = tmp_path / "rep"
    assert main(["report", "--store", str(path), "--out", str(report)]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    text = (report / "report.md").read_text()
    assert "Skipped 1 damaged record(s)" in text and ids[1] in text and words in text
    assert json.loads((report / "report.json").read_text())["damaged"].startswith("skipped 1 damaged")


def test_a_store_of_damaged_records_only_is_one_line(tmp_path, capsys) -> None:
    path, ids = _filled_store(tmp_path, 2)
    for rid in ids:
        _sql(path, "UPDATE runs SET config='[1]' WHERE id=?", rid)
    for argv in (["status", "--store", str(path)], ["report", "--store", str(path), "--out", str(tmp_path / "rep")]):
        assert "skipped 2 damaged record(s)" in user_error(argv, capsys)
    assert not (tmp_path / "rep" / "report.md").exists()


def test_store_and_runs_dir_paths_that_cross_a_file_are_one_line(tmp_path, capsys) -> None:
    blocker = _write(tmp_path / "plain.txt", "a file, not a folder")
    spec = _write(tmp_path / "spec.yaml", "command: reconstruct\ngrid: {seed: [1]}\n")
    err = user_error(["sweep", str(spec), "--store", str(blocker / "r.db"), "--no-progress"], capsys)
    assert "cannot create the folder of --store" in err
    err = user_error(["sweep", str(spec), "--store", str(tmp_path / "r.db"), "--runs-dir", str(blocker / "runs"),
                      "--no-progress"], capsys)
    assert "cannot create --runs-dir" in err
    for argv in (["status", "--store", str(blocker / "r.db")],
                 ["report", "--store", str(blocker / "r.db"), "--out", str(tmp_path / "rep")]):
        assert "no result store at" in user_error(argv, capsys)


def test_a_store_in_a_folder_that_cannot_be_written_says_so(tmp_path, capsys, monkeypatch) -> None:
    """A read-only filesystem (simulated: tests may run as root): SQLite cannot open the WAL store, and the line
    says where the trouble is, not that the file is no result store."""
    import sqlite3

    from bertscope.runs import store as store_module

    path, _ = _filled_store(tmp_path, 1)
    connect = sqlite3.connect

    def refuse(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.close()
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite3, "connect", refuse)
    monkeypatch.setattr(store_module.os, "access", lambda where, mode: False)
    err = user_error(["status", "--store", str(path)], capsys)
    assert "read-only filesystem" in err and "not a bertscope result store" not in err
