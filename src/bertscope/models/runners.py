"""How a family's layers are run outside the model's own forward: on any hidden state, any list of layers.

The family table (:mod:`bertscope.models.families`) says *where* a model keeps its parts; this module runs them:

* :func:`embed` gives ``hidden_states[0]`` as the family's own forward computes it;
* :func:`run_layers` applies any list of the stack's layers to a hidden state (the model's own hidden states for
  ``range(L)``; the model a layer map would build for another list, without building it; packed rows where the family
  allows, :mod:`bertscope.models.packing`). Most families call ``layer(hidden, 4-D mask)`` (:func:`_run_plain`);
  a family whose layers need more (DeBERTa-v2's relative positions, ModernBERT's rotary embeddings and sliding-window
  masks) names its own runner in its table entry (``Family.runner``, a key of :data:`RUNNERS`);
* :func:`truncated` runs the model with only its first layers (the layers above are not computed at all);
* :func:`layer_at_positions` runs one post-norm BERT layer at one position per example (a head that reads one token).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, overload

import torch
from torch import nn

from bertscope.core.errors import BertscopeError
from bertscope.models.families import base_encoder, family_for, get_layers, num_layers, set_depth, set_layers
from bertscope.models.packing import packed_attention_mask

__all__ = ["RUNNERS", "LayerRunner", "embed", "layer_at_positions", "run_layers", "shared_schedule", "truncated"]

#: ``runner(model, hidden, attention_mask, layer_indices, start) -> [output of each layer run]``: apply the stack's
#: layers ``layer_indices`` in order; ``hidden`` is the input of stack position ``start``; ``attention_mask`` is the
#: 2-D 0/1 padding mask, or the 4-D mask of packed rows.
LayerRunner = Callable[[nn.Module, torch.Tensor, torch.Tensor | None, Sequence[int], int], list[torch.Tensor]]


def _config(model: nn.Module) -> Any:
    """A model's config: an untyped bag of family-specific keys (``Any``)."""
    return getattr(model, "config", model)


def shared_schedule(depth: int, groups: int) -> list[int]:
    """Which shared layer group ALBERT applies at each of ``depth`` positions (its own schedule, in transformers)."""
    return [int(i / (depth / groups)) for i in range(depth)]


def _run_plain(model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor | None,
               layer_indices: Sequence[int], start: int) -> list[torch.Tensor]:
    """``layer(hidden, 4-D mask)`` (BERT, RoBERTa, ELECTRA, DistilBERT; ALBERT's shared groups on its schedule)."""
    from transformers.masking_utils import create_bidirectional_mask

    config = _config(model)
    family = family_for(model)
    mask = create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=attention_mask)
    layers = get_layers(model)
    if family.shared_layers:
        schedule = shared_schedule(num_layers(model), int(getattr(config, family.groups_key)))
        layer_indices = [schedule[i] for i in layer_indices]
    outputs = []
    for i in layer_indices:
        hidden = layers[i](hidden, mask)
        outputs.append(hidden)
    return outputs


def _run_deberta_v2(model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor | None,
                    layer_indices: Sequence[int], start: int) -> list[torch.Tensor]:
    """Relative positions and embeddings built as DeBERTa's encoder builds them; its conv follows the first layer."""
    encoder: Any = base_encoder(model).get_submodule("encoder")  # DebertaV2Encoder: its helpers are its own API
    mask4d = encoder.get_attention_mask(attention_mask)
    rel_pos = encoder.get_rel_pos(hidden)
    rel_emb = encoder.get_rel_embedding()
    layers = get_layers(model)
    outputs = []
    for position, i in enumerate(layer_indices, start=start):
        out, _ = layers[i](hidden, mask4d, relative_pos=rel_pos, rel_embeddings=rel_emb)
        if position == 0 and encoder.conv is not None:  # DeBERTa's conv follows whichever layer is first
            out = encoder.conv(hidden, out, attention_mask)
        hidden = out
        outputs.append(hidden)
    return outputs


def _run_modernbert(model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor | None,
                    layer_indices: Sequence[int], start: int) -> list[torch.Tensor]:
    """Full and sliding-window masks and rotary embeddings per attention type, as ModernBERT's forward builds them."""
    from transformers.masking_utils import create_bidirectional_mask, create_bidirectional_sliding_window_mask

    config = _config(model)
    kwargs = {"config": config, "inputs_embeds": hidden, "attention_mask": attention_mask}
    masks = {"full_attention": create_bidirectional_mask(**kwargs),
             "sliding_attention": create_bidirectional_sliding_window_mask(**kwargs)}
    position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    rotary_emb = base_encoder(model).get_submodule("rotary_emb")
    rotary = {t: rotary_emb(hidden, position_ids, t) for t in set(config.layer_types)}
    layers = get_layers(model)
    outputs = []
    for i in layer_indices:
        kind: Any = getattr(layers[i], "attention_type", None)  # ModernBertEncoderLayer's own record
        hidden = layers[i](hidden, attention_mask=masks[kind], position_embeddings=rotary[kind])
        outputs.append(hidden)
    return outputs


#: The layer runners a family entry may name (``Family.runner``).
RUNNERS: dict[str, LayerRunner] = {"plain": _run_plain, "deberta-v2": _run_deberta_v2, "modernbert": _run_modernbert}


def embed(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The input of the first layer (``hidden_states[0]``), exactly as the family's own forward computes it."""
    family = family_for(model)
    base = base_encoder(model)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    given = {"token_type_ids": token_type_ids, "mask": attention_mask}
    kwargs = {name: given[name] for name in family.embeddings_inputs}
    hidden: torch.Tensor = base.get_submodule(family.embeddings_path)(input_ids=input_ids, **kwargs)
    for path in family.embedding_maps:
        projection = _optional_submodule(base, path)
        if projection is not None:  # ELECTRA has its projection only when embedding and hidden sizes differ
            hidden = projection(hidden)
    return hidden


def _optional_submodule(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


@overload
def run_layers(model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor | None,
               layer_indices: Sequence[int], *, start: int = ..., all_states: Literal[False] = ...,
               segments: torch.Tensor | None = ...) -> torch.Tensor: ...
@overload
def run_layers(model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor | None,
               layer_indices: Sequence[int], *, start: int = ..., all_states: Literal[True],
               segments: torch.Tensor | None = ...) -> list[torch.Tensor]: ...
def run_layers(
    model: nn.Module,
    hidden: torch.Tensor,
    attention_mask: torch.Tensor | None,
    layer_indices: Sequence[int],
    *,
    start: int = 0,
    all_states: bool = False,
    segments: torch.Tensor | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """Apply ``model``'s layers ``layer_indices`` in order to ``hidden`` (the input of stack position ``start``).

    ``attention_mask`` is the usual 2-D 0/1 padding mask; each family's 4-D masks, relative positions or rotary
    embeddings are built here as its own forward builds them (the entry's ``runner``). The result is the raw output
    of the last layer run (before any final norm, see :func:`bertscope.models.families.finalize_hidden`); with
    ``all_states`` the list of every layer's output. With ``layer_indices = range(L)`` and ``start = 0`` this
    reproduces the model's own hidden states; with another list it computes, without building it, the model that
    :func:`bertscope.surgery.layer_map.apply_layer_map` would build.

    ``segments`` [B, T] runs packed rows instead (families where :func:`bertscope.models.packing.can_pack`;
    ``attention_mask`` is then ignored): a position attends only to positions with the same segment id.
    """
    family = family_for(model)
    if segments is not None:
        if not family.packable:
            raise ValueError(f"family {family.name} cannot run packed rows (its layers read positions)")
        attention_mask = packed_attention_mask(_config(model), hidden, segments)  # 4-D: used as it is
    outputs = RUNNERS[family.runner](model, hidden, attention_mask, layer_indices, start)
    if all_states:
        return outputs
    return outputs[-1] if outputs else hidden


def _install_output_hooks(model: nn.Module) -> None:
    """Install transformers' output-capturing hooks while the whole stack is present.

    Families that collect ``hidden_states`` by hooks (DistilBERT in transformers 5) install them on the layers present
    at the first forward call; if that call ran truncated, the upper layers would never report their outputs.
    """
    try:
        from transformers import PreTrainedModel
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # pragma: no cover - older transformers collect hidden states without hooks
        return
    base = base_encoder(model)  # the wrapper's hooks, when it installs them, are the same (installing both doubles)
    if isinstance(base, PreTrainedModel) and not getattr(model, "_output_capturing_hooks_installed", False):
        with contextlib.suppress(Exception):
            maybe_install_capturing_hooks(base)


@contextlib.contextmanager
def truncated(model: nn.Module, depth: int) -> Iterator[nn.Module]:
    """Run ``model`` with only its first ``depth`` layers (layers above are not computed at all)."""
    family = family_for(model)
    full_depth = num_layers(model)
    if not 0 <= depth <= full_depth:
        raise BertscopeError(f"depth {depth} out of range 0..{full_depth}")
    _install_output_hooks(model)
    if family.shared_layers:
        set_depth(model, depth)
        try:
            yield model
        finally:
            set_depth(model, full_depth)
        return
    layers = get_layers(model)
    set_layers(model, nn.ModuleList(list(layers)[:depth]))
    try:
        yield model
    finally:
        set_layers(model, layers)


def layer_at_positions(
    model: nn.Module, layer_index: int, hidden: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor | None:
    """Output of transformer layer ``layer_index`` (0-based) at one position per example, ``[B, H]``, or None.

    When a head reads only one token of the top layer it reads, that layer's queries, attention, output projection
    and feed-forward are needed at that token alone (keys and values still come from every token): about a sixth of
    the layer's cost. Exact (up to float rounding) for the post-norm BERT layer shared by BERT, RoBERTa and ELECTRA
    (``bert_layer`` families); None for other families or decoder configs, and the caller then runs the whole layer.
    """
    if not family_for(model).bert_layer or getattr(_config(model), "is_decoder", False):
        return None
    layer: Any = get_layers(model)[layer_index]  # transformers' BertLayer: its parts are its own API
    attention = layer.attention.self
    batch, length, _ = hidden.shape
    heads, size = attention.num_attention_heads, attention.attention_head_size
    rows = torch.arange(batch, device=hidden.device)
    query_input = hidden[rows, positions]  # [B, H]
    query = attention.query(query_input).view(batch, 1, heads, size).transpose(1, 2)
    key = attention.key(hidden).view(batch, length, heads, size).transpose(1, 2)
    value = attention.value(hidden).view(batch, length, heads, size).transpose(1, 2)
    mask = attention_mask.to(torch.bool)[:, None, None, :]
    context = nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=attention.dropout.p if attention.training else 0.0,
        scale=attention.scaling,
    )
    context = context.transpose(1, 2).reshape(batch, 1, heads * size)
    attended = layer.attention.output(context, query_input[:, None])
    out: torch.Tensor = layer.feed_forward_chunk(attended)[:, 0]
    return out
