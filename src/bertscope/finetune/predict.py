"""``bertscope predict``: run a model saved by ``finetune --save-model`` on new data, with label names.

Any saved head works, standard classifier or not (:func:`bertscope.finetune.command.load_finetuned`). The examples come from
a GLUE split (``--task`` / ``--split``, the model's own task by default; ``test`` splits too, which have no labels), a
tsv file with a header row (``--tsv``, columns by name) or a text file (``--texts``, one example per line, a tab
between the two texts of a pair). ``OUT/predictions.csv`` holds per example its ``idx``, ``text`` (and
``text_pair``), the gold ``label`` and ``label_name`` where the data has labels, the ``prediction`` (class id, or the
predicted score for STS-B), its ``prediction_name`` and ``p_<label>`` for every label (the same columns as
``finetune``'s predictions.csv); ``OUT/predict.json`` records the options, the data, the counts per predicted label
and, where every example has a label, the task's official metrics.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertscope.core.device import resolve_device
from bertscope.core.errors import BertscopeError, DataError
from bertscope.core.registry import CommandInfo
from bertscope.core.results import environment_info, prepare_out_dir, write_csv_atomic, write_json_atomic
from bertscope.data import glue
from bertscope.finetune.command import FinetunedModel, load_finetuned
from bertscope.finetune.config import PredictConfig
from bertscope.finetune.export import REGRESSION_LABEL, prediction_rows
from bertscope.models import families

__all__ = ["COMMAND", "Examples", "PredictResult", "read_text_examples", "read_tsv_examples", "run_predict"]

#: Longest default input when the saved tokenizer names no usable length (transformers' "no limit" is 1e30).
_FALLBACK_MAX_LENGTH = 512
_INDEX_COLUMNS = ("idx", "index", "id")


@dataclass(frozen=True)
class Examples:
    """What to predict: texts (one or two per example), their ids, gold labels where known, and where they came
    from."""

    texts: list[tuple[str, ...]]
    idx: list[int]
    labels: list[int | float | None]
    source: dict[str, Any]

    @property
    def is_labelled(self) -> bool:
        return bool(self.labels) and all(label is not None for label in self.labels)


# ------------------------------------------------------------------------------------------------ inputs


def _parse_label(value: str, task: glue.GlueTask, where: str) -> int | float:
    text = value.strip()
    if task.is_regression:
        try:
            return float(text)
        except ValueError:
            raise DataError(f"{where}: label {value!r} is not a number") from None
    for names in (task.label_names, task.tsv_labels):
        if text in names:
            return names.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < task.num_labels:
        return int(text)
    raise DataError(f"{where}: label {value!r} is not one of {', '.join(task.label_names)} "
                    f"(or an id 0..{task.num_labels - 1})")


def _read_utf8(path: Path, option: str) -> str:
    """The text of a UTF-8 file given by ``option`` (a byte-order mark dropped); every failure is one line."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{option} {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 at byte {exc.start}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_tsv_examples(path: str | Path, task: glue.GlueTask | None, *, text_column: str | None = None,
                      text_pair_column: str | None = None, label_column: str | None = None) -> Examples:
    """Examples of a tab-separated file with a header row (quoting off, as GLUE's files): the text column(s) by
    name (default: the task's text fields, else its tsv columns), ``idx`` / ``index`` / ``id`` when present (else
    the row number) and gold labels from ``label_column`` (default ``label`` when present)."""
    path = Path(path).expanduser()
    rows = list(csv.reader(_read_utf8(path, "--tsv").splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise DataError(f"{path} is empty: a header row and at least one example are needed")
    header = [h.strip() for h in rows[0]]

    def position(name: str, option: str) -> int:
        if name not in header:
            raise DataError(f"{path}: no column {name!r} ({option}); columns: {', '.join(header)}")
        return header.index(name)

    wanted = [c for c in (text_column, text_pair_column) if c is not None]
    if text_column is None:
        defaults = _default_columns(task, header)
        wanted = defaults if text_pair_column is None else [defaults[0], text_pair_column]
    text_pos = [position(name, "--text-column / --text-pair-column") for name in wanted]
    label_name = label_column or ("label" if "label" in header else None)
    if label_name is not None and task is None:
        raise BertscopeError("the model records no task, so its labels cannot be read from --label-column")
    label_pos = position(label_name, "--label-column") if label_name is not None else None
    idx_pos = next((header.index(c) for c in _INDEX_COLUMNS if c in header), None)
    examples = Examples([], [], [], {"kind": "tsv", "file": str(path.resolve()), "columns": wanted,
                                     "label_column": label_name})
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: malformed row: expected {len(header)} tab-separated fields, "
                            f"got {len(row)}")
        examples.texts.append(tuple(row[p] for p in text_pos))
        idx = len(examples.idx)
        if idx_pos is not None:
            try:
                idx = int(row[idx_pos])
            except ValueError:
                raise DataError(f"{path}:{line}: index {row[idx_pos]!r} is not an integer") from None
        examples.idx.append(idx)
        label = None
        if label_pos is not None and task is not None and row[label_pos].strip():
            label = _parse_label(row[label_pos], task, f"{path}:{line}")
        examples.labels.append(label)
    if not examples.texts:
        raise DataError(f"{path} holds no examples below its header")
    return examples


def _default_columns(task: glue.GlueTask | None, header: list[str]) -> list[str]:
    """The task's text fields (``sentence1``, ``question``...), else its tsv columns, else the first column."""
    if task is None:
        return [header[0]]
    for names in (list(task.text_fields), [str(c) for c in task.text_columns]):
        if all(name in header for name in names):
            return names
    raise DataError(f"the tsv has no columns {', '.join(task.text_fields)} ({task.name}'s texts); columns: "
                    f"{', '.join(header)}; name them with --text-column / --text-pair-column")


def read_text_examples(path: str | Path, *, pairs: bool | None) -> Examples:
    """Examples of a text file, one per non-blank line (idx = the 0-based line number). ``pairs`` True: each line
    holds two texts separated by a tab; False: the whole line is one text; None: a tab makes a pair."""
    path = Path(path).expanduser()
    lines = _read_utf8(path, "--texts").splitlines()
    examples = Examples([], [], [], {"kind": "texts", "file": str(path.resolve())})
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        if pairs is False:
            texts: tuple[str, ...] = (line.strip(),)
        else:
            first, tab, second = line.partition("\t")
            if pairs and not tab:
                raise DataError(f"{path}:{number + 1}: the model reads sentence pairs; separate the two texts "
                                "of a line by a tab")
            texts = (first.strip(), second.strip()) if tab else (first.strip(),)
        examples.texts.append(texts)
        examples.idx.append(number)
        examples.labels.append(None)
    if not examples.texts:
        raise DataError(f"{path} holds no examples (it is empty or only blank lines)")
    if len({len(t) for t in examples.texts}) > 1:
        raise DataError(f"{path}: some lines hold a tab-separated pair and some a single text; use one form")
    return examples


def _glue_examples(config: PredictConfig, own: glue.GlueTask | None) -> tuple[glue.GlueTask, Examples]:
    task = glue.get_task(config.task) if config.task else own
    if task is None:
        raise BertscopeError("the model records no GLUE task: give --task, --tsv or --texts")
    if own is not None and task.name != own.name and (task.label_names != own.label_names
                                                      or task.is_pair != own.is_pair):
        labels = ", ".join(own.label_names) or "a score"
        raise BertscopeError(f"the model predicts {own.name}'s labels ({labels}); --task {task.name} has other "
                             "labels or texts")
    split = glue.load_split(task, config.split, config.data_dir, config.max_examples, config.seed)
    return task, Examples([ex.texts for ex in split.examples], [ex.idx for ex in split.examples],
                          list(split.labels), {"kind": "glue", **split.provenance()})


def _max_length(config: PredictConfig, model: FinetunedModel) -> int:
    if config.max_length is not None:
        return config.max_length
    saved = getattr(model.tokenizer, "model_max_length", None)
    return int(saved) if isinstance(saved, int) and 4 <= saved <= 100_000 else _FALLBACK_MAX_LENGTH


# ------------------------------------------------------------------------------------------------ result


@dataclass(frozen=True)
class PredictResult:
    """Predictions of one saved model on one set of examples (rows as in predictions.csv), with the metrics where
    the examples have labels; ``summary``: examples per predicted label (mean / min / max score for STS-B)."""

    config: PredictConfig
    model: str
    task: str | None
    label_names: tuple[str, ...]
    source: dict[str, Any]
    max_length: int
    summary: dict[str, float]
    scores: dict[str, float] | None
    environment: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    rows: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"command": "predict", "config": self.config.to_dict(), "model": self.model, "task": self.task,
                "label_names": list(self.label_names), "data": self.source, "num_examples": len(self.rows),
                "max_length": self.max_length, "prediction_summary": self.summary, "metrics": self.scores,
                "files": self.files, "environment": self.environment}

    def metrics(self) -> dict[str, float]:
        out = {"examples": float(len(self.rows))}
        out.update({f"metric.{k}": float(v) for k, v in (self.scores or {}).items()})
        return out

    def render(self) -> Any:
        from rich.table import Table

        where = self.source.get("split") or Path(str(self.source.get("file", ""))).name
        table = Table(title=f"predict {self.task or ''} ({where}): {len(self.rows)} examples")
        regression = self.label_names == (REGRESSION_LABEL,)
        table.add_column("predicted score" if regression else "prediction")
        table.add_column("value" if regression else "examples", justify="right")
        for name, value in self.summary.items():
            table.add_row(name, f"{value:.4f}" if regression else str(int(value)))
        if self.scores:
            table.caption = ", ".join(f"{k} {v:.4f}" for k, v in self.scores.items())
        else:
            table.caption = "no labels: no metrics"
        return table


def _summary(rows: tuple[dict[str, Any], ...], regression: bool) -> dict[str, float]:
    """Examples per predicted label, or the mean / min / max predicted score for regression."""
    if regression:
        scores = [float(r["prediction"]) for r in rows]
        return {"mean": sum(scores) / len(scores), "min": min(scores), "max": max(scores)}
    return {str(k): float(v) for k, v in Counter(r["prediction_name"] for r in rows).items()}


def run_predict(config: PredictConfig) -> PredictResult:
    """Load the saved model, read the examples, predict, write predictions.csv (+ predict.json) under ``out``."""
    out = prepare_out_dir(config.out)
    folder = Path(str(config.model)).expanduser()
    if not folder.is_dir():
        raise BertscopeError(f"--model {folder} is not a folder (give a folder written by finetune --save-model)")
    model = load_finetuned(folder, device=str(resolve_device(config.device)), attention=config.attention)
    own = model.task
    regression = own.is_regression if own is not None else model.spec.num_labels == 1
    if config.tsv is not None:
        task, examples = own, read_tsv_examples(config.tsv, own, text_column=config.text_column,
                                                text_pair_column=config.text_pair_column,
                                                label_column=config.label_column)
    elif config.texts is not None:
        task, examples = own, read_text_examples(config.texts, pairs=None if own is None else own.is_pair)
    else:
        task, examples = _glue_examples(config, own)
    max_length = _max_length(config, model)
    families.check_max_length(max_length, model.encoder)
    logits = model.logits(examples.texts, max_length=max_length, batch_size=config.batch_size,
                          progress=config.progress)
    columns = prediction_rows(logits, model.label_names, regression=regression, labels=examples.labels)
    rows = tuple({"idx": i, "text": t[0], **({"text_pair": t[1]} if len(t) > 1 else {}), **c}
                 for i, t, c in zip(examples.idx, examples.texts, columns))
    scores = None
    if task is not None and examples.is_labelled:
        scores = glue.compute_metrics(task, [r["prediction"] for r in rows], examples.labels)
    summary = _summary(rows, regression)
    result = PredictResult(config=config, model=str(folder.resolve()), task=task.name if task else None,
                           label_names=model.label_names, source=examples.source, max_length=max_length,
                           summary=summary, scores=scores, rows=rows,
                           environment={**environment_info(), "attention": model.attention})
    if out is not None:
        files = {"csv": str(out / "predictions.csv"), "json": str(out / "predict.json")}
        write_csv_atomic(out / "predictions.csv", rows)
        result = PredictResult(**{**result.__dict__, "files": files})
        write_json_atomic(out / "predict.json", result.to_dict())
    return result


COMMAND = CommandInfo("predict", PredictConfig, run_predict, PredictResult,
                      "predict with a model saved by finetune --save-model (GLUE split, tsv or text file), "
                      "with label names and probabilities")
