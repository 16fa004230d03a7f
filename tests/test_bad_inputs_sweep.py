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
