"""Where GLUE rows come from: the local folder named by the environment, the task-name check, and the data options
of fine-tuning (:class:`DataOptions`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from bertscope.core.config import Options, opt
from bertscope.core.errors import BertscopeError

__all__ = ['DataOptions', 'check_task_name', 'env_glue_dir']


def env_glue_dir() -> str | None:
    return os.environ.get("BERTSCOPE_GLUE_DIR") or None


def check_task_name(task: str | None) -> None:
    """An unknown task name fails when the config is built (so a sweep's ``--dry-run`` reports it): the name lookup
    only, no data is read."""
    if task is not None:
        from bertscope.data.glue import get_task

        get_task(task)


@dataclass(frozen=True)
class DataOptions(Options):
    """The GLUE task a run trains and evaluates on, where its rows come from, and which of them it reads."""

    task: str | None = opt(None, "GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli")
    data_dir: str | None = opt(None, "local GLUE folder in the original tsv layout (env BERTSCOPE_GLUE_DIR); "
                                     "default: the Hugging Face hub", metavar="DIR")
    max_train: int | None = opt(None, "train on a seeded random subset of this many examples")
    max_eval: int | None = opt(None, "evaluate on a seeded random subset of this many examples (per dev split)")
    eval_split: str = opt("auto", "dev split(s) to evaluate each epoch: auto (validation; MNLI matched and "
                                  "mismatched), or a split name / comma list")
    bad_rows: str = opt("error", "malformed tsv rows: error (stop, naming file and line) or skip (skip them and "
                                 "list them in results.json)", choices=("error", "skip"))

    def validate(self) -> None:
        check_task_name(self.task)
        for name in ("max_train", "max_eval"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise BertscopeError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.data_dir is None and env_glue_dir() is not None:
            object.__setattr__(self, "data_dir", env_glue_dir())
