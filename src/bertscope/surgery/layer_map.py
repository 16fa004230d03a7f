"""Layer maps: build a new layer stack from a list of source layers, as the family table allows.

A *layer map* lists, for each layer of a new stack, the index of the source layer it copies. Copying a layer is not
only copying its weights: some families keep per-layer state (``layer_idx`` fields, ModernBERT's ``layer_types`` and
each layer's attention type / sliding window, ModernBERT's missing pre-attention norm in layer 0, DistilBERT's
``n_layers`` on the transformer, ALBERT's one shared layer). The family table's entries
(:mod:`bertscope.models.families`) say which. :func:`bertscope.models.runners.run_layers` computes the model a map
would build without building it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, TypeVar

from torch import nn

from bertscope.core.errors import BertscopeError
from bertscope.models.families import family_for, get_layers, num_layers, set_depth, set_layers
from bertscope.models.runners import shared_schedule

__all__ = ["apply_layer_map", "check_layer_map"]

ModelT = TypeVar("ModelT", bound=nn.Module)


def check_layer_map(config_or_model: Any, layer_map: Sequence[int]) -> None:
    """Raise a one-line :class:`BertscopeError` when ``layer_map`` cannot be built for this family.

    Rejects an empty map, indices outside ``0..L-1``, ALBERT maps that are not a repeat count of its shared layer
    groups, and ModernBERT maps that move its layer 0 (the only layer without a pre-attention LayerNorm, a structural
    difference a saved checkpoint cannot express at another position).
    """
    config = getattr(config_or_model, "config", config_or_model)
    family = family_for(config)
    depth = num_layers(config)
    if len(layer_map) == 0:
        raise BertscopeError("the layer map is empty: a model needs at least one layer")
    bad = [i for i in layer_map if not 0 <= int(i) < depth]
    if bad:
        raise BertscopeError(f"layer index {bad[0]} out of range: this model has layers 0..{depth - 1}")
    if family.shared_layers:
        groups = int(getattr(config, family.groups_key, 1))
        wanted = shared_schedule(len(layer_map), groups)
        got = [shared_schedule(depth, groups)[i] for i in layer_map]
        if got != wanted:
            raise BertscopeError(
                f"{family.name} applies {groups} shared layer group(s) on a fixed schedule; a {len(layer_map)}-layer "
                f"stack must use groups {wanted}, this map gives {got} (only the depth can change)"
            )
    if family.pinned_first_layer is not None:
        moved = [pos for pos, src in enumerate(layer_map) if (pos == 0) != (src == 0)]
        if moved:
            raise BertscopeError(
                f"{family.pinned_first_layer}, so it must stay first and cannot be copied or "
                f"removed (map position {moved[0]} breaks this); edit layers 1..{depth - 1} only"
            )


_POSITION_FIELD = "layer_idx"  # transformers' record of a layer's depth, inside the layer's modules


def _set_layer_positions(layer: nn.Module, position: int) -> None:
    """Point every ``layer_idx`` field inside a copied layer at its new depth (used by caches and masks)."""
    for module in layer.modules():
        if hasattr(module, _POSITION_FIELD) and not isinstance(module, nn.ModuleList):
            setattr(module, _POSITION_FIELD, position)


def apply_layer_map(model: ModelT, layer_map: Sequence[int]) -> ModelT:
    """Rebuild ``model``'s layer stack in place from ``layer_map``; every new layer is a real deep copy.

    The config's depth and per-layer lists follow the map, so ``save_pretrained`` writes a checkpoint that plain
    ``transformers`` reloads into the same network. For ALBERT only the depth changes (one shared layer).
    """
    layer_map = [int(i) for i in layer_map]
    check_layer_map(model, layer_map)
    family = family_for(model)
    config: Any = getattr(model, "config", model)
    if family.shared_layers:
        set_depth(model, len(layer_map))
        return model
    old = list(get_layers(model))
    new_layers = []
    for position, source in enumerate(layer_map):
        layer = copy.deepcopy(old[source])
        _set_layer_positions(layer, position)
        new_layers.append(layer)
    if family.layer_types_key is not None:
        old_types = list(getattr(config, family.layer_types_key))
        setattr(config, family.layer_types_key, [old_types[s] for s in layer_map])
    set_layers(model, nn.ModuleList(new_layers))
    return model
