"""Human names of bertscope's metric keys, grid axes, tasks and models, for plots, tables and captions.

Result files and stores keep their internal keys (``final.score``, ``final.validation.accuracy``, ``top1``...);
whatever a person reads (an axis label, a table header, a caption) says "dev GLUE score", "dev accuracy",
"top-1 reconstruction" instead. A floor above may bring its own names (the lens declares each of its metrics with its
label, :mod:`bertscope.lens.metrics`, and passes them as ``names``). Metric names are known under both spellings: bertscope's older ones (``mcc``,
``matthews``, ``spearman``, ``score``) and the ones the Hugging Face ``evaluate`` library writes
(``matthews_correlation``, ``spearmanr``, ``combined_score``), so old stores read as well as new ones.
A key this table does not know is shown as it is: a wrong human name is worse than the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bertscope.data import glue

__all__ = ["AXIS_NAMES", "METRIC_NAMES", "axis_name", "canonical_metric", "metric_name", "model_name", "task_name",
           "texts_name"]


#: the last component of a metric key -> its human name
METRIC_NAMES: dict[str, str] = {
    "score": "GLUE score", "combined_score": "GLUE score", "glue_score": "GLUE score",
    "accuracy": "accuracy", "f1": "F1",
    "mcc": "Matthews correlation", "matthews": "Matthews correlation", "matthews_correlation": "Matthews correlation",
    "pearson": "Pearson correlation", "spearman": "Spearman correlation", "spearmanr": "Spearman correlation",
    "top1_agreement": "top-1 agreement with the original", "mean_kl": "mean KL(original || variant) (nats)",
    "mean_cosine": "mean cosine of the final hidden states", "variant_top1": "top-1 reconstruction of the variant",
    "original_top1": "top-1 reconstruction of the original",
    "best_score": "best GLUE score", "full_score": "GLUE score with all dimensions",
    "backward_transfer": "backward transfer", "forgetting": "forgetting", "transfer": "transfer",
    "loss": "loss", "train_loss": "training loss", "new_depth": "depth after deepening (layers)",
    "examples_per_second": "examples per second", "seconds": "seconds",
}

#: the first component(s) of a metric key: where it was measured
_SCOPES = {"final": "dev", "eval": "dev", "best": "best dev", "test": "test", "train": "training"}
_SPLITS = {"validation": "dev", "validation_matched": "dev-matched", "validation_mismatched": "dev-mismatched",
           "test": "test", "test_matched": "test-matched", "test_mismatched": "test-mismatched", "train": "training"}
#: metrics that are GLUE's own; elsewhere (a plugin's ``score``) the key is shown as it is
_GLUE_ONLY = {"score", "combined_score", "glue_score", "best_score", "full_score"}

#: grid axes and options -> their human names
AXIS_NAMES: dict[str, str] = {
    "task": "GLUE task", "tasks": "GLUE tasks", "layer": "layer read (0 = embeddings)",
    "layers": "layers read (0 = embeddings)", "dims": "hidden dimensions the head sees",
    "k": "hidden dimensions the head sees (k)", "token": "token vector", "token_strategy": "token vector",
    "freeze": "frozen part of the encoder", "model": "model", "seed": "seed", "sample": "random sample",
    "source": "task fine-tuned first", "source_task": "task fine-tuned first", "target": "task evaluated",
    "target_task": "task evaluated", "head": "head", "head_hidden": "head hidden size",
    "lr": "learning rate", "head_lr": "head learning rate", "epochs": "epochs", "batch_size": "batch size",
    "max_train": "training examples", "max_eval": "dev examples", "max_length": "max. sequence length",
    "dropout": "dropout", "warmup_ratio": "warm-up ratio", "weight_decay": "weight decay", "pooler": "pooler",
    "include_special": "special tokens counted", "mask_prob": "masking probability", "duplicate": "duplicated layers",
    "op": "layer edit", "selection": "dimension choice", "stage": "stage",
}


def canonical_metric(name: str) -> str:
    """One spelling per metric, `evaluate`'s (:func:`bertscope.data.glue.canonical_metric_name`: ``mcc`` ->
    ``matthews_correlation``, ``spearman`` -> ``spearmanr``, ``score`` -> ``combined_score``); any other unchanged."""
    return glue.canonical_metric_name("score" if name == "glue_score" else name)


def metric_name(key: str, *, glue: bool = True, names: Mapping[str, str] | None = None) -> str:
    """The human name of a metric key: ``final.score`` -> "dev GLUE score", ``final.validation.accuracy`` ->
    "dev accuracy". ``glue=False`` (a command that is no GLUE task) keeps ``score``-like keys as they are.
    ``names`` adds names of a floor above (``top1`` -> "top-1 reconstruction": the lens's, see
    :func:`bertscope.lens.metrics.metric_label`). Unknown keys are returned unchanged."""
    parts = str(key).split(".")
    last = parts[-1]
    known = METRIC_NAMES if names is None else {**METRIC_NAMES, **names}
    if last not in known or (not glue and last in _GLUE_ONLY):
        return str(key)
    where = ""
    extra: list[str] = []
    for part in parts[:-1]:
        if part in _SPLITS:
            where = _SPLITS[part] if not where.startswith("best") else f"best {_SPLITS[part]}"
        elif part in _SCOPES and not where:
            where = _SCOPES[part]
        else:
            extra.append(part)
    name = f"{where} {known[last]}" if where else known[last]
    return f"{name} ({'.'.join(extra)})" if extra else name


def axis_name(axis: str) -> str:
    """The human name of a grid axis or option (``layer`` -> "layer read (0 = embeddings)"); unknown: unchanged."""
    return AXIS_NAMES.get(str(axis), str(axis))


def task_name(task: Any) -> str:
    """A GLUE task as papers write it (``rte`` -> "RTE", ``sst2`` -> "SST-2"); anything else as ``str``."""
    from bertscope.core.errors import BertscopeError
    from bertscope.data import glue

    try:
        return glue.get_task(str(task)).dir_name
    except BertscopeError:  # not a GLUE task name: show the value itself
        return str(task)


def model_name(model: Any) -> str:
    """A model as a reader knows it: the embedded default by its name, a hub id as it is, a local folder by its
    last two path components (the rest is in the run's configuration)."""
    from bertscope.models.loading import DEFAULT_MODEL_NAME

    text = "" if model is None else str(model)
    if text in ("", "default", DEFAULT_MODEL_NAME):
        return f"{DEFAULT_MODEL_NAME.removeprefix('embedded:')} (embedded default)"
    if text.startswith("embedded:"):
        return f"{text.removeprefix('embedded:')} (embedded)"
    if text.startswith(("/", ".", "~")) or "\\" in text:
        parts = [p for p in text.replace("\\", "/").split("/") if p not in ("", ".")]
        return "/".join(parts[-2:]) if parts else text
    return text


def texts_name(texts: Any) -> str:
    """Where a command's sentences came from, for a figure title: "RTE dev sentences (n = 120)", "the built-in
    English sample (n = 300)", "sentences of notes.txt (n = 40)"; ``texts`` is ``TextSource.describe()``."""
    info = texts if isinstance(texts, dict) else {}
    count = info.get("num_sentences")
    n = f" (n = {count})" if count is not None else ""
    kind = info.get("kind")
    if kind == "glue":
        split = str(info.get("split") or "validation")
        split = _SPLITS.get(split, split)
        return f"{task_name(info.get('task'))} {split} sentences{n}"
    if kind == "file":
        name = str(info.get("file") or "").replace("\\", "/").rsplit("/", 1)[-1]
        return f"sentences of {name}{n}"
    return f"the built-in English sample{n}"
