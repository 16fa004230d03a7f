"""Did a head learn anything? The constant predictor's loss, and the check a finished run is put through.

A head that ends where a constant prediction starts has measured its optimiser, not its features: a frozen encoder's
``[CLS]`` vector with outlier dimensions and a plain linear head, or the default encoder learning rate on a small
model, give exactly the majority-class score. Such a run is flagged (``learned`` false in results.json, a warning in
the console table, a marker in studies and the report) with the likely remedy, instead of being read as a finding.

The rule (:func:`did_not_learn`): the training loss where training ended (the mean over the final epoch's second
half of batches, so a one-epoch run is not judged by its untrained first steps) is within :data:`LOSS_MARGIN`
(relative) of the best constant predictor's loss on the training labels (:func:`constant_loss`), or every
prediction on a dev split is one class (classification with more than one class present in that split's labels).
The reason states the loss as it is (within the margin of the constant predictor's, or that many times above it),
and :func:`remedy_for` names only the remedies the run has not already used (no ``--feature-norm standardize`` to
a standardised run, no ``--token mean`` to a mean run, a learning rate named as the run's own; where the loss ended
above the constant predictor's, a rate too high and one too low are both possible, and the remedy says so).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DEFAULT_LR", "LOSS_MARGIN", "REMEDY", "LearningCheck", "constant_loss", "constant_score", "did_not_learn",
           "remedy_for"]

#: A final training loss above ``(1 - LOSS_MARGIN)`` times the constant predictor's loss counts as not learned: on a
#: balanced binary task (ln 2 = 0.693) that is a loss above 0.679. A stalled [CLS] head of MiniLM on SST-2 ended at 0.686.
LOSS_MARGIN = 0.02

#: ``--lr``'s default (``FinetuneConfig.lr``), the rate the generic remedy calls too small for a small encoder.
DEFAULT_LR = 2e-5

#: What usually makes a head learn (docs/finetune.md, "A head that did not learn"), for many runs at once (studies,
#: reports); one run's own remedy is :func:`remedy_for` its options.
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


def constant_score(labels: Sequence[float]) -> float:
    """The best constant prediction of a regression target under squared error: the labels' mean (the output a
    regression head starts at, and the predictor :func:`constant_loss` scores)."""
    values = [float(v) for v in labels]
    if not values:
        raise ValueError("constant_score: no labels")
    return sum(values) / len(values)


def constant_loss(labels: Sequence[float], *, regression: bool) -> float:
    """The training loss of the best constant prediction: the entropy (nats) of the label distribution for
    classification (cross-entropy of predicting the label frequencies), the label variance for regression (MSE of
    predicting the mean)."""
    values = [float(v) for v in labels]
    if not values:
        raise ValueError("constant_loss: no labels")
    n = len(values)
    if regression:
        mean = constant_score(values)
        return sum((v - mean) ** 2 for v in values) / n
    counts = Counter(values)
    return -sum(c / n * math.log(c / n) for c in counts.values())


def remedy_for(options: Mapping[str, Any] | None, *, above: bool = False) -> str:
    """The likely remedy for one run that did not learn, leaving out what its ``options`` already use
    (``feature_norm`` as resolved, ``token``, ``lr`` and ``head_lr``; ``lr`` None: no learning rate applies, as for
    a solved probe). ``above``: the loss ended above the constant predictor's (overshot, or not even reached it).
    Without options: the generic :data:`REMEDY`."""
    if options is None:
        return REMEDY
    parts: list[str] = []
    if options.get("feature_norm") != "standardize":
        parts.append("--feature-norm standardize (outlier dimensions stall a plain head)")
    lr, head_lr = options.get("lr"), options.get("head_lr")
    if lr is not None:
        used = f"{lr:g}" if head_lr in (None, lr) else f"{lr:g} / {head_lr:g}"
        if above:
            parts.append(f"another --lr / --head-lr than this run's {used} (lower if its loss rose, higher if it "
                         "barely fell)")
        elif lr == DEFAULT_LR and head_lr in (None, lr):
            parts.append("a higher --lr / --head-lr (the default 2e-5 barely moves a small encoder)")
        else:
            parts.append(f"a higher --lr / --head-lr than this run's {used}")
    if options.get("token") != "mean":
        parts.append("--token mean for a mean-pooled model (e.g. sentence-transformers)")
    if not parts:
        return "none of the usual remedies is left to try: check the data and the model"
    return "try " + (", ".join(parts[:-1]) + ", or " if len(parts) > 1 else "") + parts[-1]


def did_not_learn(final_train_loss: float | None, constant: float | None,
                  dev_predictions: Mapping[str, Sequence[float]] | None = None,
                  dev_labels: Mapping[str, Sequence[float | None]] | None = None, *, regression: bool = False,
                  margin: float = LOSS_MARGIN, options: Mapping[str, Any] | None = None) -> LearningCheck:
    """Flag a run whose final training loss is not clearly below ``constant`` (the constant predictor's loss,
    :func:`constant_loss`): within ``margin`` (relative) of it or above it; or whose predictions on a dev split are
    all one class (classification; when ``dev_labels`` are given, only where those labels hold more than one class).
    ``options``: the run's own, for :func:`remedy_for`."""
    reasons: list[str] = []
    above = False
    loss_ok = final_train_loss is not None and math.isfinite(final_train_loss)
    if loss_ok and constant is not None and constant > 0:
        assert final_train_loss is not None
        if final_train_loss > (1.0 + margin) * constant:
            above = True
            reasons.append(f"final training loss {final_train_loss:.4g} is {final_train_loss / constant:.3g} times "
                           f"the constant predictor's {constant:.4f}")
        elif final_train_loss >= (1.0 - margin) * constant:
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
    return LearningCheck(learned=learned, reason="; ".join(reasons),
                         remedy="" if learned else remedy_for(options, above=above),
                         final_train_loss=final_train_loss if loss_ok else None, constant_loss=constant)
