"""Where GLUE rows come from: the local folder named by the environment, and the task-name check."""

from __future__ import annotations

import os

__all__ = ['check_task_name', 'env_glue_dir']


def env_glue_dir() -> str | None:
    return os.environ.get("BERTSCOPE_GLUE_DIR") or None


def check_task_name(task: str | None) -> None:
    """An unknown task name fails when the config is built (so a sweep's ``--dry-run`` reports it): the name lookup
    only, no data is read."""
    if task is not None:
        from bertscope.data.glue import get_task

        get_task(task)
