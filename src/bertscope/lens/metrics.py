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
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from bertscope.models.families import HeadParts

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "LayerMetrics",
    "MetricSums",
    "decode_tokens",
    "head_token_stats",
    "head_token_stats_top1",
    "head_top1",
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


@dataclass
class MetricSums:
    """Running sums for one (layer, position group); add batches in any order and size, read :meth:`result`."""

    tokens: int = 0
    top1: int = 0
    top5: int = 0
    rank_sum: float = 0.0
    nll_sum: float = 0.0
    sentences: int = 0
    exact: int = 0
    agree_tokens: int = 0
    agree: int = 0

    def add_final_agreement(self, agree: torch.Tensor) -> None:
        """Add [N] bools: this layer's top-1 decoded token equals the final layer's at that counted position."""
        self.agree_tokens += int(agree.numel())
        self.agree += int(agree.sum())

    def add(self, rank: torch.Tensor, nll: torch.Tensor, sentence_ids: torch.Tensor, num_sentences: int) -> None:
        """Add the counted tokens of one batch; ``sentence_ids`` index the batch's sentences."""
        self.tokens += int(rank.numel())
        self.top1 += int((rank == 0).sum())
        self.top5 += int((rank < 5).sum())
        self.rank_sum += float((rank.double() + 1.0).sum())
        self.nll_sum += float(nll.double().sum())
        exact, present = sentence_exact(rank == 0, sentence_ids, num_sentences)
        self.exact += exact
        self.sentences += present

    def result(self) -> LayerMetrics:
        n = self.tokens
        nan = float("nan")
        return LayerMetrics(
            tokens=n,
            sentences=self.sentences,
            top1=self.top1 / n if n else nan,
            top5=self.top5 / n if n else nan,
            mean_rank=self.rank_sum / n if n else nan,
            nll=self.nll_sum / n if n else nan,
            exact=self.exact / self.sentences if self.sentences else nan,
            final_agreement=self.agree / self.agree_tokens if self.agree_tokens else nan,
        )


@dataclass(frozen=True)
class LayerMetrics:
    """How well one layer's hidden states decode to the input tokens (means over counted tokens).

    ``mean_rank`` is 1-based (1 = the input token is the head's first choice); ``nll`` is in nats; ``exact`` is the
    share of sentences (with at least one counted token) whose counted tokens are all top-1; ``final_agreement`` is
    the share of counted tokens whose top-1 decoded token equals the final layer's (1.0 at the final layer; NaN when
    it was not measured).
    """

    tokens: int
    sentences: int
    top1: float
    top5: float
    mean_rank: float
    nll: float
    exact: float
    final_agreement: float = math.nan

    @classmethod
    def from_tokens(
        cls, rank: torch.Tensor, nll: torch.Tensor, sentence_ids: torch.Tensor, num_sentences: int
    ) -> LayerMetrics:
        sums = MetricSums()
        sums.add(rank, nll, sentence_ids, num_sentences)
        return sums.result()

    @staticmethod
    def names() -> Iterable[str]:
        return ("top1", "top5", "mean_rank", "nll", "exact")
