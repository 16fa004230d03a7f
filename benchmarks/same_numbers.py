"""Do two versions of bertscope give the same numbers? Runs the same small commands with the code of a git revision
and with the working tree, then compares every number of their result files.

    python -m benchmarks.same_numbers --base fd61b70            # the revision a refactor started from

The commands cover every fine-tuning path on the embedded default model and the local GLUE copy: live fine-tuning
(classification and regression, other token/layer/dims), a frozen encoder on cached features, and the dims, layers,
tokens and cross studies (cached and live). Timings are skipped; every other number must agree within 1e-6
(relative). Prints one line per difference and exits 1 if there is any. Not a timed benchmark: a refactoring check.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import require_glue_dir

ROOT = Path(__file__).resolve().parents[1]

COMMANDS: dict[str, list[str]] = {
    "ft": ["finetune", "--task", "rte", "--max-train", "64", "--max-eval", "48", "--epochs", "2", "--lr", "1e-4"],
    "ft-stsb": ["finetune", "--task", "stsb", "--max-train", "64", "--max-eval", "48", "--epochs", "1", "--layer", "3",
                "--token", "max-norm", "--dims", "random:5"],
    "ft-frozen": ["finetune", "--task", "sst2", "--max-train", "64", "--max-eval", "48", "--epochs", "2", "--freeze",
                  "encoder", "--cache-features"],
    "dims": ["dims", "--task", "sst2", "--max-train", "64", "--max-eval", "48", "--epochs", "2", "--freeze", "encoder",
             "--k", "1,2,all", "--samples", "2"],
    "layers": ["layers", "--task", "mrpc", "--max-train", "64", "--max-eval", "48", "--epochs", "1", "--freeze",
               "encoder"],
    "tokens": ["tokens", "--task", "rte", "--max-train", "48", "--max-eval", "32", "--epochs", "1", "--lr", "1e-4",
               "--tokens", "cls,mean,index:2"],
    "cross": ["cross", "--tasks", "sst2,rte", "--max-train", "48", "--max-eval", "32", "--epochs", "1", "--lr", "1e-4"],
    "layers-partial": ["layers", "--task", "sst2", "--max-train", "48", "--max-eval", "32", "--epochs", "1",
                       "--freeze", "layers:0-3", "--layers", "2,5"],
}
COMPARED = ("final", "final_score", "epochs", "table", "summary")
#: Metric names renamed to `evaluate`'s after bertscope 0.1.0: compared under their new names.
RENAMED = {"mcc": "matthews_correlation", "spearman": "spearmanr", "score": "combined_score"}


def run_all(src: Path, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "BERTSCOPE_GLUE_DIR": require_glue_dir(),
           "BERTSCOPE_CACHE": str(out / "cache")}
    for name, args in COMMANDS.items():
        command = [sys.executable, "-m", "bertscope", *args, "--batch-size", "16", "--no-progress", "--out",
                   str(out / name)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=out)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args[:1])} failed with {src}: {done.stderr.strip().splitlines()[-1:]}")


def numbers(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}.{RENAMED.get(key, key) if path.count('.') >= 1 else key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from numbers(item, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def differences(base: Path, head: Path) -> list[str]:
    out = []
    for name in COMMANDS:
        for path in sorted((base / name).glob("*.json")):
            if path.name == "status.json":
                continue
            a, b = json.loads(path.read_text()), json.loads((head / name / path.name).read_text())
            for key in COMPARED:
                want, got = dict(numbers(a.get(key), key)), dict(numbers(b.get(key), key))
                for where, value in want.items():
                    if "seconds" in where or "per_second" in where:
                        continue
                    other = got.get(where)
                    if other is None or abs(value - other) > 1e-6 * max(1.0, abs(value)):
                        out.append(f"{name}/{path.name} {where}: {value} vs {other}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare the working tree with")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bertscope-same-") as tmp:
        tree = Path(tmp) / "base-tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.base], check=True)
        try:
            (Path(tmp) / "base").mkdir()
            (Path(tmp) / "head").mkdir()
            run_all(tree / "src", Path(tmp) / "base")
            run_all(ROOT / "src", Path(tmp) / "head")
            found = differences(Path(tmp) / "base", Path(tmp) / "head")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    for line in found:
        print(line)
    print(f"{len(COMMANDS)} commands, {len(found)} differences between {args.base} and the working tree")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
