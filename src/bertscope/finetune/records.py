"""What the training loop returns and reports: one record per epoch, the run's history, and the callback protocol
through which it tells an experiment tracker while it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

__all__ = ["EpochRecord", "TrainCallback", "TrainHistory"]


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    learning_rate: float
    train_seconds: float
    train_examples: int
    eval: dict[str, dict[str, float]]
    eval_seconds: float
    #: the mean training loss over the epoch's second half of batches: where the head ended, not where it started.
    #: In a one-epoch run the whole epoch's mean (``train_loss``) still holds the untrained steps (a regression head
    #: starts far above the constant predictor), so the learning check reads this one (None: not recorded).
    late_train_loss: float | None = None

    @property
    def ended_loss(self) -> float:
        """The training loss where the epoch ended: the second half's mean when recorded (a solved probe records
        only its final loss, which is already where it ended), else the whole epoch's."""
        return self.late_train_loss if self.late_train_loss is not None else self.train_loss


@dataclass(frozen=True)
class TrainHistory:
    epochs: tuple[EpochRecord, ...]
    train_seconds: float
    eval_seconds: float
    train_examples: int
    steps: int
    predictions: dict[str, list[float]] = field(default_factory=dict)
    logits: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # of the last evaluation
    resumed_from_epoch: int = 0  # epochs the checkpoint it continued from had finished (0: a fresh run)
    resumed_from_step: int = 0  # optimizer steps that checkpoint had taken

    @property
    def train_examples_per_second(self) -> float:
        return self.train_examples / self.train_seconds if self.train_seconds > 0 else float("nan")


class TrainCallback(Protocol):
    """What :func:`train_loop` reports while it runs (an experiment tracker, :mod:`bertscope.finetune.tracking`).

    ``on_step`` every ``TrackingOptions.log_every`` optimizer steps with the mean loss of those steps (the only device
    sync it adds) and the learning rate after the step; ``on_epoch`` after each epoch's evaluation with the epoch's
    record and the number of steps so far."""

    def on_step(self, step: int, loss: float, learning_rate: float) -> None: ...

    def on_epoch(self, record: EpochRecord, step: int) -> None: ...

