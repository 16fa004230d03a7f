"""How much two models agree at the same token positions: pure metric functions on tensors.

Three numbers per counted token position, averaged over all of them (by :class:`AgreementSums`):

* top-1 agreement: the two models' masked-LM heads predict the same most likely token;
* KL(original || variant) of the two output distributions (natural log, nats);
* cosine similarity of the two final hidden states.

Used by ``compare`` (:mod:`bertscope.surgery.compare`) and ``layer-scan`` (:mod:`bertscope.surgery.layer_scan`).

Within one model, the lens (``reconstruct``) also reports each layer's agreement with the *final* layer: the share of
counted positions where layer l's top-1 decoded token equals the last layer's (:func:`final_agreement`; 1.0 at the last
layer), the metric of the closest published lens study on BERT (Din et al. 2024, "Jump to Conclusions"). Unlike input
reconstruction it asks how early a layer already decodes to what the model finally predicts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bertscope.models.families import HeadParts

__all__ = [
    "CHUNK",
    "AgreementMetrics",
    "AgreementSums",
    "agreement_stats",
    "agreement_with_variants",
    "agrees_with_final",
    "cosine_similarity",
    "final_agreement",
    "kl_divergence",
    "kl_from_log_probs",
    "top1_agreement",
]

CHUNK = 512  # rows of vocabulary logits alive at once


def top1_agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """[N] bool: both rows of [N, V] logits have the same arg-max."""
    return logits_a.argmax(dim=-1) == logits_b.argmax(dim=-1)


def agrees_with_final(layer_top1: torch.Tensor, final_top1: torch.Tensor) -> torch.Tensor:
    """[N] bool: a layer's top-1 decoded token id equals the final layer's at the same N positions."""
    if layer_top1.shape != final_top1.shape:
        raise ValueError(f"{tuple(layer_top1.shape)} vs {tuple(final_top1.shape)} positions")
    return layer_top1 == final_top1


def final_agreement(top1_by_layer: torch.Tensor) -> torch.Tensor:
    """[L+1] float64: per layer, the share of the N positions whose top-1 id equals the last row's.

    ``top1_by_layer`` [L+1, N] holds the top-1 decoded token id of every layer (rows in layer order, the final layer
    last) at the same N counted positions; the last entry is 1.0 by definition, NaN everywhere when N = 0.
    """
    if top1_by_layer.dim() != 2 or top1_by_layer.shape[0] == 0:
        raise ValueError(f"expected [layers, positions] token ids, got shape {tuple(top1_by_layer.shape)}")
    if top1_by_layer.shape[1] == 0:
        return torch.full((top1_by_layer.shape[0],), math.nan, dtype=torch.float64)
    return (top1_by_layer == top1_by_layer[-1:]).double().mean(dim=1)


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """[N] KL(P || Q) in nats between the softmax distributions of two [N, V] logit rows (float32 or wider)."""
    return kl_from_log_probs(torch.log_softmax(logits_p.float(), dim=-1), torch.log_softmax(logits_q.float(), dim=-1))


def kl_from_log_probs(logp: torch.Tensor, logq: torch.Tensor, p: torch.Tensor | None = None) -> torch.Tensor:
    """[N] KL(P || Q) from [N, V] log-probabilities; pass ``p = logp.exp()`` when it is reused across many Q."""
    return ((logp.exp() if p is None else p) * (logp - logq)).sum(dim=-1).clamp_min(0.0)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N] cosine between rows of two [N, H] hidden-state matrices."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-12)


def agreement_stats(
    head_a: HeadParts, hidden_a: torch.Tensor, head_b: HeadParts, hidden_b: torch.Tensor, *, chunk: int = CHUNK
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top-1 agreement [N], KL [N], cosine [N]) of two models' *last* hidden states at the same N positions.

    Each head decodes its own model's hidden state (they may be the same head); vocabulary logits exist for at most
    ``chunk`` rows at a time.
    """
    if hidden_a.shape[0] != hidden_b.shape[0]:
        raise ValueError(f"{hidden_a.shape[0]} vs {hidden_b.shape[0]} positions")
    fa = head_a.features(hidden_a, is_last_layer=True)
    fb = head_b.features(hidden_b, is_last_layer=True)
    agree, kl = [], []
    for s in range(0, fa.shape[0], chunk):
        la, lb = head_a.decode(fa[s:s + chunk]), head_b.decode(fb[s:s + chunk])
        agree.append(top1_agreement(la, lb))
        kl.append(kl_divergence(la, lb))
    if not agree:
        empty = hidden_a.new_zeros(0)
        return empty.bool(), empty.float(), empty.float()
    return torch.cat(agree), torch.cat(kl), cosine_similarity(hidden_a, hidden_b)


def agreement_with_variants(
    head: HeadParts, final: torch.Tensor, variant_finals: Sequence[torch.Tensor | None], targets: torch.Tensor, *,
    chunk: int = CHUNK,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None], list[torch.Tensor], torch.Tensor]:
    """Agreement of many variants with one original, all decoded by ``head``, at the same N counted positions.

    ``final`` [N, H] is the original's last hidden state, ``variant_finals`` each variant's (None: skipped),
    ``targets`` [N] the input tokens. Returns (per variant: (top-1 agreement [N], KL(original || variant) [N],
    cosine [N]) or None; per variant [N] variant-top-1-is-input flags; the original's [N] top-1-is-input flags).
    Vocabulary logits exist for at most ``chunk`` rows of one model at a time; the original's log-probabilities of
    a chunk are computed once and shared by every variant (``layer-scan``).
    """
    feats = head.features(final, is_last_layer=True)
    v_feats = [None if v is None else head.features(v, is_last_layer=True) for v in variant_finals]
    parts: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in variant_finals]
    original_top = []
    for s in range(0, feats.shape[0], chunk):
        logits = head.decode(feats[s:s + chunk])
        top = logits.argmax(-1)
        logp = torch.log_softmax(logits.float(), dim=-1)
        p = logp.exp()
        original_top.append(top)
        for k, vf in enumerate(v_feats):
            if vf is not None:
                v_logits = head.decode(vf[s:s + chunk])
                v_top = v_logits.argmax(-1)
                kl = kl_from_log_probs(logp, torch.log_softmax(v_logits.float(), dim=-1), p)
                parts[k].append((top == v_top, kl, v_top))
    original_hits = torch.cat(original_top) == targets if original_top else targets.bool()
    stats: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = []
    hits: list[torch.Tensor] = []
    for k, v_final in enumerate(variant_finals):
        if v_final is None:
            stats.append(None)
            hits.append(targets.new_zeros(0).bool())
        elif parts[k]:
            agree, kl, v_top = (torch.cat(x) for x in zip(*parts[k]))
            stats.append((agree, kl, cosine_similarity(final, v_final)))
            hits.append(v_top == targets)
        else:
            z = final.new_zeros(0)
            stats.append((z.bool(), z, z))
            hits.append(z.bool())
    return stats, hits, original_hits


@dataclass(frozen=True)
class AgreementMetrics:
    """Means over ``positions`` counted token positions."""

    positions: int
    top1_agreement: float
    mean_kl: float
    mean_cosine: float

    def to_dict(self) -> dict[str, Any]:
        return {"positions": self.positions, "top1_agreement": self.top1_agreement, "mean_kl": self.mean_kl,
                "mean_cosine": self.mean_cosine}


@dataclass
class AgreementSums:
    """Running sums (float64) so the means depend neither on batch size nor on padding."""

    positions: int = 0
    agree: int = 0
    kl: float = 0.0
    cosine: float = 0.0

    def add(self, agree: torch.Tensor, kl: torch.Tensor, cosine: torch.Tensor) -> None:
        self.positions += int(agree.numel())
        self.agree += int(agree.sum())
        self.kl += float(kl.double().sum())
        self.cosine += float(cosine.double().sum())

    def result(self) -> AgreementMetrics:
        n = self.positions
        if n == 0:
            return AgreementMetrics(0, math.nan, math.nan, math.nan)
        return AgreementMetrics(n, self.agree / n, self.kl / n, self.cosine / n)
