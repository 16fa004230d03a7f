"""How the head (and the trainable encoder) are optimised: the options of the training loop's optimiser and
schedule (:class:`OptimOptions`, passed to :func:`bertscope.finetune.train.train_loop` as they are) and AdamW's
parameter groups. A new hyper-parameter of the loop is one field here plus its use in the loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bertscope.core.config import Options, opt
from bertscope.core.errors import BertscopeError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["OptimOptions", "decay_exempt", "param_groups"]


@dataclass(frozen=True)
class OptimOptions(Options):
    """Epochs, AdamW, the linear warmup/decay schedule, clipping and batching of the training loop.

    ``head_lr`` None means "resolved by the pipeline" (``--lr``, or 1e-3 with the encoder entirely frozen:
    :func:`bertscope.finetune.pipeline.head_learning_rate`); the loop itself is given it resolved."""

    epochs: int = opt(3, "training epochs")
    lr: float = opt(2e-5, "peak learning rate of the encoder (AdamW)")
    head_lr: float | None = opt(None, "peak learning rate of the head; default: --lr, or 1e-3 when the encoder "
                                      "is entirely frozen")
    weight_decay: float = opt(0.01, "AdamW weight decay (not applied to biases and norm weights)")
    warmup_ratio: float = opt(0.1, "fraction of the steps with linear warmup, then linear decay to 0")
    grad_clip: float = opt(1.0, "clip the gradient norm to this value (0 = off)")
    group_by_length: bool = opt(True, "batch examples of similar length together (less padding)")
    eval_batch_size: int | None = opt(None, "examples per evaluation batch (default: --batch-size)")

    def validate(self) -> None:
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise BertscopeError(f"--eval-batch-size must be at least 1, got {self.eval_batch_size}")
        if self.epochs < 1:
            raise BertscopeError(f"--epochs must be at least 1, got {self.epochs}")
        if self.lr <= 0 or (self.head_lr is not None and self.head_lr <= 0):
            raise BertscopeError("--lr and --head-lr must be positive")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise BertscopeError("--weight-decay and --grad-clip must not be negative")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise BertscopeError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")


def decay_exempt(name: str) -> bool:
    """Parameters that get no weight decay (as in BERT): biases and normalisation weights."""
    return name.endswith("bias") or "norm" in name.lower()


def param_groups(encoder_params: Sequence[tuple[str, nn.Parameter]], head: nn.Module,
                 options: OptimOptions) -> list[dict[str, Any]]:
    """AdamW groups: encoder and head, each split into decayed and exempt parameters; empty groups dropped.
    ``options.head_lr`` must be resolved (not None)."""
    head_lr = options.lr if options.head_lr is None else options.head_lr
    head_named = [(n, p) for n, p in head.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in encoder_params if not decay_exempt(n)], "weight_decay": options.weight_decay,
         "lr": options.lr},
        {"params": [p for n, p in encoder_params if decay_exempt(n)], "weight_decay": 0.0, "lr": options.lr},
        {"params": [p for n, p in head_named if not decay_exempt(n)], "weight_decay": options.weight_decay,
         "lr": head_lr},
        {"params": [p for n, p in head_named if decay_exempt(n)], "weight_decay": 0.0, "lr": head_lr},
    ]
    return [g for g in groups if g["params"]]
