"""Evaluation of a head on a dev split: float32 logits in split order (data-parallel: each process scores its share
of the length-sorted batches, then one gather), predictions from logits, and the task's metrics.

The training loop, the converged probe (:mod:`bertscope.finetune.converged`) and the cross study evaluate with this
same code, so their numbers are comparable."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from bertscope.data import glue
from bertscope.finetune import distributed as dp
from bertscope.finetune.batching import EncodedSplit, collate, length_grouped_batches
from bertscope.finetune.representation import Representation

__all__ = ["autocast", "evaluate", "evaluate_logits", "predictions_from_logits", "score"]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate_logits(represent: Representation, head: nn.Module, data: EncodedSplit, *, batch_size: int,
                    device: torch.device, dtype: torch.dtype = torch.float32,
                    collate_fn: Callable[..., Any] | None = None) -> torch.Tensor:
    """The head's float32 logits ``[N, num_labels]`` for every example of ``data``, in split order, on the CPU.

    Data-parallel (a ``torch.distributed`` group is running), each process
    scores every n-th batch of the same length-sorted batches with the *unwrapped* modules (no collective in the
    forward, so a process with no batch cannot stall the others), then one gather collects every row: the logits
    are those a single process computes with the same weights and batch size."""
    regression = glue.get_task(data.task).is_regression
    represent.train(False)
    head.eval()
    head = dp.unwrap(head)
    forward = getattr(represent, "forward_module", None)
    if forward is not None and dp.unwrap(forward) is not forward:  # evaluate the encoder itself, not its DDP wrapper
        represent = copy.copy(represent)
        represent.forward_module = dp.unwrap(forward)  # type: ignore[attr-defined]
    batches = length_grouped_batches(data.lengths, batch_size, seed=0, shuffle=False)
    batches = batches[dp.rank()::dp.world_size()] if dp.is_active() else batches
    positions, values = [], []
    for indices in batches:
        batch = (collate_fn or collate)(data, indices, regression=regression, device=device)
        with autocast(device, dtype):
            logits = head(represent(batch)).float()
        positions.append(batch.example_index.cpu())
        values.append(logits.cpu())
    width = int(values[0].shape[-1]) if values else glue.get_task(data.task).num_labels
    pos = dp.gather_rows(torch.cat(positions) if positions else torch.empty(0, dtype=torch.long))
    val = dp.gather_rows(torch.cat(values) if values else torch.empty(0, width))
    out = torch.full((len(data), width), float("nan"), dtype=torch.float32)
    out[pos.long()] = val
    return out


def predictions_from_logits(logits: torch.Tensor, regression: bool) -> list[float]:
    """Class ids (argmax), or the single output for regression, as floats: what :func:`evaluate` returns."""
    pred = logits.squeeze(-1) if regression else logits.argmax(dim=-1)
    return pred.double().tolist()


def evaluate(represent: Representation, head: nn.Module, data: EncodedSplit, *, batch_size: int,
             device: torch.device, dtype: torch.dtype = torch.float32,
             collate_fn: Callable[..., Any] | None = None) -> list[float]:
    """Predictions for every example of ``data`` in split order: class ids, or real values for regression."""
    logits = evaluate_logits(represent, head, data, batch_size=batch_size, device=device, dtype=dtype,
                             collate_fn=collate_fn)
    return predictions_from_logits(logits, glue.get_task(data.task).is_regression)


def score(task: str, predictions: list[float], labels: Sequence[Any]) -> dict[str, float]:
    info = glue.get_task(task)
    preds = predictions if info.is_regression else [int(p) for p in predictions]
    return glue.compute_metrics(info, preds, list(labels))

