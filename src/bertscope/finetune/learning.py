"""Did a head learn anything? The constant predictor's loss, and the check a finished run is put through.

A head that ends where a constant prediction starts has measured its optimiser, not its features: a frozen encoder's
``[CLS]`` vector with outlier dimensions and a plain linear head, or the default encoder learning rate on a small
model, give exactly the majority-class score. Such a run is flagged (``learned`` false in results.json, a warning in
the console table, a marker in studies and the report) with the likely remedy, instead of being read as a finding.

The rule (:func:`did_not_learn`): the final epoch's mean training loss is within :data:`LOSS_MARGIN` (relative) of
the best constant predictor's loss on the training labels (:func:`constant_loss`), or every prediction on a dev split
is one class (classification with more than one class present in that split's labels).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LOSS_MARGIN", "REMEDY", "LearningCheck", "constant_loss", "did_not_learn"]

#: A final training loss above ``(1 - LOSS_MARGIN)`` times the constant predictor's loss counts as not learned: on a
#: balanced binary task (ln 2 = 0.693) that is a loss above 0.679. The stalled head of issue 11 ends at 0.686.
LOSS_MARGIN = 0.02

#: What usually makes a head learn (docs/finetune.md, "A head that did not learn").
REMEDY = ("try --feature-norm standardize (outlier dimensions stall a plain head), a higher --lr / --head-lr (the "
          "default 2e-5 barely moves a small encoder), or --token mean for a mean-pooled model (e.g. "
          "sentence-transformers)")


@dataclass(frozen=True)
class LearningCheck:
    """The verdict on one run: ``learned`` (False = flagged), why, and the likely remedy (empty when it learned)."""

    learned: bool
    reason: str
    remedy: str
    final_train_loss: float | None
    constant_loss: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def constant_loss(labels: Sequence[float], *, regression: bool) -> float:
    """The training loss of the best constant prediction: the entropy (nats) of the label distribution for
    classification (cross-entropy of predicting the label frequencies), the label variance for regression (MSE of
    predicting the mean)."""
    values = [float(v) for v in labels]
    if not values:
        raise ValueError("constant_loss: no labels")
    n = len(values)
    if regression:
        mean = sum(values) / n
        return sum((v - mean) ** 2 for v in values) / n
    counts = Counter(values)
    return -sum(c / n * math.log(c / n) for c in counts.values())


def did_not_learn(final_train_loss: float | None, constant: float | None,
                  dev_predictions: Mapping[str, Sequence[float]] | None = None,
                  dev_labels: Mapping[str, Sequence[float | None]] | None = None, *, regression: bool = False,
                  margin: float = LOSS_MARGIN) -> LearningCheck:
    """Flag a run whose final training loss is within ``margin`` (relative) of ``constant`` (the constant
    predictor's loss, :func:`constant_loss`), or whose predictions on a dev split are all one class (classification;
    when ``dev_labels`` are given, only where those labels hold more than one class)."""
    reasons: list[str] = []
    loss_ok = final_train_loss is not None and math.isfinite(final_train_loss)
    if loss_ok and constant is not None and constant > 0:
        assert final_train_loss is not None
        if final_train_loss >= (1.0 - margin) * constant:
            reasons.append(f"final training loss {final_train_loss:.4f} is within {margin:.0%} of the constant "
                           f"predictor's {constant:.4f}")
    if not regression:
        for split, predictions in (dev_predictions or {}).items():
            classes = {int(p) for p in predictions}
            labels = (dev_labels or {}).get(split)
            varied = labels is None or len({v for v in labels if v is not None}) > 1
            if predictions and len(classes) == 1 and varied:
                reasons.append(f"every {split} prediction is class {next(iter(classes))}")
    learned = not reasons
    return LearningCheck(learned=learned, reason="; ".join(reasons), remedy="" if learned else REMEDY,
                         final_train_loss=final_train_loss if loss_ok else None, constant_loss=constant)
