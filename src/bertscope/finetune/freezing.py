"""Freezing: which encoder parameters train, and the list the optimizer gets.

:func:`apply_freezing` sets ``requires_grad=False`` on the part ``--freeze`` names (parsed by
:func:`bertscope.core.options.parse_freeze`; ``layers:LIST`` counts hidden-state indices, 0 = the embeddings, l =
transformer layer l) and on the parts the head can never reach; the optimizer then never sees them
(:func:`trainable_parameters`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_freeze
from bertscope.models import families

__all__ = ["apply_freezing", "trainable_parameters"]


def apply_freezing(model: nn.Module, spec: str, *, read_layers: Iterable[int] = ()) -> dict[str, Any]:
    """Set ``requires_grad=False`` on the frozen part of ``model`` and on parts the head can never reach.

    Parts never reached: transformer layers above the highest layer read (they are not computed) and the backbone's
    own pooler (a pooler, when asked for, is owned by the head). Returns a summary for the result file.
    """
    depth = families.num_layers(model)
    policy = parse_freeze(spec, depth)
    kind, chosen = policy.kind, policy.hidden_states
    shared = families.family_for(model).shared_layers
    if kind == "layers" and shared and any(i >= 1 for i in chosen) and not set(range(1, depth + 1)) <= set(chosen):
        raise BertscopeError(
            f"{families.family_for(model).name} shares one set of layer weights across depths; "
            f"freeze all of layers:1-{depth} or none of them"
        )
    for param in model.parameters():
        param.requires_grad_(True)
    frozen: list[str] = []

    def freeze(module: nn.Module, label: str) -> None:
        for param in module.parameters():
            param.requires_grad_(False)
        frozen.append(label)

    layers = families.get_layers(model)
    if kind == "encoder":
        freeze(model, "encoder")
    elif kind == "embeddings":
        freeze(families.embeddings_module(model), "embeddings")
    elif kind == "layers":
        if 0 in chosen:
            freeze(families.embeddings_module(model), "embeddings")
        blocks = [i for i in chosen if i >= 1]  # hidden state i is the output of layers[i - 1]
        for i in blocks:
            freeze(layers[0] if shared else layers[i - 1], f"layer {i}")
        if shared and blocks:
            freeze(layers, "shared layers")
    unreachable: list[str] = []
    top = max(read_layers, default=depth)
    if not shared:
        for i in range(top + 1, depth + 1):
            for param in layers[i - 1].parameters():
                param.requires_grad_(False)
            unreachable.append(f"layer {i}")
    parts = families.pooler_parts(model)
    if parts is not None:
        for module in parts:
            for param in module.parameters():
                param.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"policy": spec, "frozen": frozen, "not_computed": unreachable, "trainable_encoder_params": trainable,
            "encoder_params": total, "encoder_fully_frozen": trainable == 0}


def trainable_parameters(*modules: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimizer gets: those with ``requires_grad``, each once."""
    seen: set[int] = set()
    out: list[nn.Parameter] = []
    for module in modules:
        for param in module.parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                out.append(param)
    return out
