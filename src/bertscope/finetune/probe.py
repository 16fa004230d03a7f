"""Converged probes: a linear read-out of fixed features, solved to convergence instead of trained by a schedule.

A frozen encoder's score should be a property of its features, not of an optimiser's step size: a linear head
trained for a few epochs with AdamW on raw BERT vectors (one "outlier" dimension ~300x the median) can end at the
majority class while a solved logistic regression on the same vectors reaches far more. This module solves:

* :func:`fit_logistic`: multinomial logistic regression, objective ``mean cross-entropy + l2/2 * ||W||^2`` (bias
  not penalised), by full-batch L-BFGS (float64, strong-Wolfe line search) until the gradient's largest entry is
  below ``tol``. scikit-learn's ``LogisticRegression`` minimises ``C * sum(loss) + ||w||^2 / 2``, so the same
  optimum has ``C = 1 / (n * l2)`` for three or more classes and ``C = 2 / (n * l2)`` for two (it fits one vector
  ``w = W_1 - W_0`` where this softmax has two rows that sum to zero);
* :func:`fit_ridge`: closed-form ridge regression (STS-B), objective ``mean squared error + l2 * ||w||^2``
  (= scikit-learn's ``Ridge(alpha = n * l2)``);
* :func:`fit_probe`: the L2 strength chosen on a seeded held-out part of the training rows over :data:`L2_GRID`,
  then the probe refitted on all training rows. The choice is scored by the caller's metric (the fine-tuning
  pipeline passes the task's official GLUE metric: MCC on CoLA, where accuracy would favour the majority class),
  by accuracy (R^2 for ridge) when none is given.

Features are standardised inside the probe (the fitting rows' mean and standard deviation; a constant dimension
keeps scale 1) and the solution is folded back into plain weights on the raw features, ``logits = X @ weight.T +
bias``, so it drops into a linear :class:`bertscope.finetune.head.SelectingHead` unchanged. Pure functions on tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["HOLDOUT_FRACTION", "L2_GRID", "PATIENCE", "ProbeFit", "ProbeResult", "SelectionMetric", "fit_logistic",
           "fit_probe", "fit_ridge", "holdout_split", "standardise"]

#: A held-out score, higher is better: ``metric(predictions, labels)`` on class ids (or real values for ridge).
SelectionMetric = Callable[[list[Any], list[Any]], float]

#: The L2 strengths tried (on standardised features, per training example): 1e-5 .. 10, one per decade.
L2_GRID: tuple[float, ...] = tuple(10.0 ** k for k in range(-5, 2))

#: Stop walking the grid (strong to weak) after this many L2 values in a row held out worse than the best.
PATIENCE = 2

#: Share of the training rows held out to choose the L2 strength (seeded; at least one row each side).
HOLDOUT_FRACTION = 0.1


@dataclass(frozen=True)
class ProbeFit:
    """One solved probe at one L2 strength: weights on the raw features and how the solver ended."""

    weight: torch.Tensor  # [outputs, d] on raw features (float64)
    bias: torch.Tensor  # [outputs]
    l2: float
    train_loss: float  # mean cross-entropy (or mean squared error) on the fitting rows, without the penalty
    iterations: int
    converged: bool
    gradient: float  # largest absolute gradient entry at the end (0 for the closed form)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[n, outputs]`` (regression: ``[n, 1]``) for raw features ``x``."""
        return x.to(torch.float64) @ self.weight.T + self.bias


@dataclass(frozen=True)
class ProbeResult:
    """A probe chosen and refitted on a training split: the final fit and the L2 choice that led to it."""

    kind: str  # "logistic" or "ridge"
    fit: ProbeFit  # refitted on every training row with the chosen l2
    grid: tuple[tuple[float, float], ...]  # (l2, held-out score): ``score``'s value
    holdout: int  # rows held out for the choice
    seed: int
    score: str = ""  # the held-out score's name ("" = accuracy, or r2 for ridge)

    @property
    def l2(self) -> float:
        return self.fit.l2

    def to_dict(self) -> dict[str, Any]:
        """What a result records about the probe (not the weights: those are the head's)."""
        return {"method": "converged", "probe": self.kind, "l2": self.fit.l2,
                "grid": [{"l2": l2, "holdout_score": score} for l2, score in self.grid],
                "holdout_examples": self.holdout, "holdout_seed": self.seed,
                "score": self.score or ("accuracy" if self.kind == "logistic" else "r2"),
                "iterations": self.fit.iterations, "converged": self.fit.converged,
                "gradient": self.fit.gradient, "train_loss": self.fit.train_loss}


def standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation (population) of ``x`` ``[n, d]``; a constant dimension gets 1."""
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def _fold(weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
          std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights on standardised features -> the same map on raw features."""
    raw = weight / std
    return raw, bias - raw @ mean


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, *, num_classes: int | None = None,
                 tol: float = 1e-6, max_iter: int = 2000, start: ProbeFit | None = None) -> ProbeFit:
    """Multinomial logistic regression with L2 on standardised ``x`` ``[n, d]`` and class ids ``y`` ``[n]``.

    Full-batch L-BFGS from zero, or warm-started from ``start`` (a fit on the same rows: the optimum is unique, so
    only the number of iterations changes); ``converged``: the largest gradient entry ended below ``tol``.
    """
    if l2 <= 0:
        raise ValueError(f"l2 must be positive, got {l2}")
    x = x.to(torch.float64)
    y = y.to(torch.long)
    classes = int(num_classes if num_classes is not None else int(y.max()) + 1)
    mean, std = standardise(x)
    z = (x - mean) / std
    weight = torch.zeros(classes, z.shape[1], dtype=torch.float64)
    bias = torch.zeros(classes, dtype=torch.float64)
    if start is not None:  # raw-feature weights back on the standardised features
        weight, bias = start.weight * std, start.bias + start.weight @ mean
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, max_eval=max_iter * 2,
                                  tolerance_grad=tol, tolerance_change=1e-15, history_size=20,
                                  line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
        objective()  # the gradient at the final point
    assert weight.grad is not None and bias.grad is not None
    gradient = float(torch.cat([weight.grad.flatten(), bias.grad]).abs().max())
    iterations = int(optimizer.state[optimizer._params[0]].get("n_iter", 0))
    with torch.no_grad():
        loss = float(torch.nn.functional.cross_entropy(z @ weight.T + bias, y))
        raw, raw_bias = _fold(weight.detach(), bias.detach(), mean, std)
    return ProbeFit(raw, raw_bias, float(l2), loss, iterations, gradient <= tol, gradient)


def fit_ridge(x: torch.Tensor, y: torch.Tensor, l2: float) -> ProbeFit:
    """Ridge regression on standardised ``x`` ``[n, d]`` for real targets ``y`` ``[n]``, in closed form."""
    if l2 <= 0:
        raise ValueError(f"l2 must be positive, got {l2}")
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    n = x.shape[0]
    mean, std = standardise(x)
    z = (x - mean) / std
    target = y - y.mean()
    gram = z.T @ z + n * l2 * torch.eye(z.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(gram, z.T @ target)
    raw, raw_bias = _fold(w.unsqueeze(0), y.mean().reshape(1), mean, std)
    loss = float((z @ w + y.mean() - y).pow(2).mean())
    return ProbeFit(raw, raw_bias, float(l2), loss, 1, True, 0.0)


def holdout_split(n: int, seed: int, fraction: float = HOLDOUT_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (fit rows, held-out rows) of ``n`` training rows: ``fraction`` of them held out, at least one each."""
    if n < 2:
        raise ValueError(f"choosing the L2 strength needs at least 2 training examples, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    held = min(n - 1, max(1, round(fraction * n)))
    return order[held:].sort().values, order[:held].sort().values


def _score(fit: ProbeFit, x: torch.Tensor, y: torch.Tensor, regression: bool,
           metric: SelectionMetric | None = None) -> tuple[float, float]:
    """(held-out score, tie-breaker), both higher is better: ``metric`` (default accuracy, or R^2 for ridge) and
    minus the log-loss (R^2 for ridge). A metric that is undefined (a correlation of constant predictions) scores
    0: such a probe carries no information."""
    out = fit.predict(x)
    if regression:
        pred, target = out.squeeze(-1), y.to(torch.float64)
        total = float((target - target.mean()).pow(2).sum())
        r2 = 1.0 - float((pred - target).pow(2).sum()) / total if total > 0 else -float((pred - target).pow(2).mean())
        tie, predicted = r2, pred.tolist()
    else:
        tie = -float(torch.nn.functional.cross_entropy(out, y.to(torch.long)))
        predicted = out.argmax(dim=-1).tolist()
    if metric is None:
        score = r2 if regression else float((out.argmax(dim=-1) == y).double().mean())
    else:
        score = float(metric(predicted, y.tolist()))
        score = score if math.isfinite(score) or not math.isfinite(tie) else 0.0
    return score, tie


def fit_probe(x: torch.Tensor, y: torch.Tensor, *, regression: bool, num_classes: int | None = None, seed: int = 0,
              grid: Sequence[float] = L2_GRID, holdout: float = HOLDOUT_FRACTION, tol: float = 1e-6,
              max_iter: int = 2000, patience: int | None = PATIENCE, metric: SelectionMetric | None = None,
              metric_name: str = "") -> ProbeResult:
    """Choose the L2 strength on a seeded held-out part of the training rows (best held-out ``metric``, named
    ``metric_name``: by default accuracy, R^2 for ridge; ties by log-loss (R^2), then the larger l2), then refit on
    every training row with it.

    The grid is walked from strong to weak L2 (each fit warm-started from the previous one) and the walk stops once
    ``patience`` values in a row scored below the best so far: the weakest L2 values are the slowest to solve
    (near-separable data) and, past the optimum, the held-out score only falls. ``patience=None`` tries them all.

    Only ``x`` and ``y`` (the training split) are read: the dev split never influences the probe.
    """
    x = x.to(torch.float64)
    if not grid:
        raise ValueError("fit_probe needs at least one L2 strength")

    def solve(rows_x: torch.Tensor, rows_y: torch.Tensor, l2: float, start: ProbeFit | None) -> ProbeFit:
        if regression:
            return fit_ridge(rows_x, rows_y, l2)
        return fit_logistic(rows_x, rows_y, l2, num_classes=num_classes, tol=tol, max_iter=max_iter, start=start)

    keep, held = holdout_split(x.shape[0], seed, holdout)
    scored: list[tuple[float, float, float]] = []
    fits: dict[float, ProbeFit] = {}
    previous, worse = None, 0
    for l2 in sorted((float(v) for v in grid), reverse=True):  # strong to weak, each warm-started: a path
        previous = fits[l2] = solve(x[keep], y[keep], l2, previous)
        score, tie = _score(previous, x[held], y[held], regression, metric)
        worse = worse + 1 if scored and (score, tie) < max((s, t) for s, t, _ in scored) else 0
        scored.append((score, tie, l2))
        if patience is not None and worse >= patience:
            break
    scored.reverse()
    best = max(scored, key=lambda s: (round(s[0], 12), round(s[1], 12), s[2]))
    grid_scores = tuple((l2, score) for score, _, l2 in scored)
    if not all(math.isfinite(s) and math.isfinite(t) for s, t, _ in scored):
        raise ValueError("fit_probe: a held-out score is not finite (are the features finite?)")
    final = solve(x, y, best[2], fits[best[2]])
    return ProbeResult("ridge" if regression else "logistic", final, grid_scores, int(held.numel()), int(seed),
                       metric_name if metric is not None else "")
