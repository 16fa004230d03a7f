"""Several short sequences in one row: padding-free batches for layers that never read positions.

A padded batch spends as much compute on padding as the longest sequence forces on every row. Where a family's
positions enter only at the embeddings (:func:`can_pack`), the embedded sequences can instead be
laid side by side in rows as wide as the longest one (first-fit decreasing) and run with attention confined to each
sequence (``segments``). Every real token then sees exactly what it sees in the padded batch, so the outputs agree up
to float rounding, and the rows hold far fewer padding positions when lengths differ.

Pure tensor functions: :func:`plan_rows` decides the layout, :func:`pack` and :func:`unpack` move hidden states.
:func:`pad_rows` is the ordinary alternative every padded batch is built with: rows of different lengths padded to
the longest. :func:`can_pack` reads the family table's ``packable`` flag; :func:`packed_attention_mask` is the mask
:func:`bertscope.models.runners.run_layers` gives the layers of packed rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from bertscope.models.families import attention_in_use, family_for

__all__ = ["PackedLayout", "can_pack", "layout_for", "pack", "packed_attention_mask", "pad_rows", "plan_rows",
           "unpack"]


def pad_rows(
    rows: Sequence[torch.Tensor | Sequence[int] | Sequence[bool]],
    value: float | bool,
    *,
    dtype: torch.dtype = torch.long,
    side: Literal["right", "left"] = "right",
) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D rows of different lengths as one ``[len(rows), longest]`` tensor of ``dtype``, filled with ``value``.

    Returns ``(padded, mask)``; ``mask`` is the usual long 0/1 attention mask (1 on the rows' own entries). Rows sit
    at the start of their line (``side="right"``: padding after them) or at its end (``"left"``). On the CPU: the
    caller moves the batch.
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', not {side!r}")
    tensors = [torch.as_tensor(row, dtype=dtype) for row in rows]
    width = max((t.shape[0] for t in tensors), default=0)
    padded = torch.full((len(tensors), width), value, dtype=dtype)
    mask = torch.zeros((len(tensors), width), dtype=torch.long)
    for i, row in enumerate(tensors):
        span = slice(0, row.shape[0]) if side == "right" else slice(width - row.shape[0], width)
        padded[i, span] = row
        mask[i, span] = 1
    return padded, mask


def plan_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Sequence indices per row, first-fit decreasing: longest first, each into the first row with room."""
    if any(n > width for n in lengths):
        raise ValueError(f"a sequence of {max(lengths)} tokens does not fit rows of {width}")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            room.append(width - lengths[i])
        else:
            rows[slot].append(i)
            room[slot] -= lengths[i]
    return rows


@dataclass(frozen=True)
class PackedLayout:
    """Where each real token of a padded ``[B, T]`` batch sits in ``[rows, width]`` packed rows.

    ``index[n]`` is the flat packed position of the n-th real token of the padded batch (row-major order, as
    ``hidden[mask.bool()]`` lists them). ``segments`` holds sequence ids ``1..B`` on real tokens and a distinct
    negative id on every padding position, so padding attends only to itself and never produces an empty row.
    """

    rows: int
    width: int
    index: torch.Tensor
    segments: torch.Tensor

    @property
    def positions(self) -> int:
        return self.rows * self.width


def layout_for(attention_mask: torch.Tensor) -> PackedLayout:
    """The packed layout of a padded batch's real tokens, rows as wide as its longest sequence."""
    real = attention_mask.bool()
    lengths = real.sum(dim=1).tolist()
    width = max(lengths, default=0)
    rows = plan_rows(lengths, width) if width else []
    starts = torch.zeros(len(lengths), dtype=torch.long)
    segments = -torch.arange(1, len(rows) * width + 1, dtype=torch.long).view(len(rows), width)
    for r, members in enumerate(rows):
        offset = 0
        for i in members:
            starts[i] = r * width + offset
            segments[r, offset:offset + lengths[i]] = i + 1
            offset += lengths[i]
    order_in_sequence = real.long().cumsum(dim=1) - 1  # 0, 1, 2... over each sequence's real tokens
    index = (starts.unsqueeze(1) + order_in_sequence)[real]
    device = attention_mask.device
    return PackedLayout(len(rows), width, index.to(device), segments.to(device))


def pack(hidden: torch.Tensor, attention_mask: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """``[B, T, H]`` padded hidden states -> ``[rows, width, H]`` packed rows (padding positions are zero)."""
    flat = hidden.new_zeros(layout.positions, hidden.shape[-1])
    flat[layout.index] = hidden[attention_mask.bool()]
    return flat.view(layout.rows, layout.width, hidden.shape[-1])


def unpack(packed: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """``[rows, width, H]`` packed rows -> ``[n_real, H]``, the real tokens in ``hidden[mask.bool()]`` order."""
    return packed.reshape(layout.positions, packed.shape[-1])[layout.index]


def can_pack(model: nn.Module) -> bool:
    """Whether several sequences may share one row of :func:`bertscope.models.runners.run_layers` (``segments``):
    true where positions enter only at the embeddings, so a layer sees nothing but hidden states and which positions
    may attend to which."""
    return family_for(model).packable


def packed_attention_mask(config: Any, hidden: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """The 4-D mask of packed rows, in the form the configured attention implementation expects."""
    same = segments[:, None, :, None] == segments[:, None, None, :]
    implementation = attention_in_use(config)
    if implementation == "sdpa":
        return same
    if implementation == "eager":
        return torch.zeros(same.shape, dtype=hidden.dtype, device=hidden.device).masked_fill(
            ~same, torch.finfo(hidden.dtype).min)
    from transformers.masking_utils import create_bidirectional_mask, packed_sequence_mask_function

    mask: torch.Tensor = create_bidirectional_mask(
        config=config, inputs_embeds=hidden, attention_mask=torch.ones_like(segments),
        and_mask_function=packed_sequence_mask_function(segments))
    return mask
