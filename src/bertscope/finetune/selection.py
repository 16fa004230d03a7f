"""Which token vector of which hidden layer a GLUE head reads: pure selection functions on tensors.

Paper 2 (Fukuhata & Kano, "few dimensions are enough") fine-tunes with a head that reads only one token vector, of one
layer, restricted to a few hidden dimensions. This module picks the vectors: :func:`select_tokens` (hidden
``[B, T, H]`` + attention mask + special-token mask -> ``[B, H]``), :func:`select_layers` (several hidden states ->
``[B, n_layers, H]``) and :func:`token_positions` (where ``cls`` / ``index:K`` read, known before the layer is
computed). The option strings are parsed in :mod:`bertscope.core.options`, the head that reads the vectors is
:mod:`bertscope.finetune.head`, freezing is :mod:`bertscope.finetune.freezing`.

Assumptions where the paper is silent (all options, recorded in every result file): ``max-norm`` compares the L2
norms of the full hidden vectors (before dimension selection), per layer; pooling excludes [CLS]/[SEP]/padding unless
``include_special``; when an example has no candidate token left (e.g. empty text) pooling falls back to all its
non-padding tokens; ``index:K`` beyond an example's length is clamped to its last token (negative K counts from the
end, so ``index:-1`` is [SEP]); with several layers each layer picks its own token, and the vectors are concatenated
layer-major. Layers are hidden-state indices (0 = embedding output).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["select_layers", "select_tokens", "token_positions"]



def token_positions(attention_mask: torch.Tensor, method: str, *, index: int | None = None) -> torch.Tensor | None:
    """The position each example's vector is read at, ``[B]``, for ``cls`` and ``index``; None for pooling methods
    (their choice depends on the hidden states). Known before the layer is computed, which lets the top layer read
    be computed at that position only (:func:`bertscope.models.runners.layer_at_positions`)."""
    if method == "cls":
        return torch.zeros(attention_mask.shape[0], dtype=torch.long, device=attention_mask.device)
    if method != "index":
        return None
    if index is None:
        raise ValueError("method 'index' needs index")
    lengths = attention_mask.to(torch.bool).sum(dim=1)
    pos = torch.full_like(lengths, index) if index >= 0 else lengths + index
    return torch.minimum(pos.clamp(min=0), lengths - 1)


def select_tokens(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    special_mask: torch.Tensor | None,
    method: str,
    *,
    index: int | None = None,
    include_special: bool = False,
) -> torch.Tensor:
    """One vector per example from ``hidden`` ``[B, T, H]``; masks are ``[B, T]`` (1 = real token / special token).

    ``cls``: position 0. ``index``: position K (negative from the example's end, clamped to its tokens).
    ``max-norm``: the candidate token with the largest L2 norm. ``mean`` / ``max``: over candidate tokens.
    Candidates are non-padding tokens, minus special tokens unless ``include_special``.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, T, H], got {tuple(hidden.shape)}")
    batch = torch.arange(hidden.shape[0], device=hidden.device)
    real = attention_mask.to(torch.bool)
    positions = token_positions(attention_mask, method, index=index)
    if positions is not None:
        return hidden[batch, positions]
    candidates = real
    if special_mask is not None and not include_special:
        candidates = real & ~special_mask.to(torch.bool)
    empty = ~candidates.any(dim=1, keepdim=True)
    candidates = torch.where(empty, real, candidates)
    if method == "max-norm":
        norms = hidden.float().norm(dim=-1).masked_fill(~candidates, float("-inf"))
        return hidden[batch, norms.argmax(dim=1)]
    if method == "mean":
        weights = candidates.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    if method == "max":
        return hidden.masked_fill(~candidates.unsqueeze(-1), torch.finfo(hidden.dtype).min).amax(dim=1)
    raise ValueError(f"unknown token method {method!r}")


def select_layers(
    hidden_states: Sequence[torch.Tensor],
    layers: Sequence[int],
    attention_mask: torch.Tensor,
    special_mask: torch.Tensor | None,
    method: str,
    *,
    index: int | None = None,
    include_special: bool = False,
) -> torch.Tensor:
    """Selected token vectors of several hidden layers, ``[B, len(layers), H]`` (each layer picks its own token)."""
    return torch.stack(
        [select_tokens(hidden_states[layer], attention_mask, special_mask, method, index=index,
                       include_special=include_special) for layer in layers],
        dim=1,
    )
