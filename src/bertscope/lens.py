"""The output-layer lens: pure per-layer metric functions on tensors (Kao et al., arXiv 2001.09309).

A masked-LM head (:class:`bertscope.families.HeadParts`) is applied to the hidden state of some layer at the counted
token positions only, and each position is scored against the token that was *input* there. The vocabulary logits
are never materialised for more than ``chunk_size`` positions at once, so memory stays bounded however many tokens
are scored, and no ``topk`` is needed:

* rank (0-based) = number of vocabulary entries whose logit is strictly greater than the input token's logit;
  top-1 = ``rank == 0``, top-5 = ``rank < 5`` (ties are resolved in the input token's favour);
* NLL = ``logsumexp(logits) - logit[input]`` = ``-log_softmax(logits)[input]`` (natural log), in float32 at least.

Aggregation is a sum over tokens (float64) plus per-sentence "all counted tokens ranked first" flags, so the numbers
depend neither on batch size nor on padding. This module knows nothing about models or files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from bertscope.families import HeadParts

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "LayerMetrics",
    "MetricSums",
    "head_token_stats",
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
    if hidden.shape[0] != targets.shape[0]:
        raise ValueError(f"{hidden.shape[0]} hidden states but {targets.shape[0]} targets")
    features = head.features(hidden, is_last_layer=is_last_layer)
    ranks, nlls = [], []
    for start in range(0, features.shape[0], chunk_size):
        logits = head.decode(features[start:start + chunk_size])
        rank, nll = token_stats(logits, targets[start:start + chunk_size], overwrite=True)
        ranks.append(rank)
        nlls.append(nll)
    if not ranks:
        empty = hidden.new_zeros(0)
        return empty.long(), empty.float()
    return torch.cat(ranks), torch.cat(nlls)


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
        )


@dataclass(frozen=True)
class LayerMetrics:
    """How well one layer's hidden states decode to the input tokens (means over counted tokens).

    ``mean_rank`` is 1-based (1 = the input token is the head's first choice); ``nll`` is in nats; ``exact`` is the
    share of sentences (with at least one counted token) whose counted tokens are all top-1.
    """

    tokens: int
    sentences: int
    top1: float
    top5: float
    mean_rank: float
    nll: float
    exact: float

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
