"""GLUE leaderboard files: test-split predictions in the format the GLUE evaluation server takes.

The server wants one tsv per task (``CoLA.tsv``, ``SST-2.tsv``, ``MNLI-m.tsv`` + ``MNLI-mm.tsv``, ...) in one zip,
each with the header ``index<TAB>prediction`` and one row per test example in file order; labels are written as the
task's own tsv files write them (``0``/``1`` for CoLA, SST-2, MRPC, QQP, WNLI; ``entailment``/``not_entailment`` for
RTE and QNLI; ``entailment``/``neutral``/``contradiction`` for MNLI) and STS-B scores as numbers in [0, 5]. The
diagnostic set (``AX.tsv``, scored with an MNLI model) is not written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bertscope.core.results import write_text_atomic
from bertscope.data import glue

__all__ = ["SUBMISSION_FILES", "submission_file", "submission_rows", "test_splits", "write_submission"]

#: (task, test split) -> the file name the GLUE server expects.
SUBMISSION_FILES: dict[tuple[str, str], str] = {
    ("cola", "test"): "CoLA.tsv", ("sst2", "test"): "SST-2.tsv", ("mrpc", "test"): "MRPC.tsv",
    ("stsb", "test"): "STS-B.tsv", ("qqp", "test"): "QQP.tsv", ("mnli", "test_matched"): "MNLI-m.tsv",
    ("mnli", "test_mismatched"): "MNLI-mm.tsv", ("qnli", "test"): "QNLI.tsv", ("rte", "test"): "RTE.tsv",
    ("wnli", "test"): "WNLI.tsv",
}


def test_splits(task: glue.GlueTask) -> tuple[str, ...]:
    """The task's test split(s): ``test``, or MNLI's matched and mismatched."""
    return tuple(s for s in task.files if s.startswith("test"))


def submission_file(task: glue.GlueTask, split: str) -> str:
    return SUBMISSION_FILES[(task.name, split)]


def submission_rows(task: glue.GlueTask, idx: Sequence[int], predictions: Sequence[float]) -> list[tuple[int, str]]:
    """(index, label string) per example: class ids mapped to the tsv label strings; STS-B clipped to [0, 5]."""
    if task.is_regression:
        return [(i, f"{min(5.0, max(0.0, float(p))):.3f}") for i, p in zip(idx, predictions)]
    return [(i, task.tsv_labels[int(p)]) for i, p in zip(idx, predictions)]


def write_submission(folder: str | Path, task: glue.GlueTask, split: str, idx: Sequence[int],
                     predictions: Sequence[float]) -> Path:
    """Write ``folder/<file>.tsv`` atomically and return its path."""
    lines = ["index\tprediction", *(f"{i}\t{label}" for i, label in submission_rows(task, idx, predictions))]
    return write_text_atomic(Path(folder) / submission_file(task, split), "\n".join(lines) + "\n")
