"""The output-layer lens: pure per-layer metric functions on tensors (Kao et al., arXiv 2001.09309).

A masked-LM head (:class:`bertscope.models.families.HeadParts`) is applied to the hidden state of some layer at the counted
token positions only, and each position is scored against the token that was *input* there. The vocabulary logits
are never materialised for more than ``chunk_size`` positions at once, so memory stays bounded however many tokens
are scored, and no ``topk`` is needed:

* rank (0-based) = number of vocabulary entries whose logit is strictly greater than the input token's logit;
  top-1 = ``rank == 0``, top-5 = ``rank < 5`` (ties are resolved in the input token's favour);
* NLL = ``logsumexp(logits) - logit[input]`` = ``-log_softmax(logits)[input]`` (natural log), in float32 at least.

The top-1 decoded token of every position can be kept as well (one arg-max per chunk, taken before the logits are
overwritten), for the agreement of each layer with the final layer (:func:`bertscope.lens.agreement.final_agreement`,
counted by :meth:`MetricSums.add_final_agreement`) and for the per-token view (:func:`decode_tokens`).

Aggregation is a sum over tokens (float64) plus per-sentence "all counted tokens ranked first" flags, so the numbers
depend neither on batch size nor on padding. This module knows nothing about models or files.

Each metric the lens reports is declared once, in :data:`LENS_METRICS` (:class:`LensMetric`: its key, human label,
table header, definition, how it accumulates and how it is shown); the sums, the result records, ``reconstruct``'s
table, figure and result file, ``compare``'s curves and the report's labels and axes all read that declaration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch

from bertscope.data.labels import metric_name
from bertscope.models.families import HeadParts

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "LENS_LABELS",
    "LENS_METRICS",
    "LENS_METRIC_NAMES",
    "LayerMetrics",
    "LensMetric",
    "MetricSums",
    "decode_tokens",
    "head_token_stats",
    "head_token_stats_top1",
    "head_top1",
    "lens_metric",
    "metric_label",
    "sentence_exact",
    "token_stats",
]

DEFAULT_CHUNK_SIZE = 512


def token_stats(
    logits: torch.Tensor, targets: torch.Tensor, *, overwrite: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(0-based rank, NLL) of ``targets`` [N] under ``logits`` [N, V]; computed in float32 or wider.

    ``overwrite=True`` lets the function use ``logits`` as scratch space (saves one [N, V] allocation).
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits, overwrite = logits.float(), True
    target = targets.unsqueeze(1)
    target_logit = logits.gather(1, target)
    # log_softmax's fused kernel is faster than logsumexp and gives the same value at the target
    nll = -torch.log_softmax(logits, dim=1).gather(1, target).squeeze(1)
    # count of strictly greater logits: sub/clamp/sign/sum is a few times faster on CPU than a bool reduction, and a
    # float32 sum of ones is exact far beyond any vocabulary size; in place when ``logits`` may be overwritten
    diff = logits.sub_(target_logit) if overwrite else logits - target_logit
    rank = diff.clamp_(min=0).sign_().sum(dim=1).long()
    return rank, nll


def head_token_stats(
    head: HeadParts,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    *,
    is_last_layer: bool,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank and NLL of ``targets`` [N] when ``head`` decodes ``hidden`` [N, H] (one layer, counted tokens only).

    The transform runs once over all N positions (cheap: H x H); the vocabulary decoder runs ``chunk_size`` rows at
    a time so at most ``chunk_size x V`` logits exist at any moment.
    """
    rank, nll, _ = _decode_stats(head, hidden, targets, is_last_layer, chunk_size, keep_top1=False)
    return rank, nll


def head_token_stats_top1(
    head: HeadParts,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    *,
    is_last_layer: bool,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`head_token_stats` plus the top-1 decoded token id [N] of every position (from the same logits)."""
    rank, nll, top1 = _decode_stats(head, hidden, targets, is_last_layer, chunk_size, keep_top1=True)
    assert top1 is not None
    return rank, nll, top1


def head_top1(head: HeadParts, hidden: torch.Tensor, *, is_last_layer: bool,
              chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """The top-1 decoded token id [N] of ``hidden`` [N, H], chunk by chunk (no target needed)."""
    features = head.features(hidden, is_last_layer=is_last_layer)
    parts = [head.decode(features[s:s + chunk_size]).argmax(dim=-1) for s in range(0, features.shape[0], chunk_size)]
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.long)


def _decode_stats(head: HeadParts, hidden: torch.Tensor, targets: torch.Tensor, is_last_layer: bool,
                  chunk_size: int, *, keep_top1: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if hidden.shape[0] != targets.shape[0]:
        raise ValueError(f"{hidden.shape[0]} hidden states but {targets.shape[0]} targets")
    features = head.features(hidden, is_last_layer=is_last_layer)
    ranks, nlls, tops = [], [], []
    for start in range(0, features.shape[0], chunk_size):
        logits = head.decode(features[start:start + chunk_size])
        if keep_top1:  # before token_stats overwrites the logits
            tops.append(logits.argmax(dim=-1))
        rank, nll = token_stats(logits, targets[start:start + chunk_size], overwrite=True)
        ranks.append(rank)
        nlls.append(nll)
    if not ranks:
        empty = hidden.new_zeros(0)
        return empty.long(), empty.float(), empty.long() if keep_top1 else None
    return torch.cat(ranks), torch.cat(nlls), torch.cat(tops) if keep_top1 else None


def decode_tokens(head: HeadParts, hidden: torch.Tensor, targets: torch.Tensor, *,
                  is_last_layer: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-1 decoded token id [T], probability of the input token [T]) for one sentence's hidden states [T, H].

    For the per-token view (a handful of sentences), so the [T, V] logits are made at once; softmax in float32.
    """
    logits = head.logits(hidden, is_last_layer=is_last_layer).float()
    probs = torch.softmax(logits, dim=-1)
    return logits.argmax(dim=-1), probs.gather(1, targets.unsqueeze(1)).squeeze(1)


def sentence_exact(correct: torch.Tensor, sentence_ids: torch.Tensor, num_sentences: int) -> tuple[int, int]:
    """(sentences whose every counted token is top-1, sentences with at least one counted token).

    ``correct`` [N] is a bool per counted token and ``sentence_ids`` [N] the sentence (0..num_sentences-1) it came
    from; sentences without counted tokens are left out of both numbers.
    """
    counts = torch.zeros(num_sentences, dtype=torch.long, device=correct.device)
    counts.index_add_(0, sentence_ids, torch.ones_like(sentence_ids))
    wrong = torch.zeros(num_sentences, dtype=torch.long, device=correct.device)
    wrong.index_add_(0, sentence_ids, (~correct).long())
    present = counts > 0
    return int((present & (wrong == 0)).sum()), int(present.sum())


# --- The lens metrics, each declared once ------------------------------------------------------------------------

#: How a metric accumulates over counted tokens: ``token mean`` = the mean of a per-token value over counted tokens;
#: ``sentence all`` = the share of sentences (with a counted token) whose every counted token has a per-token flag;
#: ``final agreement`` = the share of counted tokens whose top-1 decoded token equals the final layer's there.
Accumulation = Literal["token mean", "sentence all", "final agreement"]
#: How a value is read: ``share`` (0..1, shown as a percentage), ``log`` (spans decades: a log axis), ``linear``.
Scale = Literal["share", "log", "linear"]
TokenValue = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LensMetric:
    """One number the lens reports per layer, declared once: everything that shows, sums or explains it reads this.

    ``name`` is its key in result files; ``label`` its human name (figures, tables, reports: what
    :func:`metric_label` gives); ``column`` its short table header; ``definition`` the result file's sentence
    for it; ``accumulation`` and ``value`` how it is summed (``value(rank, nll)`` [N] per counted token, rank
    0-based; unused by ``final agreement``); ``scale`` and ``digits`` how it is shown.
    """

    name: str
    label: str
    column: str
    definition: str
    accumulation: Accumulation
    scale: Scale
    digits: int = 1
    value: TokenValue | None = None

    def format(self, value: float | None) -> str:
        """The value as a table shows it: shares as a percentage, others with ``digits`` decimals; ``-`` for none."""
        if value is None or value != value:
            return "-"
        return f"{100 * value:.{self.digits}f}%" if self.scale == "share" else f"{value:.{self.digits}f}"


LENS_METRICS: tuple[LensMetric, ...] = (
    LensMetric("top1", "top-1 reconstruction", "top-1",
               "share of counted tokens whose input token has the highest logit",
               "token mean", "share", value=lambda rank, nll: rank == 0),
    LensMetric("top5", "top-5 reconstruction", "top-5",
               "share of counted tokens whose input token is among the 5 highest logits",
               "token mean", "share", value=lambda rank, nll: rank < 5),
    LensMetric("mean_rank", "mean rank of the input token (1 = best)", "mean rank",
               "mean 1-based rank of the input token (1 = first choice; ties count in its favour)",
               "token mean", "log", value=lambda rank, nll: rank.double() + 1.0),
    LensMetric("nll", "NLL of the input token (nats)", "NLL",
               "mean negative log-likelihood of the input token, natural log (nats)",
               "token mean", "linear", digits=3, value=lambda rank, nll: nll),
    LensMetric("exact", "exact-sentence reconstruction", "exact sent.",
               "share of sentences whose counted tokens are all top-1",
               "sentence all", "share", value=lambda rank, nll: rank == 0),
    LensMetric("final_agreement", "top-1 agreement with the final layer", "agree final",
               "share of counted tokens whose top-1 decoded token equals the final layer's top-1 there (1.0 at the "
               "last layer; Din et al. 2024)", "final agreement", "share"),
)
LENS_METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in LENS_METRICS)
_BY_NAME = {m.name: m for m in LENS_METRICS}


def lens_metric(name: str) -> LensMetric:
    """The declaration of lens metric ``name`` (KeyError for a name the lens does not report)."""
    return _BY_NAME[name]


#: every lens metric's human name by its key
LENS_LABELS: dict[str, str] = {m.name: m.label for m in LENS_METRICS}


def metric_label(key: str, *, glue: bool = True) -> str:
    """The human name of any metric key, the lens's own included (``top1`` -> "top-1 reconstruction"): what
    :func:`bertscope.data.labels.metric_name` gives with the lens's labels (the data floor cannot import them)."""
    return metric_name(key, glue=glue, names=LENS_LABELS)


@dataclass
class MetricSums:
    """Running sums of every lens metric for one (layer, position group); add batches in any order and size, read
    :meth:`result`. Sums are float64 (counts of flags are exact far beyond any corpus)."""

    tokens: int = 0
    sentences: int = 0
    agree_tokens: int = 0
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LENS_METRIC_NAMES, 0.0))

    def add_final_agreement(self, agree: torch.Tensor) -> None:
        """Add [N] bools: this layer's top-1 decoded token equals the final layer's at that counted position."""
        self.agree_tokens += int(agree.numel())
        for m in LENS_METRICS:
            if m.accumulation == "final agreement":
                self.totals[m.name] += int(agree.sum())

    def add(self, rank: torch.Tensor, nll: torch.Tensor, sentence_ids: torch.Tensor, num_sentences: int) -> None:
        """Add the counted tokens of one batch; ``sentence_ids`` index the batch's sentences."""
        self.tokens += int(rank.numel())
        present = None
        for m in LENS_METRICS:
            if m.value is None:
                continue
            value = m.value(rank, nll)
            if m.accumulation == "token mean":
                self.totals[m.name] += float(value.double().sum())
            elif m.accumulation == "sentence all":
                exact, present = sentence_exact(value.bool(), sentence_ids, num_sentences)
                self.totals[m.name] += exact
        if present is None:
            present = int(torch.unique(sentence_ids).numel()) if sentence_ids.numel() else 0
        self.sentences += present

    def result(self) -> LayerMetrics:
        nan = float("nan")
        over = {"token mean": self.tokens, "sentence all": self.sentences, "final agreement": self.agree_tokens}
        return LayerMetrics(tokens=self.tokens, sentences=self.sentences, values={
            m.name: self.totals[m.name] / over[m.accumulation] if over[m.accumulation] else nan
            for m in LENS_METRICS})


@dataclass(frozen=True)
class LayerMetrics:
    """How well one layer's hidden states decode to the input tokens: every :data:`LENS_METRICS` value by name.

    Read a value as an attribute (``m.top1``, ``m.nll``) or from ``values``. ``mean_rank`` is 1-based (1 = the input
    token is the head's first choice); ``nll`` is in nats; ``exact`` is the share of sentences (with at least one
    counted token) whose counted tokens are all top-1; ``final_agreement`` is the share of counted tokens whose top-1
    decoded token equals the final layer's (1.0 at the final layer; NaN when it was not measured).
    """

    tokens: int
    sentences: int
    values: Mapping[str, float]

    def __getattr__(self, name: str) -> float:
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return float(values[name])
        raise AttributeError(f"{type(self).__name__} has no {name!r}")

    def to_dict(self) -> dict[str, float]:
        """``tokens``, ``sentences`` and every metric, flat, in declaration order."""
        return {"tokens": self.tokens, "sentences": self.sentences, **self.values}

    @classmethod
    def from_tokens(
        cls, rank: torch.Tensor, nll: torch.Tensor, sentence_ids: torch.Tensor, num_sentences: int
    ) -> LayerMetrics:
        sums = MetricSums()
        sums.add(rank, nll, sentence_ids, num_sentences)
        return sums.result()

    @staticmethod
    def names() -> Iterable[str]:
        """The metrics of one token's rank and NLL (all but the agreement with the final layer)."""
        return tuple(m.name for m in LENS_METRICS if m.accumulation != "final agreement")
