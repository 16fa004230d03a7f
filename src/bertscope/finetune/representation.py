"""The training loop's representation step: a batch -> the selected token vector of each layer read
``[B, n_layers, H]``.

The step is swappable: :func:`bertscope.finetune.train.train_loop` takes any :class:`Representation`;
:class:`EncoderRepresentation` is the live one, and the cached fast path (:mod:`bertscope.finetune.features`) indexes
pre-computed vectors with ``batch.example_index``. When the encoder is frozen entirely it runs in eval mode under
``torch.no_grad`` (a fixed feature extractor), so cached vectors equal live ones.

Speed: the encoder runs only up to the highest layer read (``runners.truncated``); when the head reads one known
position (``cls``/``index:K``) the top layer read is computed at that position only
(``runners.layer_at_positions``: keys and values from every token, the rest for one), which is exact and saves
most of one layer. ``fast_top=False`` turns that off."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from bertscope.finetune.batching import Batch
from bertscope.finetune.selection import select_layers, token_positions
from bertscope.models import families, runners

__all__ = ["EncoderRepresentation", "Representation"]


class Representation(Protocol):
    """The swappable representation step: a batch -> selected token vectors ``[B, n_layers, H]``."""

    def __call__(self, batch: Any) -> torch.Tensor: ...  # a batch of the collate function it is paired with

    def train(self, mode: bool = True) -> Any: ...


class EncoderRepresentation:
    """Run the encoder up to the highest layer read (layers above are not computed) and select token vectors."""

    def __init__(self, model: nn.Module, layers: Sequence[int], token: tuple[str, int | None], *,
                 include_special: bool = False, frozen: bool = False, forward: nn.Module | None = None,
                 fast_top: bool = True) -> None:
        self.model = model
        self.forward_module = forward if forward is not None else model  # a DDP wrapper under torchrun
        self.layers = tuple(layers)
        self.method, self.index = token
        self.include_special = include_special
        self.frozen = frozen
        self.depth = max(self.layers)
        self.token_types = families.uses_token_type_ids(model)
        # cls / index:K read the top layer at one known position: compute that layer there only (same numbers).
        self.fast_top = (fast_top and self.forward_module is model and self.depth >= 1
                         and self.method in ("cls", "index"))

    def train(self, mode: bool = True) -> EncoderRepresentation:
        self.forward_module.train(mode and not self.frozen)  # a frozen encoder is a fixed feature extractor
        return self

    def _states(self, kwargs: dict[str, Any], depth: int, forward: nn.Module | None = None) -> tuple[torch.Tensor, ...]:
        """Hidden states 0..depth; depth 0 = the embedding output alone."""
        if depth == 0:
            return (runners.embed(self.model, kwargs["input_ids"], kwargs["attention_mask"],
                                   kwargs.get("token_type_ids")),)
        with runners.truncated(self.model, depth):
            out = (forward or self.model)(**kwargs, output_hidden_states=True, return_dict=True)
        return tuple(out.hidden_states)

    def __call__(self, batch: Batch) -> torch.Tensor:
        kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if self.token_types and batch.token_type_ids is not None:
            kwargs["token_type_ids"] = batch.token_type_ids
        grad = contextlib.nullcontext() if not self.frozen and torch.is_grad_enabled() else torch.no_grad()
        if self.fast_top:
            with grad:
                states = self._states(kwargs, self.depth - 1)
                positions = token_positions(batch.attention_mask, self.method, index=self.index)
                top = runners.layer_at_positions(self.model, self.depth - 1, states[-1], batch.attention_mask,
                                                  positions)  # type: ignore[arg-type]
            if top is not None:
                rows = torch.arange(len(batch), device=top.device)
                return torch.stack([top if layer == self.depth else states[layer][rows, positions]
                                    for layer in self.layers], dim=1)
            self.fast_top = False  # this family has no position-wise layer: run whole layers from now on
        with grad:
            states = self._states(kwargs, self.depth, self.forward_module)
        return select_layers(states, self.layers, batch.attention_mask, batch.special_mask, self.method,
                             index=self.index, include_special=self.include_special)

