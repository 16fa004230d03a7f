"""Running sweeps: local (serial and worker processes) and Ray; resume, retry, failures, SIGKILL mid-sweep."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bertscope import api
from bertscope.cli import main
from bertscope.core.errors import BertscopeError
from bertscope.runs.store import ResultStore

TOY = str(Path(__file__).with_name("sweep_toy.py"))
TESTS = str(Path(__file__).parent)
#: the toy plugin lives beside the tests, not beside the specs (in tmp_path): allow it from there
ALLOW = {"allow_plugins": True, "plugins_from": TESTS}
ALLOW_FLAGS = ["--allow-plugins", "--plugins-from", TESTS]
REPO = Path(__file__).resolve().parents[1]


def toy_score(x: float, seed: int, offset: float = 0.0) -> float:  # same closed form as the plugin, restated
    return x * x + 0.01 * seed + offset


def write_spec(tmp_path: Path, name: str = "toy", **fields) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"plugins": [TOY], "command": "toy", **fields}))
    return path


def executions(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def check_scores(store_path: Path, offset_of=lambda record: 0.0) -> dict[str, float]:
    with ResultStore(store_path, create=False) as store:
        scores = {}
        for record in store.records(command="toy"):
            assert record.status == "done", record
            cfg = record.config
            expected = toy_score(cfg["x"], cfg["seed"], offset_of(record))
            assert record.metrics["score"] == pytest.approx(expected)
            assert store.payload(record.id)["score"] == pytest.approx(expected)
            assert (Path(cfg["out"]) / "result.json").is_file()  # the command's own files survive
            scores[record.id] = record.metrics["score"]
        return scores


def test_serial_sweep_runs_everything_then_skips_done_runs(tmp_path):
    log = tmp_path / "log.txt"
    spec = write_spec(tmp_path, base={"log": str(log)}, grid={"x": [1, 2, 3], "seed": [1, 2]})
    store = tmp_path / "r.db"
    result = api.sweep(**ALLOW, spec=str(spec), store=str(store), progress=False)
    assert result.counts == {"pending": 0, "running": 0, "done": 6, "failed": 0}
    assert result.executed == {"done": 6, "failed": 0} and result.exit_code == 0
    assert len(executions(log)) == 6
    check_scores(store)
    with ResultStore(store) as s:
        env = s.records()[0].environment
        assert env["versions"]["torch"] and "git" in env
    again = api.sweep(**ALLOW, spec=str(spec), store=str(store), progress=False)
    assert again.skipped == 6 and again.executed == {"done": 0, "failed": 0}
    assert len(executions(log)) == 6  # nothing ran twice
    # growing the grid runs only the new points
    bigger = write_spec(tmp_path, base={"log": str(log)}, grid={"x": [1, 2, 3, 4], "seed": [1, 2]})
    grown = api.sweep(**ALLOW, spec=str(bigger), store=str(store), progress=False)
    assert grown.executed["done"] == 2 and len(executions(log)) == 8


def test_failures_are_recorded_never_stop_the_sweep_and_are_retried_on_request(tmp_path):
    spec = write_spec(tmp_path, grid={"x": [1, 2], "fail": [False, True], "crash": [False, True]})
    store = tmp_path / "r.db"
    result = api.sweep(**ALLOW, spec=str(spec), store=str(store), progress=False)
    assert result.executed == {"done": 2, "failed": 6} and result.exit_code == 1
    with ResultStore(store) as s:
        failed = {r.axes["x"]: r for r in s.records(status="failed") if not r.axes["fail"]}
        assert failed[1].error == "ZeroDivisionError: toy bug" and "Traceback" in failed[1].traceback
        user = [r for r in s.records(status="failed") if r.axes["fail"]]
        assert all(r.error.startswith("toy failure for x=") and r.traceback is None for r in user)
    assert api.sweep(**ALLOW, spec=str(spec), store=str(store), progress=False).executed == {"done": 0, "failed": 0}
    retried = api.sweep(**ALLOW, spec=str(spec), store=str(store), progress=False, retry_failed=True)
    assert retried.executed == {"done": 0, "failed": 6}
    with ResultStore(store) as s:
        assert {r.attempts for r in s.records(status="failed")} == {2}
    # the CLI prints the summary and exits 1 when runs failed, 2 for a user error
    assert main(["sweep", str(spec), "--store", str(store), "--no-progress", *ALLOW_FLAGS]) == 1
    assert main(["sweep", str(tmp_path / "missing.yaml"), "--store", str(store)]) == 2


def test_pre_step_runs_once_and_a_failed_pre_step_fails_its_dependents(tmp_path):
    log = tmp_path / "log.txt"
    made = {"toy-make": {"offset": 0.25}, "label": "made"}
    spec = write_spec(tmp_path, base={"log": str(log)}, grid={"model": [None, made], "x": [1, 2], "seed": [3]})
    store = tmp_path / "r.db"
    result = api.sweep(**ALLOW, spec=str(spec), store=str(store), progress=False)
    assert result.counts["done"] == 5
    check_scores(store, offset_of=lambda r: 0.25 if r.config["model"] else 0.0)
    broken = write_spec(tmp_path, "broken", grid={"model": [{"toy-make": {"offset": 1.0}}], "x": [1, 2]})
    runs_dir = tmp_path / "r-runs"
    from bertscope.sweep.spec import load_spec

    pre = next(r for r in load_spec(broken, runs_dir=runs_dir.resolve(), **ALLOW).runs if r.command == "toy-make")
    Path(pre.options["out"]).parent.mkdir(parents=True, exist_ok=True)
    Path(pre.options["out"]).write_text("a file where the folder should go")
    failed = api.sweep(**ALLOW, spec=str(broken), store=str(store), progress=False)
    assert failed.executed == {"done": 0, "failed": 3}
    with ResultStore(store) as s:
        errors = {r.id: r.error for r in s.records(sweep="broken")}
    assert all(f"pre-step {pre.id} failed" == e for rid, e in errors.items() if rid != pre.id)


def test_worker_processes_give_the_same_results_as_serial(tmp_path):
    spec = write_spec(tmp_path, grid={"x": [0.5, 1.5, 2.5], "seed": [1, 2]})
    serial = check_scores(Path(api.sweep(**ALLOW, spec=str(spec), store=str(tmp_path / "a.db"), progress=False).store))
    parallel_result = api.sweep(**ALLOW, spec=str(spec), store=str(tmp_path / "b.db"), progress=False, workers=2, threads=1)
    assert parallel_result.counts["done"] == 6
    parallel = check_scores(tmp_path / "b.db")
    assert parallel == serial
    with ResultStore(tmp_path / "b.db") as s:
        workers = {r.worker for r in s.records()}
    assert all(w and not w.endswith(f":{os.getpid()}") for w in workers)  # ran in other processes


def test_a_second_sweep_on_the_same_store_is_refused(tmp_path):
    from bertscope.runs.store import StoreLock

    spec = write_spec(tmp_path, grid={"x": [1]})
    with StoreLock(tmp_path / "r.db"), pytest.raises(BertscopeError, match="in use by a running sweep"):
        api.sweep(**ALLOW, spec=str(spec), store=str(tmp_path / "r.db"), progress=False)


def test_status_counts_slowest_and_failed(tmp_path):
    spec = write_spec(tmp_path, grid={"x": [1, 2, 3], "sleep": [0.0, 0.05], "fail": [False, True]})
    store = tmp_path / "r.db"
    api.sweep(**ALLOW, spec=str(spec), store=str(store), progress=False)
    status = api.status(store=str(store), slowest=2)
    assert status.counts == {"pending": 0, "running": 0, "done": 6, "failed": 6}
    assert status.by_sweep == {"toy": status.counts}
    assert len(status.slowest) == 2 and all(row["duration"] >= 0.05 for row in status.slowest)
    assert len(status.failed) == 6 and all(row["error"].startswith("toy failure") for row in status.failed)
    assert main(["status", "--store", str(store)]) == 0
    assert main(["status", "--store", str(tmp_path / "none.db")]) == 2
    with pytest.raises(BertscopeError, match="no sweep named"):
        api.status(store=str(store), sweep="other")
    # a run left 'running': in flight while a sweep holds the store, interrupted when none does
    from bertscope.runs.store import StoreLock

    with ResultStore(store) as s:
        failed_id = s.records(status="failed")[0].id
        s.mark_running(failed_id)
    assert api.status(store=str(store)).interrupted == 1
    with StoreLock(store):
        live = api.status(store=str(store))
        assert live.active and live.interrupted == 0 and [r["id"] for r in live.running] == [failed_id]


def test_dry_run_lists_runs_and_writes_nothing(tmp_path):
    spec = tmp_path / "recon.yaml"  # a built-in command: a dry run imports no plugin, so it lists no toy runs
    spec.write_text(yaml.safe_dump({"command": "reconstruct", "base": {"max_examples": 4}, "grid": {"seed": [1, 2]}}))
    result = api.sweep(spec=str(spec), store=str(tmp_path / "r.db"), dry_run=True)
    assert [row["status"] for row in result.plan] == ["new", "new"]
    assert not (tmp_path / "r.db").exists()


def _done_ids(store: Path) -> list[str]:
    if not store.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
        try:
            return [r[0] for r in conn.execute("SELECT id FROM runs WHERE status='done'")]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return []


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sigkill_mid_sweep_loses_nothing_and_duplicates_nothing(tmp_path, workers):
    log = tmp_path / "log.txt"
    n = 12
    spec = write_spec(tmp_path, base={"sleep": 0.15, "log": str(log)}, grid={"x": list(range(n))})
    store = tmp_path / "r.db"
    command = [sys.executable, "-m", "bertscope", "sweep", str(spec), "--store", str(store), "--no-progress",
               "--workers", str(workers), "--threads", "1", *ALLOW_FLAGS]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(_done_ids(store)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = set(_done_ids(store))
    assert 3 <= len(before) < n, "the sweep should have been killed mid-way"
    with ResultStore(store) as s:
        finished_before = {r.id: r.finished for r in s.records() if r.status == "done"}
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    with ResultStore(store) as s:
        records = s.records()
        assert len(records) == n and len({r.id for r in records}) == n
        assert all(r.status == "done" for r in records)
        for rid, finished in finished_before.items():  # finished results were kept, not recomputed
            assert s.record(rid).finished == finished and s.record(rid).attempts == 1
    check_scores(store)
    ran = executions(log)
    assert n <= len(ran) <= n + workers  # only runs in flight at the kill ran twice


def test_ray_executor_gives_the_same_results_as_local(tmp_path, local_ray):
    made = {"toy-make": {"offset": 0.25}, "label": "made"}
    spec = write_spec(tmp_path, grid={"model": [None, made], "x": [1, 2, 3], "seed": [1, 2]},
                      resources={"cpus": 1})
    local = api.sweep(**ALLOW, spec=str(spec), store=str(tmp_path / "local.db"), progress=False)
    ray_result = api.sweep(**ALLOW, spec=str(spec), store=str(tmp_path / "ray.db"), progress=False, executor="ray")
    assert local.counts == ray_result.counts == {"pending": 0, "running": 0, "done": 13, "failed": 0}
    offset = lambda r: 0.25 if r.config["model"] else 0.0  # noqa: E731
    assert check_scores(tmp_path / "ray.db", offset) == check_scores(tmp_path / "local.db", offset)
    with ResultStore(tmp_path / "ray.db") as s:
        assert all(not r.worker.endswith(f":{os.getpid()}") for r in s.records())  # ran in Ray workers
    failing = write_spec(tmp_path, "failing", grid={"x": [1, 2], "crash": [False, True]})
    result = api.sweep(**ALLOW, spec=str(failing), store=str(tmp_path / "ray.db"), progress=False, executor="ray")
    assert result.executed == {"done": 2, "failed": 2}
    assert local_ray.is_initialized()  # the sweep did not shut down a Ray it did not start


def test_real_commands_reconstruct_over_a_checkpoint_and_its_deepened_variant(tmp_path, tiny_checkpoint):
    folder = str(tiny_checkpoint("bert", 2))
    spec = tmp_path / "recon.yaml"
    spec.write_text(yaml.safe_dump({
        "command": "reconstruct",
        "base": {"max_examples": 4, "max_length": 16, "head": "pretrained", "device": "cpu", "batch_size": 4},
        "grid": {"model": [folder, {"deepen": {"model": folder, "duplicate": "1", "device": "cpu"}, "label": "3L"}],
                 "seed": [1]},
    }))
    store = tmp_path / "r.db"
    result = api.sweep(**ALLOW, spec=str(spec), store=str(store), progress=False)
    assert result.counts == {"pending": 0, "running": 0, "done": 3, "failed": 0}, result.failures
    with ResultStore(store) as s:
        runs = s.records(command="reconstruct")
        deepen = s.records(command="deepen")[0]
        for record in runs:
            # the same configuration run directly gives the same metrics (the sweep adds nothing of its own)
            direct = api.reconstruct(**{**record.config, "out": None})
            assert record.metrics == pytest.approx(direct.metrics(), nan_ok=True)
            layers = sorted({r["layer"] for r in s.payload(record.id)["records"]})
            deep = record.axes["model"] == "3L"
            assert layers == list(range(4 if deep else 3))
            assert record.config["model"] == (deepen.config["out"] if deep else folder)
    assert Path(deepen.config["out"], "config.json").is_file()  # the pre-step's checkpoint survives
    report = api.report(store=str(store), out=str(tmp_path / "report"))
    md = (tmp_path / "report" / "report.md").read_text()
    assert report.plots >= 1 and "reconstruction curves per layer" in md and "model=3L" in md


@pytest.mark.slow
def test_real_study_sweep_over_tasks_and_seeds_then_report(tmp_path, tiny_checkpoint, glue_dir):
    from scipy import stats as scipy_stats

    folder = str(tiny_checkpoint("bert", 2))
    spec = tmp_path / "layers.yaml"
    spec.write_text(yaml.safe_dump({
        "command": "layers",
        "base": {"model": folder, "data_dir": str(glue_dir), "max_train": 16, "max_eval": 16, "epochs": 1,
                 "batch_size": 8, "max_length": 32, "device": "cpu", "lr": 1e-3},
        "grid": {"task": ["rte", "mrpc"], "seed": [1, 2]},
    }))
    store = tmp_path / "r.db"
    result = api.sweep(**ALLOW, spec=str(spec), store=str(store), progress=False)
    assert result.counts["done"] == 4, result.failures
    with ResultStore(store) as s:
        payloads = {(r.axes["task"], r.axes["seed"]): s.payload(r.id) for r in s.records()}
    api.report(store=str(store), out=str(tmp_path / "report"))
    md = (tmp_path / "report" / "report.md").read_text()
    assert "score by layer" in md and "Score by layer and task" in md
    for task in ("rte", "mrpc"):
        for layer in range(3):  # 0 = embeddings, 1..2
            values = [next(row["score"] for row in payloads[(task, seed)]["table"] if row["layer"] == layer)
                      for seed in (1, 2)]
            mean, std = sum(values) / 2, abs(values[0] - values[1]) / 2 ** 0.5
            half = scipy_stats.t.ppf(0.975, 1) * std / 2 ** 0.5  # the 95% Student-t interval over 2 seeds
            assert f"{mean:.3f} ± {std:.3f} [{mean - half:.3f}, {mean + half:.3f}] (n=2)" in md


def _glue_spec(tmp_path: Path, glue_dir: Path) -> Path:
    """A small sweep on the embedded default model and a GLUE subset (the issue's acceptance scenario)."""
    spec = tmp_path / "glue.yaml"
    spec.write_text(yaml.safe_dump({
        "command": "finetune",
        "base": {"task": "rte", "data_dir": str(glue_dir), "max_train": 16, "max_eval": 16, "epochs": 1,
                 "batch_size": 8, "max_length": 32, "device": "cpu", "lr": 1e-4},
        "grid": {"dims": ["all", "random:8"], "seed": [1, 2, 3]},
    }))
    return spec


@pytest.mark.slow
def test_glue_sweep_on_the_default_model_survives_sigkill(tmp_path, glue_dir):
    spec = _glue_spec(tmp_path, glue_dir)
    store = tmp_path / "r.db"
    command = [sys.executable, "-m", "bertscope", "sweep", str(spec), "--store", str(store), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not _done_ids(store) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = set(_done_ids(store))
    assert 1 <= len(before) < 6
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    with ResultStore(store) as s:
        records = s.records()
        assert len(records) == 6 and all(r.status == "done" for r in records)
        assert all(s.record(rid).attempts == 1 for rid in before)
        assert all(0.0 <= r.metrics["final.combined_score"] <= 1.0 for r in records)


@pytest.mark.slow
def test_glue_sweep_gives_the_same_results_on_ray_and_locally(tmp_path, glue_dir, local_ray):
    spec = _glue_spec(tmp_path, glue_dir)
    api.sweep(**ALLOW, spec=str(spec), store=str(tmp_path / "local.db"), progress=False)
    api.sweep(**ALLOW, spec=str(spec), store=str(tmp_path / "ray.db"), progress=False, executor="ray")
    with ResultStore(tmp_path / "local.db") as a, ResultStore(tmp_path / "ray.db") as b:
        local = {r.id: r.metrics for r in a.records()}
        remote = {r.id: r.metrics for r in b.records()}
    assert local.keys() == remote.keys() and len(local) == 6
    for rid, metrics in local.items():
        for key in ("final.combined_score", "final.accuracy"):
            assert remote[rid][key] == pytest.approx(metrics[key], abs=1e-6), (rid, key)


def test_ray_address_errors_are_one_line_user_errors(tmp_path):
    ray = pytest.importorskip("ray")
    import socket as _socket

    if ray.is_initialized():  # an initialised Ray (another test's) would be used instead of --address
        ray.shutdown()

    spec = write_spec(tmp_path, grid={"x": [1]})
    with _socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.time()
    with pytest.raises(BertscopeError, match=f"cannot reach a Ray cluster at 127.0.0.1:{port}"):
        api.sweep(**ALLOW, spec=str(spec), store=str(tmp_path / "r.db"), progress=False, executor="ray",
                  address=f"127.0.0.1:{port}")
    assert time.time() - start < 30
    with pytest.raises(BertscopeError, match="--address needs --executor ray"):
        api.sweep(**ALLOW, spec=str(spec), store=str(tmp_path / "r.db"), address="auto")
    with ResultStore(tmp_path / "r.db") as s:  # nothing ran, nothing was lost: the run is still pending
        assert s.counts() == {"pending": 1, "running": 0, "done": 0, "failed": 0}


# -- preemption and clean-up ---------------------------------------------------------------------------------------

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) and stat[1] == pid:
            found.add(int(entry.name))
    return found


def _workers(pids: set[int]) -> set[int]:
    """The sweep's worker processes among ``pids`` (not multiprocessing's resource tracker)."""
    def cmdline(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""

    return {p for p in pids if b"spawn_main" in cmdline(p)}


def _alive(pids: set[int]) -> set[int]:
    return {p for p in pids if (stat := _proc_stat(p)) is not None and stat[0] not in ("Z", "X")}


def _wait_for(condition, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended early (exit {proc.returncode})")
        if time.time() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _sweep_command(spec: Path, store: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "bertscope", "sweep", str(spec), "--store", str(store), "--no-progress",
            "--workers", str(workers), "--threads", "1", "--allow-plugins", "--plugins-from", "any"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def _start_busy_sweep(tmp_path: Path, n: int, sleep: float, workers: int = 2
                      ) -> tuple[subprocess.Popen, list[str], Path, Path]:
    """A sweep of ``n`` toy runs, returned once each of its ``workers`` has a run in hand."""
    log = tmp_path / "log.txt"
    spec = write_spec(tmp_path, base={"sleep": sleep, "log": str(log)}, grid={"x": list(range(1, n + 1))})
    store = tmp_path / "r.db"
    command = _sweep_command(spec, store, workers)
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(executions(log)) >= workers, 120, proc)
    return proc, command, store, log


@linux_only
def test_a_killed_driver_leaves_no_worker_and_a_rerun_completes_every_run_once(tmp_path):
    n = 4
    proc, command, store, log = _start_busy_sweep(tmp_path, n, sleep=1.5)
    children = _children(proc.pid)
    assert len(_workers(children)) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(executions(log))
    _wait_for(lambda: not _alive(children), 30)  # the kernel's parent-death signal, or the watchdog, ends them
    serial = list(command)
    serial[serial.index("--workers") + 1] = "1"  # the same runs; no second pool to start
    rerun = subprocess.run(serial, env=_env(), capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    with ResultStore(store) as s:
        records = s.records()
        assert len(records) == n and all(r.status == "done" for r in records)
    check_scores(store)
    ran = executions(log)
    old_pids = {line.split()[0] for line in ran[:killed_at]}
    assert all(line.split()[0] not in old_pids for line in ran[killed_at:])  # no orphan started anything
    per_run = [sum(line.split()[1] == f"x={float(x)}" for line in ran[killed_at:]) for x in range(1, n + 1)]
    assert per_run == [1] * n  # after the kill, every run ran exactly once (those in flight started over)


@linux_only
@pytest.mark.slow
def test_a_dead_worker_fails_only_its_own_run(tmp_path):
    proc, _, store, log = _start_busy_sweep(tmp_path, 3, sleep=3.0)
    first = executions(log)[0].split()
    victim, victim_x = int(first[0]), first[1]
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err  # a failed run: the sweep says so
    with ResultStore(store) as s:
        states = {f"x={float(r.config['x'])}": (r.status, r.error) for r in s.records()}
    assert [state for key, (state, _) in states.items() if key != victim_x] == ["done", "done"], states
    assert states[victim_x][0] == "failed"
    assert states[victim_x][1].startswith("worker process died (killed by SIGKILL"), states[victim_x]


@linux_only
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_stops_a_sweep_its_workers_and_notes_their_runs(tmp_path, workers):
    proc, _, store, log = _start_busy_sweep(tmp_path, 4, sleep=60.0, workers=workers)
    children = _children(proc.pid)
    worker_pids = _workers(children)
    assert len(worker_pids) == (workers if workers > 1 else 0)  # one worker: the run is in the driver's process
    in_flight = {line.split()[1] for line in executions(log)}
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["bertscope sweep: terminated (SIGTERM); results already finished were kept"]
    assert not _alive(worker_pids)  # stopped and reaped before the driver exited
    _wait_for(lambda: not _alive(children), 10)  # nothing else of the sweep's is left either
    with ResultStore(store) as s:
        stopped = {f"x={float(r.config['x'])}": r for r in s.records(status="running")}
        assert s.counts()["pending"] == 4 - workers
    assert set(stopped) == in_flight and len(in_flight) == workers
    assert all(r.error.startswith("interrupted by SIGTERM") for r in stopped.values())
    assert api.status(store=str(store)).interrupted == workers


@linux_only
def test_two_drivers_through_a_symlinked_store_path_never_both_run_a_run(tmp_path):
    """The fault trial: one driver reaches the store through a linked folder, others through the real path and a
    link to the file. While the first holds the store every other is refused in one line; every run runs once."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    (tmp_path / "alias.db").symlink_to(real / "r.db")
    log = tmp_path / "log.txt"
    n = 2
    spec = write_spec(tmp_path, base={"sleep": 10.0, "log": str(log)}, grid={"x": list(range(1, n + 1))})
    first = subprocess.Popen(_sweep_command(spec, tmp_path / "link" / "r.db", 1), env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(executions(log)) >= 1, 120, first)
    for spelling in (real / "r.db", tmp_path / "alias.db"):
        second = subprocess.run(_sweep_command(spec, spelling, 1), env=_env(), capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().count("\n") == 0 and "is in use by a running sweep" in second.stderr
        assert first.poll() is None  # refused while the first was still running
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    per_run = [sum(line.split()[1] == f"x={float(x)}" for line in executions(log)) for x in range(1, n + 1)]
    assert per_run == [1] * n
    with ResultStore(real / "r.db", create=False) as s:
        assert s.counts()["done"] == n


def test_a_run_waits_for_a_live_writer_of_its_folder(tmp_path, monkeypatch):
    """A run folder still owned by a live process (a worker of a stopped sweep) is neither cleared nor filled."""
    from filelock import FileLock

    from bertscope.sweep import executors

    out = tmp_path / "runs" / "r1"
    out.mkdir(parents=True)
    (out / "result.json").write_text("{}")  # an earlier attempt's file: not the truth
    task = executors.Task("r1", "toy", {"x": 3.0, "out": str(out)}, plugins=(TOY,), allow_plugins=True)
    monkeypatch.setattr(executors, "CLAIM_TIMEOUT_SECONDS", 0.2)
    with FileLock(tmp_path / "runs" / ".r1.lock"):  # what that worker holds while it lives
        busy = executors.execute(task)
    assert not busy.ok and "still being written by another process" in busy.error
    assert (out / "result.json").read_text() == "{}"  # untouched while owned
    done = executors.execute(task)
    assert done.ok and done.metrics["score"] == pytest.approx(toy_score(3.0, 0))


def test_a_worker_imports_plugins_only_when_the_driver_was_allowed_to(tmp_path):
    from bertscope.sweep.executors import Task, execute

    plugin = tmp_path / "mark.py"
    plugin.write_text("from pathlib import Path\nPath(__file__).with_suffix('.imported').write_text('x')\n"
                      "BERTSCOPE_COMMANDS = []\n")
    refused = execute(Task("mark-1", "no-such-toy-command", {}, plugins=(str(plugin),)))
    assert not refused.ok and "--allow-plugins" in refused.error and "\n" not in refused.error
    assert not (tmp_path / "mark.imported").exists()
    allowed = execute(Task("mark-1", "no-such-toy-command", {}, plugins=(str(plugin),), allow_plugins=True))
    assert (tmp_path / "mark.imported").exists()  # imported (the command it lacks fails the run afterwards)
    assert not allowed.ok and "not registered in this worker" in allowed.error


def test_a_sweep_with_plugins_runs_nothing_without_the_flag(tmp_path):
    log = tmp_path / "log.txt"
    spec = write_spec(tmp_path, base={"log": str(log)}, grid={"x": [1, 2]})
    store = tmp_path / "r.db"
    with pytest.raises(BertscopeError, match="pass --allow-plugins"):
        api.sweep(spec=str(spec), store=str(store), progress=False)
    assert main(["sweep", str(spec), "--store", str(store), "--no-progress"]) == 2
    assert not store.exists() and not log.exists()
    dry = api.sweep(spec=str(spec), store=str(store), dry_run=True)  # lists what it can: no built-in runs here
    assert dry.plan == () and dry.runs_not_loaded == 2 and dry.commands_not_loaded == ("toy",)


def test_retrying_a_failed_study_run_retries_the_failed_runs_inside_it(tmp_path):
    """A sweep's --retry-failed starts a failed study run with --retry-failed (no part of its id): the study then runs
    its own failed runs again instead of stopping at them; other commands get their options unchanged."""
    from bertscope.sweep.driver import _retrying
    from bertscope.sweep.spec import parse_spec

    study, plain = parse_spec({"experiments": [
        {"command": "layers", "base": {"task": "rte", "layers": "0,1"}},
        {"command": "finetune", "base": {"task": "rte"}}]}, runs_dir=tmp_path).runs
    assert "retry_failed" not in study.identity and study.options["retry_failed"] is False
    assert _retrying(study) == {**study.options, "retry_failed": True}
    assert _retrying(plain) is plain.options


def test_sweep_progress_is_a_bar_on_a_terminal_and_plain_lines_in_a_pipe(tmp_path):
    import io

    from bertscope.sweep.driver import _progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    pipe = io.StringIO()
    plain = _progress(2, "s", enabled=True, stream=pipe)
    for done in (1, 2):
        plain.update(1)
        plain.set_postfix(done=done, failed=0, refresh=False)
    plain.close()
    lines = pipe.getvalue().splitlines()
    assert "\r" not in pipe.getvalue() and len(lines) == 2 and lines[1].endswith("sweep s: 2/2 runs (done 2, failed 0)")
    bar = _progress(2, "s", enabled=True, stream=Terminal())
    assert type(bar).__name__ != "_PlainProgress" and not bar.disable
    bar.close()
    assert _progress(2, "s", enabled=False, stream=Terminal()).disable
    assert _progress(2, "s", enabled=False, stream=pipe).disable


def test_a_piped_sweep_writes_timestamped_lines_not_bars(tmp_path, capsys):
    import re

    spec = write_spec(tmp_path, grid={"x": [1, 2]})
    capsys.readouterr()
    assert main(["sweep", str(spec), "--store", str(tmp_path / "r.db"), *ALLOW_FLAGS]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if "sweep toy:" in line]
    assert len(lines) == 2 and all(re.match(r"\d\d:\d\d:\d\d sweep toy: [12]/2 runs \(done [12], failed 0\)", x)
                                   for x in lines), err
    capsys.readouterr()
    assert main(["sweep", str(spec), "--store", str(tmp_path / "r2.db"), "--no-progress", *ALLOW_FLAGS]) == 0
    assert "sweep toy:" not in capsys.readouterr().err
