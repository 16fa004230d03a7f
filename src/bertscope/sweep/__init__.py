"""Sweeps at scale: expand an experiment spec into runs, execute them anywhere, keep every result in one store.

This package only re-exports. The pieces, bottom up: :mod:`.plugins` (the commands a sweep can run),
:mod:`.spec` (YAML spec -> runs with deterministic ids), :mod:`.executors` (where runs execute),
:mod:`.driver` (``bertscope sweep``) and :mod:`.status` (``bertscope status``). Run ids and the SQLite result store live one floor down, in :mod:`bertscope.runs`
(studies keep their runs in the same kind of store).
"""

from __future__ import annotations

from bertscope.sweep.driver import COMMAND, SweepResult, default_runs_dir, run_sweep
from bertscope.sweep.status import STATUS_COMMAND, StatusResult, sweep_status

__all__ = ["COMMAND", "STATUS_COMMAND", "StatusResult", "SweepResult", "default_runs_dir", "run_sweep",
           "sweep_status"]
