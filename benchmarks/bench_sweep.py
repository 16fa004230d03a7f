"""Sweep overhead and throughput, bertscope vs a plain loop / plain Ray, side by side in one run.

    python -m benchmarks.bench_sweep                   # all parts
    python -m benchmarks.bench_sweep --skip-ray --n-real 4
    python -m benchmarks.bench_sweep --dry-run-runs 10000 100000   # only part 3

1. Scheduling overhead per run, on a sweep of trivially small runs (a no-op command): the sweep (spec expansion,
   store transactions, worker hand-off, provenance) against the baseline of calling the same command in a plain
   Python loop (local) or as plain Ray tasks (``ray.get([f.remote() ...])``). Reported as ms per run and ratio.
2. Throughput of a sweep of real small runs (``reconstruct`` on the embedded default model, a few sentences):
   2 local worker processes vs 1, in runs per minute, and the ratio.
3. ``--dry-run-runs N ...``: seconds of ``bertscope sweep --dry-run`` (the CLI, start-up and table included) on a
   ``finetune`` grid of N runs, and the seconds per 1,000 runs relative to the smallest N (1.0 = linear; a quadratic
   step doubles it with every doubling of N). The goal: 100,000 runs under 30 s.
Writes benchmarks/results/bench_sweep.json (part 3: bench_sweep_dry_run.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertscope.core.config import Config, opt
from bertscope.core.registry import CommandInfo

THIS = Path(__file__).resolve()
RESULTS = THIS.parent / "results" / "bench_sweep.json"
DRY_RUN_RESULTS = THIS.parent / "results" / "bench_sweep_dry_run.json"
#: the benchmark's specs load this file as a plugin, from outside their (temporary) folder
ALLOW = {"allow_plugins": True, "plugins_from": "any"}


@dataclass(frozen=True)
class NoopConfig(Config):
    command = "bench-noop"

    i: int = opt(0, "run index")
    out: str | None = opt(None, "output folder")
    progress: bool = opt(False, "unused")


@dataclass(frozen=True)
class NoopResult:
    config: NoopConfig

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "value": self.config.i}

    def metrics(self) -> dict[str, float]:
        return {"value": float(self.config.i)}

    def render(self) -> str:
        return str(self.config.i)


def run_noop(config: NoopConfig) -> NoopResult:
    return NoopResult(config)


#: Read by the spec plugin loader (this file is the benchmark specs' plugin).
BERTSCOPE_COMMANDS = [CommandInfo("bench-noop", NoopConfig, run_noop, NoopResult, "benchmark no-op")]


def _spec(folder: Path, name: str, body: dict[str, Any]) -> Path:
    import yaml

    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "plugins": [str(THIS)], **body}))
    return path


def _sweep(spec: Path, store: Path, **options: Any) -> tuple[float, Any]:
    from bertscope import api

    start = time.perf_counter()
    result = api.sweep(spec=str(spec), store=str(store), progress=False, **ALLOW, **options)
    wall = time.perf_counter() - start
    assert result.counts["done"] == len(result.plan), result.failures
    return wall, result


def _steady_ms_per_run(store: Path) -> float:
    """Time between the first and the last committed result, per run: the per-run cost once workers are up."""
    from bertscope.runs.store import ResultStore

    with ResultStore(store, create=False) as s:
        finished = sorted(r.finished for r in s.records() if r.finished is not None)
    return 1000 * (finished[-1] - finished[0]) / max(len(finished) - 1, 1)


def overhead(folder: Path, n: int, with_ray: bool) -> dict[str, Any]:
    from bertscope.core.results import run_environment

    run_environment()  # one-time version lookup for provenance: not a per-run cost
    spec = _spec(folder, "noop", {"command": "bench-noop", "grid": {"i": list(range(n))}})
    start = time.perf_counter()
    for i in range(n):
        result = run_noop(NoopConfig(i=i, out=str(folder / "loop" / str(i))))
        result.metrics()
        result.to_dict()
    loop = time.perf_counter() - start
    out: dict[str, Any] = {"runs": n, "baseline_loop_ms_per_run": 1000 * loop / n}
    wall, _ = _sweep(spec, folder / "serial.db")
    out["local_serial_ms_per_run"] = 1000 * wall / n
    out["local_serial_steady_ms_per_run"] = _steady_ms_per_run(folder / "serial.db")
    wall, _ = _sweep(spec, folder / "workers2.db", workers=2, threads=1)
    out["local_2_workers_ms_per_run"] = 1000 * wall / n
    out["local_2_workers_steady_ms_per_run"] = _steady_ms_per_run(folder / "workers2.db")
    out["note"] = ("ms_per_run = sweep wall time / runs, including one-time start-up (spawning workers, imports); "
                   "steady = time between the first and last committed result / (runs - 1)")
    if with_ray:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            from bertscope.sweep.executors import Task, execute

            remote = ray.remote(max_retries=0)(execute)
            ray.get([remote.remote(Task(f"warm{i}", "bench-noop", {"i": i}, (str(THIS),), allow_plugins=True))
                     for i in range(2)])
            start = time.perf_counter()
            ray.get([remote.remote(Task(f"b{i}", "bench-noop", {"i": i}, (str(THIS),), allow_plugins=True))
                     for i in range(n)])
            out["baseline_plain_ray_ms_per_run"] = 1000 * (time.perf_counter() - start) / n
            wall, _ = _sweep(spec, folder / "ray.db", executor="ray")
            out["ray_sweep_ms_per_run"] = 1000 * wall / n
            out["ray_sweep_steady_ms_per_run"] = _steady_ms_per_run(folder / "ray.db")
        finally:
            ray.shutdown()
    return out


def throughput(folder: Path, n: int, max_examples: int) -> dict[str, Any]:
    from bertscope import api

    # The embedded default has no MLM head: reconstruct fits one (seeded, cached). Fit it once up front so the
    # timed runs measure reconstruction, not n copies of the same fit.
    base = {"max_examples": max_examples, "max_length": 64, "device": "cpu", "fit_steps": 50,
            "head_cache": str(folder / "heads")}
    api.reconstruct(**base, progress=False)
    body = {"command": "reconstruct", "base": base,
            "grid": {"max_examples": [max_examples - i for i in range(n)]}}
    body["base"] = {k: v for k, v in base.items() if k != "max_examples"}
    spec = _spec(folder, "real", body)
    out: dict[str, Any] = {"runs": n, "command": f"reconstruct, embedded default model (fitted head, cached), "
                                                 f"{max_examples - n + 1}..{max_examples} sentences"}
    for label, options in (("1_worker", {"workers": 1}), ("2_workers", {"workers": 2, "threads": 1})):
        wall, _ = _sweep(spec, folder / f"real-{label}.db", **options)
        out[f"{label}_seconds"] = wall
        out[f"{label}_runs_per_minute"] = 60 * n / wall
    out["ratio_2_vs_1"] = out["2_workers_runs_per_minute"] / out["1_worker_runs_per_minute"]
    return out


def dry_run(folder: Path, sizes: list[int]) -> dict[str, Any]:
    """Seconds of the CLI's ``sweep --dry-run`` per grid size (a fresh process each: what a user waits for)."""
    import subprocess

    import yaml

    rows = []
    for n in sorted(sizes):
        lrs = [round(1e-5 * (i + 1), 8) for i in range(10)]
        seeds = list(range(-(-n // len(lrs))))
        path = folder / f"dry-{n}.yaml"
        path.write_text(yaml.safe_dump({"name": f"dry-{n}", "command": "finetune",
                                        "base": {"task": "rte", "epochs": 1}, "grid": {"seed": seeds, "lr": lrs}}))
        command = [sys.executable, "-m", "bertscope", "sweep", str(path), "--store", str(folder / f"dry-{n}.db"),
                   "--dry-run"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"dry run of {n} runs failed: {done.stderr.strip()[-500:]}")
        rows.append({"runs": len(seeds) * len(lrs), "seconds": seconds})
    base = rows[0]["seconds"] / rows[0]["runs"]
    for row in rows:
        row["seconds_per_1000_runs"] = 1000 * row["seconds"] / row["runs"]
        row["per_run_vs_smallest"] = row["seconds"] / row["runs"] / base
    return {"command": "bertscope sweep SPEC --dry-run (finetune grid: seed x 10 lr values)", "sizes": rows,
            "goal": "100,000 runs under 30 s"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-trivial", type=int, default=100, help="no-op runs for the overhead part")
    parser.add_argument("--n-real", type=int, default=6, help="real reconstruct runs for the throughput part")
    parser.add_argument("--max-examples", type=int, default=64, help="sentences per real run")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--dry-run-runs", type=int, nargs="+", metavar="N",
                        help="only time `sweep --dry-run` of finetune grids of these sizes (e.g. 10000 100000)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    if args.dry_run_runs:
        try:
            report = dry_run(folder, args.dry_run_runs)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"{report['command']}; goal: {report['goal']}")
        print("      runs   seconds   s/1000 runs   per run vs smallest")
        for row in report["sizes"]:
            print(f"  {row['runs']:8d}  {row['seconds']:8.2f}  {row['seconds_per_1000_runs']:12.3f}"
                  f"  {row['per_run_vs_smallest']:8.2f}x")
        report["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
        DRY_RUN_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        DRY_RUN_RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {DRY_RUN_RESULTS}")
        return 0
    summary: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                               "command": "python -m benchmarks.bench_sweep " + " ".join(argv or sys.argv[1:])}
    try:
        ov = overhead(folder, args.n_trivial, not args.skip_ray)
        summary["overhead"] = ov
        print(f"scheduling overhead ({ov['runs']} no-op runs), ms per run:")
        print("                              total   steady")
        print(f"  plain loop (baseline)     {ov['baseline_loop_ms_per_run']:8.2f}")
        print(f"  sweep, local serial       {ov['local_serial_ms_per_run']:8.2f} {ov['local_serial_steady_ms_per_run']:8.2f}"
              f"   (+{ov['local_serial_steady_ms_per_run'] - ov['baseline_loop_ms_per_run']:.2f} ms/run vs loop)")
        print(f"  sweep, 2 local workers    {ov['local_2_workers_ms_per_run']:8.2f} "
              f"{ov['local_2_workers_steady_ms_per_run']:8.2f}   (total includes spawning the workers)")
        if "ray_sweep_ms_per_run" in ov:
            print(f"  plain Ray tasks (baseline){ov['baseline_plain_ray_ms_per_run']:8.2f}")
            print(f"  sweep, Ray executor       {ov['ray_sweep_ms_per_run']:8.2f} {ov['ray_sweep_steady_ms_per_run']:8.2f}"
                  f"   (ratio {ov['ray_sweep_ms_per_run'] / ov['baseline_plain_ray_ms_per_run']:.2f}x plain Ray)")
        if not args.skip_real:
            tp = throughput(folder, args.n_real, args.max_examples)
            summary["throughput"] = tp
            print(f"throughput, {tp['runs']} real runs ({tp['command']}):")
            print(f"  1 worker   {tp['1_worker_runs_per_minute']:6.2f} runs/min ({tp['1_worker_seconds']:.1f} s)")
            print(f"  2 workers  {tp['2_workers_runs_per_minute']:6.2f} runs/min ({tp['2_workers_seconds']:.1f} s)")
            print(f"  ratio 2 vs 1: {tp['ratio_2_vs_1']:.2f}x")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
