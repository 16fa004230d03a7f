"""Sweeps at scale: expand an experiment spec into runs, execute them anywhere, keep every result in one store.

This package only re-exports. The pieces, bottom up: :mod:`.plugins` (the commands a sweep can run),
:mod:`.spec` (YAML spec -> runs with deterministic ids), :mod:`.store` (the SQLite result store and its lock),
:mod:`.migrate` (re-keying runs stored under their legacy id), :mod:`.executors` (where runs execute),
:mod:`.driver` (``bertscope sweep``) and :mod:`.status` (``bertscope status``).
"""

from __future__ import annotations

from bertscope.sweep.driver import COMMAND, SweepResult, default_runs_dir, run_sweep
from bertscope.sweep.status import STATUS_COMMAND, StatusResult, sweep_status

__all__ = ["COMMAND", "STATUS_COMMAND", "StatusResult", "SweepResult", "default_runs_dir", "run_sweep",
           "sweep_status"]
