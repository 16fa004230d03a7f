"""The lens pass: hidden states -> the masked-LM head -> per-layer metric sums, the one loop every lens number comes
from (``reconstruct``, and ``compare``'s reconstruction curves).

:func:`score_layers` is the core: given one batch's hidden states, the counted positions and the tokens to score them
against, the head decodes every requested layer at the counted positions only, chunk by chunk, and each position's
rank and NLL (and, for ``final_agreement``, its top-1 against the final layer's) are added to that layer's
:class:`~bertscope.lens.metrics.MetricSums`, per group of positions. :func:`lens_pass` runs it over sentences
tokenised once by :func:`encode_sentences`: sorted by length so batches carry little padding, the bare encoder once
per batch with all hidden states. Every sum is over tokens, so no number depends on batch size, padding or order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bertscope.core.errors import BertscopeError
from bertscope.core.progress import Progress, progress_bar
from bertscope.lens.agreement import agrees_with_final
from bertscope.lens.fitted_head import bert_mask
from bertscope.lens.metrics import (
    DEFAULT_CHUNK_SIZE,
    MetricSums,
    head_token_stats,
    head_token_stats_top1,
    head_top1,
)
from bertscope.models import families
from bertscope.models.families import HeadParts
from bertscope.models.packing import pad_rows

__all__ = ["Encoded", "chunk_size", "encode_sentences", "lens_pass", "score_layers"]


@dataclass
class Encoded:
    """Tokenised sentences, ready for :func:`lens_pass`."""

    ids: list[torch.Tensor]          # the (possibly masked) input ids per sentence
    targets: list[torch.Tensor]      # the original ids (what the head should reconstruct)
    counted: list[torch.Tensor]      # bool: position enters the metrics
    selected: list[torch.Tensor]     # bool: position was selected for masking
    truncated: int


def encode_sentences(tokenizer: Any, sentences: Sequence[str], *, max_length: int = 128,
                     include_special: bool = False, mask_prob: float = 0.0, seed: int = 0) -> Encoded:
    """Tokenise once; mark counted positions; draw per-sentence seeded BERT masks when ``mask_prob`` > 0."""
    enc = tokenizer(list(sentences), truncation=True, max_length=max_length, return_special_tokens_mask=True)
    full = tokenizer(list(sentences), truncation=False, add_special_tokens=True)["input_ids"]
    truncated = sum(len(f) > max_length for f in full)
    mask_id = tokenizer.mask_token_id
    if mask_prob > 0 and mask_id is None:
        raise BertscopeError("--mask-prob needs a tokenizer with a mask token; this one has none")
    vocab = len(tokenizer)
    out = Encoded([], [], [], [], truncated)
    for i, (ids, special) in enumerate(zip(enc["input_ids"], enc["special_tokens_mask"])):
        ids_t = torch.tensor(ids, dtype=torch.long)
        normal = torch.tensor(special, dtype=torch.bool).logical_not()
        counted = torch.ones_like(normal) if include_special else normal
        if mask_prob > 0:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + i)
            masked, selected = bert_mask(ids_t, normal, mask_prob, generator, mask_id, vocab)
        else:
            masked, selected = ids_t, torch.zeros_like(normal)
        out.ids.append(masked)
        out.targets.append(ids_t)
        out.counted.append(counted)
        out.selected.append(selected)
    return out


def _pad_flags(rows: list[torch.Tensor]) -> torch.Tensor:
    return pad_rows(rows, False, dtype=torch.bool)[0]


def chunk_size(vocab: int) -> int:
    """Rows of logits decoded at once: about 4M logits (16 MB in fp32; ~137 rows for BERT's vocabulary), at least 16.

    Blocks under glibc's 32 MB mmap ceiling are recycled by the allocator instead of being page-faulted in anew.
    """
    return max(16, min(4 * DEFAULT_CHUNK_SIZE, (1 << 22) // max(1, vocab)))


def score_layers(
    sums: Mapping[tuple[int, str], MetricSums],
    head: HeadParts,
    hidden_states: Sequence[torch.Tensor],
    counted: torch.Tensor,
    targets: torch.Tensor,
    *,
    layers: Sequence[int],
    groups: Mapping[str, torch.Tensor | None] | None = None,
    chunk: int = DEFAULT_CHUNK_SIZE,
    final_agreement: bool = True,
) -> None:
    """Add one batch to ``sums[layer, group]`` for every layer in ``layers``.

    ``hidden_states`` [B, T, H] per hidden-state index (0..L, the last is the final layer), ``counted`` [B, T] the
    positions scored, ``targets`` [N] the token each counted position is scored against, ``groups`` each group's [N]
    pick of the counted positions (None: all of them; default ``{"all": None}``). With ``final_agreement`` every
    layer's top-1 is compared with the final layer's (decoded too when ``layers`` leaves it out); ``chunk`` rows of
    vocabulary logits exist at once.
    """
    picks: Mapping[str, torch.Tensor | None] = {"all": None} if groups is None else groups
    depth = len(hidden_states) - 1
    batch = counted.shape[0]
    rows = torch.arange(batch, device=counted.device).unsqueeze(1).expand_as(counted)[counted]
    final_top1 = None
    if final_agreement and depth not in layers:  # the final layer's top-1 is the reference of every layer's agreement
        final_top1 = head_top1(head, hidden_states[depth][counted], is_last_layer=True, chunk_size=chunk)
    for layer in sorted(layers, key=lambda x: x != depth):  # the final layer first
        hidden = hidden_states[layer][counted]
        agree = None
        if final_agreement:
            rank, nll, top1 = head_token_stats_top1(head, hidden, targets, is_last_layer=layer == depth,
                                                    chunk_size=chunk)
            if layer == depth:
                final_top1 = top1
            assert final_top1 is not None
            agree = agrees_with_final(top1, final_top1)
        else:
            rank, nll = head_token_stats(head, hidden, targets, is_last_layer=layer == depth, chunk_size=chunk)
        for group, pick in picks.items():
            if pick is None:
                sums[layer, group].add(rank, nll, rows, batch)
                if agree is not None:
                    sums[layer, group].add_final_agreement(agree)
            else:
                sums[layer, group].add(rank[pick], nll[pick], rows[pick], batch)
                if agree is not None:
                    sums[layer, group].add_final_agreement(agree[pick])


def lens_pass(
    model: torch.nn.Module,
    head: HeadParts,
    encoded: Encoded,
    *,
    layers: Sequence[int],
    batch_size: int = 32,
    pad_id: int | None = 0,
    groups: Sequence[str] = ("all",),
    progress: Progress = False,
    on_batch: Callable[[list[int], Sequence[torch.Tensor], torch.Tensor, torch.Tensor], None] | None = None,
) -> dict[tuple[int, str], MetricSums]:
    """Score every layer in ``layers``: one encoder forward per length-sorted batch, head on counted tokens only.

    Returns running sums per (layer, group), each with its agreement with the final layer's top-1; groups are
    ``all``, ``masked`` and ``unmasked``. ``on_batch`` sees each batch's sentence indices, hidden states,
    counted-position mask and attention mask (e.g. to keep examples).
    """
    device = next(model.parameters()).device
    pad_id = 0 if pad_id is None else pad_id
    sums = {(layer, g): MetricSums() for layer in layers for g in groups}
    chunk = chunk_size(head.weight.shape[0])
    order = sorted(range(len(encoded.ids)), key=lambda i: (-encoded.ids[i].shape[0], i))
    encoder = families.base_encoder(model)
    bar = progress_bar(progress=progress, total=len(order), desc="reconstructing", unit="sent")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            ids, attention = pad_rows([encoded.ids[i] for i in batch], pad_id)
            ids, attention = ids.to(device), attention.to(device)
            counted = _pad_flags([encoded.counted[i] for i in batch]).to(device) & attention.bool()
            targets = pad_rows([encoded.targets[i] for i in batch], pad_id)[0].to(device)[counted]
            selected = _pad_flags([encoded.selected[i] for i in batch]).to(device)[counted]
            hidden_states = encoder(input_ids=ids, attention_mask=attention, output_hidden_states=True).hidden_states
            picks = {"all": None, "masked": selected, "unmasked": ~selected}
            score_layers(sums, head, hidden_states, counted, targets, layers=layers,
                         groups={g: picks[g] for g in groups}, chunk=chunk)
            if on_batch is not None:
                on_batch(batch, hidden_states, counted, attention)
            bar.update(len(batch))
    bar.close()
    return sums
