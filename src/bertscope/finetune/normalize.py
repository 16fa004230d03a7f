"""The statistics of ``--feature-norm standardize``: per-feature mean and standard deviation of the training split.

They are computed once, before training, over exactly what the head's normalisation sees (the selected features:
token, layer(s), pooler, dimensions; :meth:`bertscope.finetune.head.SelectingHead.selected`), with the encoder and the head
in eval mode (no dropout, so neither the global RNG nor the head's generators move), and then kept fixed. For a
frozen encoder they are exact (the features never change, cached or live); when fine-tuning they describe the
pretrained encoder's features, which is what the head meets at the start. The standard deviation is the population
one (``ddof=0``, as scikit-learn's ``StandardScaler``), accumulated in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from bertscope.data import glue
from bertscope.finetune.batching import EncodedSplit, collate, length_grouped_batches
from bertscope.finetune.head import SelectingHead
from bertscope.finetune.representation import Representation

__all__ = ["feature_moments", "fit_standardizer"]


def feature_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and population standard deviation of ``[N, F]`` (float64 accumulation, float32 out)."""
    x = features.double()
    mean = x.mean(dim=0)
    std = (x - mean).pow(2).mean(dim=0).sqrt()
    return mean.float(), std.float()


@torch.no_grad()
def fit_standardizer(head: SelectingHead, represent: Representation, data: EncodedSplit, *, batch_size: int,
                     device: torch.device, collate_fn: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Set ``head``'s standardisation from every example of ``data`` (the training split); returns a summary for
    the result file (examples, and the largest / median feature std, which show the outlier dimensions)."""
    regression = glue.get_task(data.task).is_regression
    was_training = head.training
    represent.train(False)
    head.eval()
    total = torch.zeros(head.spec.in_features, dtype=torch.float64)
    squares = torch.zeros_like(total)
    count = 0
    # Two passes' worth of sums in one: sum and sum of squares about a shift (the first batch's mean) stay accurate.
    shift: torch.Tensor | None = None
    for indices in length_grouped_batches(data.lengths, batch_size, seed=0, shuffle=False):
        batch = (collate_fn or collate)(data, indices, regression=regression, device=device)
        x = head.selected(represent(batch)).double().cpu()
        if shift is None:
            shift = x.mean(dim=0)
        x = x - shift
        total += x.sum(dim=0)
        squares += x.pow(2).sum(dim=0)
        count += int(x.shape[0])
    head.train(was_training)
    if count == 0 or shift is None:
        raise ValueError("fit_standardizer: the training split is empty")
    centred = total / count
    mean = shift + centred
    std = (squares / count - centred.pow(2)).clamp_min(0.0).sqrt()
    head.set_standardizer(mean.float(), std.float())
    stored = head.feature_std.detach().cpu()
    return {"fitted_on": "train", "examples": count, "std_max": float(stored.max()),
            "std_median": float(stored.median()), "mean_abs_max": float(mean.abs().max())}
