"""What every benchmark shares: where results go and where the local GLUE copy is."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["RESULTS", "find_glue_dir", "require_glue_dir"]

RESULTS = Path(__file__).resolve().parent / "results"


def find_glue_dir(value: str | None = None) -> str | None:
    """``value``, else $BERTSCOPE_GLUE_DIR, else ../shared/data/glue beside the repository; None when none exists."""
    for candidate in (value, os.environ.get("BERTSCOPE_GLUE_DIR"),
                      str(Path(__file__).resolve().parents[2] / "shared/data/glue")):
        if candidate and Path(candidate).is_dir():
            return candidate
    return None


def require_glue_dir(value: str | None = None) -> str:
    """Like :func:`find_glue_dir`, but a benchmark that needs GLUE stops with a clear message."""
    found = find_glue_dir(value)
    if found is None:
        raise SystemExit("local GLUE folder not found: pass --data-dir or set BERTSCOPE_GLUE_DIR")
    return found
