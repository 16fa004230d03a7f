"""Encoding and batching for the training loop: tokenise a split once (no padding), pad a few examples to their
longest (dynamic padding), and the seeded, length-grouped batch order.

The batch order depends only on ``seed``, the epoch and the example lengths (:func:`length_grouped_batches` draws
from its own ``torch.Generator``), so a resumed run and the cached fast path for frozen encoders see the same
batches as a live run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bertscope.data import glue
from bertscope.models.packing import pad_rows

__all__ = ["Batch", "EncodedSplit", "collate", "encode_split", "length_grouped_batches"]


@dataclass(frozen=True)
class EncodedSplit:
    """A tokenised split: token ids per example (unpadded), special-token masks, labels and lengths."""

    task: str
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    special_masks: list[list[int]]
    labels: list[int | float | None]
    idx: list[int]
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def encode_split(tokenizer: Any, split: glue.GlueSplit, max_length: int) -> EncodedSplit:
    """Tokenise every example once (truncating pairs longest-first to ``max_length``), without padding."""
    columns = list(zip(*(ex.texts for ex in split.examples)))
    encoded = tokenizer(*columns[:2], truncation=True, max_length=max_length, padding=False,
                        return_special_tokens_mask=True, return_token_type_ids=True)
    types = encoded.get("token_type_ids")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return EncodedSplit(task=split.task, input_ids=encoded["input_ids"], token_type_ids=types,
                        special_masks=encoded["special_tokens_mask"], labels=split.labels,
                        idx=[ex.idx for ex in split.examples], pad_id=int(pad))


@dataclass
class Batch:
    """Padded tensors of a few examples; ``example_index`` are their positions in the split."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    special_mask: torch.Tensor
    labels: torch.Tensor | None
    example_index: torch.Tensor

    def __len__(self) -> int:
        return int(self.example_index.shape[0])


def collate(data: EncodedSplit, indices: Sequence[int], *, regression: bool,
            device: torch.device | str = "cpu") -> Batch:
    """Pad ``indices``' examples to the longest of them (dynamic padding)."""
    ids, mask = pad_rows([data.input_ids[i] for i in indices], data.pad_id)
    special, _ = pad_rows([data.special_masks[i] for i in indices], 0)
    types = None if data.token_type_ids is None else pad_rows([data.token_type_ids[i] for i in indices], 0)[0]
    labels = None
    if all(data.labels[i] is not None for i in indices):
        labels = torch.tensor([data.labels[i] for i in indices], dtype=torch.float32 if regression else torch.long)
    to = torch.device(device)
    return Batch(input_ids=ids.to(to), attention_mask=mask.to(to), token_type_ids=None if types is None else types.to(to),
                 special_mask=special.to(to), labels=None if labels is None else labels.to(to),
                 example_index=torch.tensor(list(indices), dtype=torch.long))


def length_grouped_batches(lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int = 0,
                           shuffle: bool = True, group_by_length: bool = True,
                           group_batches: int = 50) -> list[list[int]]:
    """Batches of example positions; the order depends only on ``seed``, ``epoch`` and ``lengths``.

    Training (``shuffle``): a seeded permutation is cut into mega-batches of ``group_batches`` batches, each sorted
    by length (longest first) and cut into batches, whose order is then shuffled again, so batches hold similar
    lengths (little padding) yet stay random. Evaluation (no shuffle): sorted by length, longest first.
    """
    n = len(lengths)
    if not shuffle:
        order = sorted(range(n), key=lambda i: -lengths[i]) if group_by_length else list(range(n))
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    order = torch.randperm(n, generator=generator).tolist()
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    mega = batch_size * max(1, group_batches)
    batches: list[list[int]] = []
    for start in range(0, n, mega):
        chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]

