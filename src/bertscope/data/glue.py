"""The GLUE benchmark: task table, loading (local tsv folder or Hugging Face hub) and the official metrics.

Every task knows its text fields, label set, files and official metric(s), so the rest of bertscope never hard-codes
a task. Data comes either from a folder in the original GLUE tsv layout (``--data-dir`` or ``BERTSCOPE_GLUE_DIR``:
``SST-2/train.tsv``, ``MNLI/dev_matched.tsv``, ...) or from the hub dataset ``nyu-mll/glue``. The tsv reader works
like the reference GLUE readers: tab-separated, quoting disabled (some sentences start with an unbalanced ``"``),
UTF-8 with an optional byte-order mark (MRPC), and CoLA's train/dev files have no header. A malformed row is never
dropped silently nor crashed on: it raises :class:`~bertscope.core.errors.DataError` naming file and line (or, with
``bad_rows="skip"``, is skipped and listed in :attr:`GlueSplit.skipped`, which every result file records).

Labels are integers in the order of the hub dataset (``label_names``); STS-B labels are floats in 0..5 (regression;
a score outside that range is a malformed row); test splits are unlabelled (``label=None``). Metric values are
fractions in [0, 1] (MCC and correlations in [-1, 1]).

Length: one concept, a GLUE task: each row of the table names the task's files, reader quirks and official
metrics, and the readers and metric functions are what those fields mean; callers reach them as ``glue.<name>``.
"""

from __future__ import annotations

import csv
import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertscope.core.errors import BertscopeError, DataError, HubUnreachableError

__all__ = [
    "COMBINED",
    "GLUE_SIZES",
    "HUB_DATASET",
    "METRIC_ALIASES",
    "TASKS",
    "GlueExample",
    "GlueSplit",
    "GlueTask",
    "accuracy",
    "canonical_metric_key",
    "canonical_metric_name",
    "canonical_metrics",
    "compute_metrics",
    "f1_binary",
    "get_task",
    "glue_average",
    "load_split",
    "matthews",
    "pearson",
    "resolve_data_dir",
    "spearman",
    "task_score",
]

HUB_DATASET = "nyu-mll/glue"
BAD_ROW_POLICIES = ("error", "skip")


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: where its data is, what the texts and labels are, and how it is scored.

    ``text_columns`` / ``label_column`` name tsv header columns (or are 0-based indices for header-less files, see
    ``headerless``); ``tsv_labels`` are the label strings as written in the tsv files, in ``label_names`` order.
    ``metrics`` lists the official metrics; the GLUE task score is their unweighted mean (for MNLI, the mean over
    the matched and mismatched dev sets, see :func:`glue_average`).
    """

    name: str
    dir_name: str
    hub_config: str
    text_fields: tuple[str, ...]
    text_columns: tuple[str | int, ...]
    label_column: str | int
    label_names: tuple[str, ...]
    tsv_labels: tuple[str, ...]
    metrics: tuple[str, ...]
    files: Mapping[str, str]
    test_text_columns: tuple[str | int, ...] | None = None
    headerless: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""
    label_range: tuple[float, float] | None = None  # regression: the scores a row may hold (STS-B: 0..5)

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        """Outputs of a prediction head: the number of classes, or 1 for regression (STS-B)."""
        return len(self.label_names) or 1

    @property
    def is_pair(self) -> bool:
        return len(self.text_fields) == 2

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """The labelled dev split(s): ``validation``, or MNLI's matched and mismatched."""
        return tuple(s for s in self.files if s.startswith("validation"))

    @property
    def default_eval_split(self) -> str:
        return self.eval_splits[0]

    def resolve_split(self, split: str) -> str:
        """Canonical split name: ``dev`` -> ``validation``; for MNLI ``validation``/``dev`` -> matched, and
        ``dev_matched``, ``matched``, ``validation_mismatched``, ``mismatched``..."""
        key = split.strip().lower().replace("-", "_")
        aliases = {"dev": "validation", "val": "validation", "eval": "validation"}
        key = aliases.get(key, key)
        if key.startswith("dev_"):
            key = "validation_" + key[4:]
        if self.name == "mnli":
            key = {"validation": "validation_matched", "matched": "validation_matched",
                   "mismatched": "validation_mismatched", "test": "test_matched"}.get(key, key)
        if key not in self.files:
            raise BertscopeError(f"GLUE task {self.name} has no split {split!r}; splits: {', '.join(self.files)}")
        return key


_PAIR_TSV = ("sentence1", "sentence2")
_STD_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}

TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask("cola", "CoLA", "cola", ("sentence",), (3,), 1, ("unacceptable", "acceptable"), ("0", "1"),
                 ("matthews_correlation",), _STD_FILES, test_text_columns=("sentence",), headerless=("train", "validation"),
                 description="grammatical acceptability (Matthews correlation)"),
        GlueTask("sst2", "SST-2", "sst2", ("sentence",), ("sentence",), "label", ("negative", "positive"),
                 ("0", "1"), ("accuracy",), _STD_FILES, aliases=("sst",), description="sentiment (accuracy)"),
        GlueTask("mrpc", "MRPC", "mrpc", _PAIR_TSV, ("#1 String", "#2 String"), "Quality",
                 ("not_equivalent", "equivalent"), ("0", "1"), ("f1", "accuracy"), _STD_FILES,
                 description="paraphrase (F1 and accuracy)"),
        GlueTask("stsb", "STS-B", "stsb", _PAIR_TSV, _PAIR_TSV, "score", (), (), ("pearson", "spearmanr"),
                 _STD_FILES, aliases=("sts",), description="similarity 0-5, regression (Pearson and Spearman)",
                 label_range=(0.0, 5.0)),
        GlueTask("qqp", "QQP", "qqp", ("question1", "question2"), ("question1", "question2"), "is_duplicate",
                 ("not_duplicate", "duplicate"), ("0", "1"), ("f1", "accuracy"), _STD_FILES,
                 description="question paraphrase (F1 and accuracy)"),
        GlueTask("mnli", "MNLI", "mnli", ("premise", "hypothesis"), _PAIR_TSV, "gold_label",
                 ("entailment", "neutral", "contradiction"), ("entailment", "neutral", "contradiction"),
                 ("accuracy",),
                 {"train": "train.tsv", "validation_matched": "dev_matched.tsv",
                  "validation_mismatched": "dev_mismatched.tsv", "test_matched": "test_matched.tsv",
                  "test_mismatched": "test_mismatched.tsv"},
                 description="natural language inference, matched and mismatched dev (accuracy)"),
        GlueTask("qnli", "QNLI", "qnli", ("question", "sentence"), ("question", "sentence"), "label",
                 ("entailment", "not_entailment"), ("entailment", "not_entailment"), ("accuracy",), _STD_FILES,
                 description="question answering NLI (accuracy)"),
        GlueTask("rte", "RTE", "rte", _PAIR_TSV, _PAIR_TSV, "label", ("entailment", "not_entailment"),
                 ("entailment", "not_entailment"), ("accuracy",), _STD_FILES,
                 description="textual entailment (accuracy)"),
        GlueTask("wnli", "WNLI", "wnli", _PAIR_TSV, _PAIR_TSV, "label", ("not_entailment", "entailment"),
                 ("0", "1"), ("accuracy",), _STD_FILES, description="Winograd NLI (accuracy)"),
    )
}


#: Each task's (train, dev) example counts in the official GLUE release (MNLI's dev: matched + mismatched): what a
#: run without --max-train/--max-eval reads, for estimates made before any data is loaded.
GLUE_SIZES: dict[str, tuple[int, int]] = {
    "cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3668, 408), "stsb": (5749, 1500), "qqp": (363846, 40430),
    "mnli": (392702, 19647), "qnli": (104743, 5463), "rte": (2490, 277), "wnli": (635, 71),
}


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_LOOKUP = {key: t for t in TASKS.values() for key in (_norm(t.name), _norm(t.dir_name), *map(_norm, t.aliases))}


def get_task(name: str | GlueTask) -> GlueTask:
    """The task for ``sst2``, ``SST-2``, ``sst-2``, ``STS-B``, ``mnli``...; unknown names list the known tasks."""
    if isinstance(name, GlueTask):
        return name
    try:
        return _LOOKUP[_norm(str(name))]
    except KeyError:
        raise BertscopeError(f"unknown GLUE task {name!r}; known tasks: {', '.join(TASKS)}") from None


@dataclass(frozen=True)
class GlueExample:
    """One example: its text(s) (one for single-sentence tasks, two for pairs), label (None when unlabelled) and
    index in the split (the tsv ``index``/``id`` column where there is one, else the 0-based row number)."""

    texts: tuple[str, ...]
    label: int | float | None
    idx: int


@dataclass(frozen=True)
class GlueSplit:
    """A loaded split (possibly a seeded subset) and where it came from."""

    task: str
    split: str
    examples: tuple[GlueExample, ...]
    source: str
    num_available: int
    max_examples: int | None = None
    seed: int = 0
    skipped: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def info(self) -> GlueTask:
        return TASKS[self.task]

    @property
    def labels(self) -> list[int | float | None]:
        return [ex.label for ex in self.examples]

    @property
    def is_labelled(self) -> bool:
        return all(ex.label is not None for ex in self.examples)

    def sentences(self) -> list[str]:
        """Every text of every example, in order (pairs contribute both sentences)."""
        return [text for ex in self.examples for text in ex.texts]

    def provenance(self) -> dict[str, Any]:
        """What a result file records about the data."""
        return {"task": self.task, "split": self.split, "source": self.source, "num_examples": len(self.examples),
                "num_available": self.num_available, "max_examples": self.max_examples, "seed": self.seed,
                "skipped_rows": list(self.skipped)}


# --------------------------------------------------------------------------------------------------- loading


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """``data_dir``, else ``$BERTSCOPE_GLUE_DIR``, else None (= the hub); a given folder must exist."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get("BERTSCOPE_GLUE_DIR") or None
    if chosen is None:
        return None
    path = Path(os.path.expanduser(str(chosen)))
    if not path.is_dir():
        raise DataError(f"GLUE data folder {path} does not exist (check --data-dir / BERTSCOPE_GLUE_DIR)")
    return path


def _task_folder(root: Path, task: GlueTask) -> Path:
    """``root/SST-2`` (any spelling: SST-2, sst2, SST2...), or ``root`` itself when it is the task folder."""
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.is_dir() and _norm(child.name) in {_norm(task.dir_name), _norm(task.name)}:
                return child
    if _norm(root.name) in {_norm(task.dir_name), _norm(task.name)}:
        return root
    return root / task.dir_name


def load_split(
    task: str | GlueTask,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    max_examples: int | None = None,
    seed: int = 0,
    *,
    bad_rows: str = "error",
) -> GlueSplit:
    """Load one split of a GLUE task from a local tsv folder (``data_dir`` or ``$BERTSCOPE_GLUE_DIR``) or the hub.

    ``max_examples`` keeps a seeded random subset (in file order), the same for the same ``seed``.
    """
    info = get_task(task)
    split = info.resolve_split(split)
    if max_examples is not None and max_examples < 1:
        raise BertscopeError(f"max_examples must be at least 1, got {max_examples}")
    if bad_rows not in BAD_ROW_POLICIES:
        raise BertscopeError(f"bad_rows must be one of {', '.join(BAD_ROW_POLICIES)}; got {bad_rows!r}")
    root = resolve_data_dir(data_dir)
    skipped: list[str] = []
    if root is not None:
        path = _task_folder(root, info) / info.files[split]
        examples = _read_tsv(info, split, path, bad_rows, skipped)
        source = str(path)
    else:
        examples = _read_hub(info, split)
        source = f"hub:{HUB_DATASET}/{info.hub_config}/{split}"
    if not examples:
        raise DataError(f"{source}: no examples in GLUE {info.name} {split}")
    available = len(examples)
    if max_examples is not None and max_examples < available:
        keep = sorted(random.Random(seed).sample(range(available), max_examples))
        examples = [examples[i] for i in keep]
    return GlueSplit(task=info.name, split=split, examples=tuple(examples), source=source, num_available=available,
                     max_examples=max_examples, seed=seed, skipped=tuple(skipped))


def _parse_label(info: GlueTask, value: str) -> int | float:
    if info.is_regression:
        number = float(value)
        low, high = info.label_range or (-math.inf, math.inf)
        if not math.isfinite(number) or not low <= number <= high:
            raise ValueError(value)
        return number
    return info.tsv_labels.index(value.strip())


def _read_tsv(info: GlueTask, split: str, path: Path, bad_rows: str, skipped: list[str]) -> list[GlueExample]:
    if not path.is_file():
        raise DataError(
            f"GLUE file {path} not found ({info.name} {split}); the folder needs the original GLUE tsv layout "
            f"({info.dir_name}/{info.files[split]}), or omit --data-dir to use the Hugging Face hub"
        )
    is_test = split.startswith("test")
    headerless = split in info.headerless
    text_columns = info.test_text_columns if is_test and info.test_text_columns else info.text_columns
    examples: list[GlueExample] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            header: list[str] | None = None
            positions: list[int] = []
            label_pos = idx_pos = None
            width = 0
            for row in reader:
                line = reader.line_num
                if header is None and not headerless:
                    header = [h.strip() for h in row]
                    try:
                        positions = [header.index(str(c)) for c in text_columns]
                        label_pos = None if is_test else header.index(str(info.label_column))
                    except ValueError as exc:
                        raise DataError(f"{path}:{line}: header {header} lacks column {exc.args[0].split()[0]} "
                                        f"expected for GLUE {info.name} {split}") from None
                    idx_pos = next((header.index(k) for k in ("index", "id") if k in header), None)
                    width = len(header)
                    continue
                if headerless and not positions:
                    positions = [int(c) for c in text_columns]
                    label_pos = None if is_test else int(info.label_column)
                    width = max(*positions, label_pos or 0) + 1
                if not any(cell.strip() for cell in row):
                    continue  # a blank line is not a row
                problem = None
                if len(row) != width:
                    problem = f"expected {width} tab-separated fields, got {len(row)}"
                label: int | float | None = None
                if problem is None and label_pos is not None:
                    try:
                        label = _parse_label(info, row[label_pos])
                    except ValueError:
                        allowed = ", ".join(info.tsv_labels) if not info.is_regression else "a number" + (
                            f" in {info.label_range[0]:g}..{info.label_range[1]:g}" if info.label_range else "")
                        problem = f"label {row[label_pos]!r} is not {allowed}"
                idx = len(examples) + len(skipped)
                if problem is None and idx_pos is not None:
                    try:
                        idx = int(row[idx_pos])
                    except ValueError:
                        problem = f"index {row[idx_pos]!r} is not an integer"
                if problem is not None:
                    message = f"{path}:{line}: malformed row: {problem}"
                    if bad_rows == "error":
                        raise DataError(message + " (use bad_rows='skip' / --bad-rows skip to skip such rows)")
                    skipped.append(message)
                    continue
                examples.append(GlueExample(texts=tuple(row[p] for p in positions), label=label, idx=idx))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 at byte {exc.start}") from None
    except csv.Error as exc:
        raise DataError(f"{path}: cannot parse as tsv: {exc}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    return examples


def _read_hub(info: GlueTask, split: str) -> list[GlueExample]:
    try:
        import datasets
    except ImportError:  # pragma: no cover - a hard dependency
        raise BertscopeError("loading GLUE from the hub needs the 'datasets' package") from None
    try:
        data = datasets.load_dataset(HUB_DATASET, info.hub_config, split=split)
    except Exception as exc:  # datasets raises many types (ConnectionError, OSError, ValueError...)
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HubUnreachableError(
            f"cannot load GLUE {info.name} {split} from the Hugging Face hub ({HUB_DATASET}: {text}); "
            "pass --data-dir DIR (or set BERTSCOPE_GLUE_DIR) pointing to a folder with the GLUE tsv files"
        ) from None
    examples: list[GlueExample] = []
    for row in data:
        raw = row["label"]
        label: int | float | None
        if info.is_regression:
            label = float(raw)
        else:
            label = None if raw is None or int(raw) < 0 else int(raw)
        if split.startswith("test"):
            label = None
        examples.append(GlueExample(texts=tuple(str(row[f]) for f in info.text_fields), label=label,
                                    idx=int(row.get("idx", len(examples)))))
    return examples


# --------------------------------------------------------------------------------------------------- metrics


def _arrays(predictions: Sequence[Any], labels: Sequence[Any]) -> tuple[Any, Any]:
    import numpy as np

    p, y = np.asarray(predictions), np.asarray(labels)
    if p.shape != y.shape or p.ndim != 1:
        raise BertscopeError(f"predictions {p.shape} and labels {y.shape} must be 1-d and of equal length")
    if p.size == 0:
        raise BertscopeError("cannot score an empty set of predictions")
    return p, y


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(*_arrays(labels, predictions)))


def f1_binary(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """F1 of the positive class (label 1), as GLUE scores MRPC and QQP."""
    from sklearn.metrics import f1_score

    y, p = _arrays(labels, predictions)
    return float(f1_score(y, p, pos_label=1, average="binary", zero_division=0.0))


def matthews(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation coefficient (CoLA); 0 when one side is constant."""
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(*_arrays(labels, predictions)))


def pearson(predictions: Sequence[float], labels: Sequence[float]) -> float:
    """Pearson correlation (STS-B); NaN when either side is constant."""
    import numpy as np
    from scipy.stats import pearsonr

    y, p = _arrays(labels, predictions)
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(pearsonr(p.astype(float), y.astype(float))[0])


def spearman(predictions: Sequence[float], labels: Sequence[float]) -> float:
    """Spearman rank correlation (STS-B); NaN when either side is constant."""
    import numpy as np
    from scipy.stats import spearmanr

    y, p = _arrays(labels, predictions)
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(p.astype(float), y.astype(float))[0])


_METRIC_FUNCTIONS = {"accuracy": accuracy, "f1": f1_binary, "matthews_correlation": matthews, "pearson": pearson,
                     "spearmanr": spearman}

#: The task score's name (the mean of a task's official metrics), as Hugging Face's run_glue / `evaluate` write it.
COMBINED = "combined_score"

#: Short metric names a user may write (``report --metric mcc``, a spec's metric), and the `evaluate` names they mean.
METRIC_ALIASES = {"mcc": "matthews_correlation", "matthews": "matthews_correlation", "spearman": "spearmanr",
                       "score": COMBINED}


def canonical_metric_name(name: str) -> str:
    """A metric name as `evaluate` writes it: ``mcc`` -> ``matthews_correlation``, ``score`` -> ``combined_score``."""
    return METRIC_ALIASES.get(name, name)


def canonical_metric_key(key: str) -> str:
    """A flat store key (``result.metrics()``) in its `evaluate` spelling: ``...mcc`` -> ``...matthews_correlation``,
    ``...spearman`` -> ``...spearmanr`` anywhere; ``score`` only under ``final.`` (a fine-tuning run's task score:
    ``final.validation.score`` -> ``final.validation.combined_score``; a study's ``<point>.score`` column keeps its
    name). So stores written by bertscope 0.1.0 read like new ones."""
    head, dot, last = key.rpartition(".")
    if last == "score" and not key.startswith("final."):
        return key
    return f"{head}{dot}{canonical_metric_name(last)}"


def canonical_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One split's metrics dict (``compute_metrics``' output) with every name in its `evaluate` spelling."""
    return {canonical_metric_name(k): v for k, v in metrics.items()}


def task_score(task: str | GlueTask, metrics: Mapping[str, float]) -> float:
    """The GLUE score of one evaluated split: the unweighted mean of the task's official metrics."""
    info = get_task(task)
    values = [float(metrics[m]) for m in info.metrics]
    return sum(values) / len(values)


def compute_metrics(task: str | GlueTask, predictions: Sequence[Any], labels: Sequence[Any]) -> dict[str, float]:
    """The official metric(s) of ``task`` plus ``combined_score`` (their mean, the GLUE task score), named as
    Hugging Face's `evaluate` names them (``matthews_correlation``, ``pearson``, ``spearmanr``, ``accuracy``, ``f1``).

    ``predictions`` are class ids (classification) or real values (STS-B); ``labels`` likewise.
    """
    info = get_task(task)
    if any(label is None for label in labels):
        raise BertscopeError(f"GLUE {info.name}: cannot score unlabelled examples (test splits have no labels)")
    out = {name: _METRIC_FUNCTIONS[name](predictions, labels) for name in info.metrics}
    out[COMBINED] = task_score(info, out)
    return out


def glue_average(task_scores: Mapping[str, float]) -> float:
    """Macro-average GLUE score over tasks (keys are task names; MNLI may be given as ``mnli`` or as ``mnli-m`` and
    ``mnli-mm``, which are first averaged into one task score, as on the GLUE leaderboard)."""
    per_task: dict[str, list[float]] = {}
    for key, value in task_scores.items():
        base = key.lower()
        for suffix in ("-mm", "-m", "_mismatched", "_matched"):
            if base.startswith("mnli") and base.endswith(suffix):
                base = "mnli"
                break
        per_task.setdefault(get_task(base).name, []).append(float(value))
    if not per_task:
        raise BertscopeError("no task scores to average")
    scores = [sum(v) / len(v) for v in per_task.values()]
    return sum(scores) / len(scores)
