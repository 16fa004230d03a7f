"""``--fit converged`` inside the fine-tuning pipeline: solve the head as a probe instead of training it.

For a fully frozen encoder and a linear head, :func:`fit_converged` reads the selected training vectors the head
would see (cached or live: the run's own representation step), solves :func:`bertscope.finetune.probe.fit_probe` on them,
writes the solution into the run's :class:`~bertscope.finetune.head.SelectingHead` (so saving, export and predict work
unchanged) and scores every dev split through :func:`bertscope.finetune.evaluation.evaluate_logits`, the code the training loop
evaluates with. It returns a :class:`~bertscope.finetune.records.TrainHistory` of one epoch (train loss = the probe's final
mean training loss, steps = L-BFGS iterations), so a probe run's result has the shape of any other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from bertscope.core.device import resolve_dtype
from bertscope.core.errors import BertscopeError
from bertscope.data import glue
from bertscope.finetune.batching import collate, length_grouped_batches
from bertscope.finetune.config import FinetuneConfig
from bertscope.finetune.evaluation import evaluate_logits, predictions_from_logits
from bertscope.finetune.head import SelectingHead
from bertscope.finetune.probe import ProbeResult, fit_probe
from bertscope.finetune.records import EpochRecord, TrainHistory


class PreparedRun(Protocol):
    """What a fit reads of a prepared run (:class:`bertscope.finetune.pipeline.PreparedRun`; a protocol, so this module
    does not import the pipeline that calls it)."""

    config: FinetuneConfig
    data: Any  # pipeline.TaskData: train_data, eval_data, task
    represent: Any
    device: torch.device
    collate_fn: Any

    @property
    def head(self) -> nn.Module: ...  # the head as trained (a data-parallel wrapper under torchrun)

    @property
    def trained_head(self) -> SelectingHead: ...

__all__ = ["fit_converged", "resolve_fit", "selection_metric", "training_features"]


def resolve_fit(config: FinetuneConfig, encoder_fully_frozen: bool) -> str:
    """``sgd`` or ``converged`` for ``config.selection.fit`` on a run whose encoder is (not) entirely frozen."""
    linear = config.selection.head == "linear" and not config.selection.pooler
    if config.selection.fit == "converged":
        if not encoder_fully_frozen:
            raise BertscopeError(f"--fit converged needs a fully frozen encoder; --freeze {config.selection.freeze} leaves "
                                 "parameters trainable (use --freeze encoder, or --fit sgd)")
        if not linear:
            raise BertscopeError("--fit converged solves a linear head; drop --head mlp2 / --pooler (or use --fit sgd)")
        return "converged"
    return "converged" if config.selection.fit == "auto" and encoder_fully_frozen and linear else "sgd"


@torch.no_grad()
def training_features(run: PreparedRun) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's inputs ``[N, d]`` (selected layers and dimensions, before dropout) and labels of the training
    split, in split order, from the run's own representation step (cached vectors or the live frozen encoder)."""
    data = run.data.train_data
    regression = glue.get_task(data.task).is_regression
    head = run.trained_head
    run.represent.train(False)
    head.eval()
    rows: list[torch.Tensor] = []
    positions: list[torch.Tensor] = []
    for indices in length_grouped_batches(data.lengths, run.config.optim.eval_batch_size or run.config.encoder.batch_size, seed=0,
                                          shuffle=False):
        batch = (run.collate_fn or collate)(data, indices, regression=regression, device=run.device)
        rows.append(head.features(run.represent(batch)).to("cpu", torch.float64))
        positions.append(batch.example_index.cpu())
    features = torch.empty(len(data), rows[0].shape[1], dtype=torch.float64)
    features[torch.cat(positions)] = torch.cat(rows)
    labels = torch.tensor(data.labels, dtype=torch.float64 if regression else torch.long)
    return features, labels


def selection_metric(task: glue.GlueTask) -> tuple[str, Callable[[list[Any], list[Any]], float]]:
    """The held-out score the probe's L2 strength is chosen by: the task's official metric (its mean,
    ``combined_score``, where a task has two), so a choice is never made by accuracy where the task is scored by
    MCC (CoLA: accuracy rewards the majority class)."""
    name = task.metrics[0] if len(task.metrics) == 1 else glue.COMBINED
    return name, lambda predictions, labels: glue.compute_metrics(task, predictions, labels)[name]


def _write(run: PreparedRun, probe: ProbeResult) -> None:
    """The probe's raw-feature weights into the head's linear classifier (same map: dropout is off in evaluation)."""
    classifier = run.trained_head.classifier
    with torch.no_grad():
        classifier.weight.copy_(probe.fit.weight.to(classifier.weight.dtype))
        classifier.bias.copy_(probe.fit.bias.to(classifier.bias.dtype))


def fit_converged(run: PreparedRun, callback: Any = None) -> tuple[TrainHistory, dict[str, Any]]:
    """Solve the run's head as a converged probe; its one-epoch history and the probe's record for the result."""
    config, task = run.config, run.data.task
    start = time.perf_counter()
    features, labels = training_features(run)
    name, metric = selection_metric(task)
    if task.is_regression:
        probe = fit_probe(features, labels, regression=True, seed=config.encoder.seed, metric=metric, metric_name=name)
    else:
        probe = fit_probe(features, labels, regression=False, num_classes=task.num_labels, seed=config.encoder.seed,
                          metric=metric, metric_name=name)
    _write(run, probe)
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    scores: dict[str, dict[str, float]] = {}
    predictions: dict[str, list[float]] = {}
    logits: dict[str, torch.Tensor] = {}
    for name, data in run.data.eval_data.items():
        logits[name] = evaluate_logits(run.represent, run.head, data, batch_size=config.optim.eval_batch_size
                                       or config.encoder.batch_size, device=run.device,
                                       dtype=resolve_dtype(config.encoder.dtype),
                                       collate_fn=run.collate_fn)
        predictions[name] = predictions_from_logits(logits[name], task.is_regression)
        preds = predictions[name] if task.is_regression else [int(p) for p in predictions[name]]
        scores[name] = glue.compute_metrics(task, preds, list(data.labels))
    eval_seconds = time.perf_counter() - start
    n = len(run.data.train_data)
    record = EpochRecord(epoch=1, train_loss=probe.fit.train_loss, learning_rate=0.0, train_seconds=train_seconds,
                         train_examples=n, eval=scores, eval_seconds=eval_seconds)
    if callback is not None:
        callback.on_epoch(record, probe.fit.iterations)
    history = TrainHistory(epochs=(record,), train_seconds=train_seconds, eval_seconds=eval_seconds,
                           train_examples=n, steps=probe.fit.iterations, predictions=predictions, logits=logits)
    return history, probe.to_dict()
