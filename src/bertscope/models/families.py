"""All model-family knowledge lives here, as data: one :class:`Family` entry per architecture in :data:`FAMILIES`.

For each supported ``model_type`` the table says where the base encoder keeps its layer stack, which config keys hold
the depth and the width, how the embeddings are called, where the masked-LM head lives (split into a ``transform``
and a vocabulary ``decoder`` so it can decode *any* hidden state), where the pooler is, and which runner calls its
layers. Every other module asks the functions below instead of touching model attributes; none of these functions
tests a family's name, they read the entry's fields. The table is data; what acts on it lives beside it:
:mod:`bertscope.models.runners` runs the layers (on any hidden state, truncated, at one position),
:mod:`bertscope.models.packing` packs rows, :mod:`bertscope.surgery.layer_map` builds stacks from layer maps, and
:mod:`bertscope.models.loading` loads checkpoints.

How to add a family: append one ``Family(...)`` to :data:`FAMILIES`. Paths are dotted attribute paths relative to
the base encoder (``model.base_model``) unless a field says otherwise; every field but the first three has a default
(BERT's, where BERT has one):

* ``name``, ``model_types`` (the ``config.model_type`` values it covers), ``layers_path`` (the ``nn.ModuleList`` of
  layers, e.g. ``encoder.layer``);
* ``depth_key`` / ``hidden_size_key``: the config keys of the depth and the hidden width; ``depth_paths``: other
  attributes that store the depth and must follow it (DistilBERT's ``transformer.n_layers``);
* ``embeddings_path``, ``embeddings_inputs`` (what the embeddings take besides ``input_ids``: ``token_type_ids``,
  ``mask``), ``embedding_maps`` (maps applied after them when the model has them, e.g. ELECTRA's
  ``embeddings_project``): together they give ``hidden_states[0]`` (:func:`bertscope.models.runners.embed`);
* ``mlm_heads``: :class:`MlmHead` entries (paths relative to the masked-LM model; the first that resolves is used)
  and ``head_prefixes`` (their state-dict prefixes: missing on load means the checkpoint has no pretrained head);
* ``final_norm_path``: the final encoder norm of pre-norm families (ModernBERT);
* ``pooler``: ``(dense, activation)`` paths of the pretrained pooler, or None;
* ``attention``: the attention implementations bertscope loads the family with, in order of preference (default
  ``("sdpa", "eager")``: PyTorch's fused ``scaled_dot_product_attention`` first, transformers' plain matrix products
  as the reference; DeBERTa-v2 has ``("eager",)``: transformers has no sdpa path for its disentangled attention).
  :func:`attention_implementation` resolves ``--attention`` against it; only implementations tested against the
  plain path (``tests/test_attention.py``) belong here;
* ``sequence_classifier``: the family's own Hugging Face classification head as data (:class:`SequenceClassifier`:
  its class per model type, where its pooler dense / norm and classifier sit, its activation and dropout placement,
  :class:`PoolerStyle`): ``finetune --pooler`` trains exactly that head, and :mod:`bertscope.finetune.export` writes
  it as that plain transformers model; None where a family's head had another shape;
* flags: ``shared_layers`` (one set of layers applied on ALBERT's group schedule, ``groups_key``), ``packable``
  (layers see only hidden states and an attention mask, so sequences may share a row), ``bert_layer`` (layers are
  transformers' post-norm ``BertLayer``: the one-position shortcut of
  :func:`bertscope.models.runners.layer_at_positions` applies),
  ``layer_types_key`` (a per-layer config list that follows a layer map), ``pinned_first_layer`` (why layer 0 cannot
  move in a layer map, or None), ``decoder_reads_embedding_size`` and ``notes`` (documentation);
* ``runner``: how its layers are called, a key of :data:`bertscope.models.runners.RUNNERS` (default ``plain``:
  ``layer(hidden, 4-D mask)``, as BERT, RoBERTa, ALBERT, ELECTRA and DistilBERT do). DeBERTa-v2 (relative
  positions, the conv after the first layer) and ModernBERT (rotary embeddings, sliding-window layers) name their
  own; a family with truly special behaviour adds its runner there, the one function it may bring.

Then add the family's tiny config to ``tests/conftest.py``: every family test runs against its Hugging Face model,
and ``tests/test_families.py`` checks that every path of the entry resolves.

Length: the table itself (one ``Family`` entry per architecture) and the small lookups every other module uses
instead of touching model attributes; what acts on the table (runners, packing, layer maps) lives elsewhere.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from bertscope.core.errors import BertscopeError, UnsupportedModelError

__all__ = [
    "ATTENTION_IMPLEMENTATIONS",
    "FAMILIES",
    "Family",
    "HeadParts",
    "MlmHead",
    "PoolerStyle",
    "SequenceClassifier",
    "attention_implementation",
    "attention_in_use",
    "base_encoder",
    "check_max_length",
    "embeddings_module",
    "family_for",
    "final_norm",
    "finalize_hidden",
    "get_layers",
    "hidden_size",
    "max_input_length",
    "mlm_head_parts",
    "num_layers",
    "pooler_parts",
    "pooler_style",
    "sequence_classifier",
    "set_depth",
    "set_layers",
    "supported_model_types",
    "uses_token_type_ids",
]

HeadMode = Literal["full", "decoder"]
Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class HeadParts:
    """A masked-LM head split so it can be applied to any hidden state, chunk by chunk.

    ``logits(h) = decode(transform(pre_norm(h)))`` where ``decode`` is ``h @ weight.T + bias``. ``pre_norm`` is the
    final encoder norm of pre-norm families (ModernBERT), which the head always sees; it is applied to every layer
    except the last, whose hidden state already includes it.
    """

    transform: Transform | None
    weight: torch.Tensor
    bias: torch.Tensor | None
    pre_norm: Transform | None = None

    def features(self, hidden: torch.Tensor, *, is_last_layer: bool) -> torch.Tensor:
        """The decoder's input for ``hidden`` taken from some layer."""
        if self.pre_norm is not None and not is_last_layer:
            hidden = self.pre_norm(hidden)
        return self.transform(hidden) if self.transform is not None else hidden

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(features, self.weight, self.bias)

    def logits(self, hidden: torch.Tensor, *, is_last_layer: bool) -> torch.Tensor:
        return self.decode(self.features(hidden, is_last_layer=is_last_layer))


# --- Typed access by dotted path: nn.Module's own attribute access is typed ``Tensor | Module`` ----------------------


def _module(root: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path`` (``encoder.layer``); AttributeError when there is none."""
    return root.get_submodule(path)


def _find(root: object, path: str) -> Any:
    """The attribute at dotted ``path`` (module, tensor, function or config value), None where a step is missing."""
    value: Any = root
    for part in path.split("."):
        value = getattr(value, part, None)
        if value is None:
            return None
    return value


def _tensor(root: nn.Module, path: str) -> torch.Tensor | None:
    """The parameter or buffer at dotted ``path``; None where the model keeps None there (a Linear without bias)."""
    owner, _, name = path.rpartition(".")
    value = getattr(_module(root, owner) if owner else root, name)
    if value is not None and not isinstance(value, torch.Tensor):
        raise AttributeError(f"{path} is a {type(value).__name__}, not a tensor")
    return value


def _callable(root: nn.Module, path: str) -> Transform:
    """The module or function at dotted ``path`` (e.g. an activation), as a function of a tensor."""
    value = _find(root, path)
    if not callable(value):
        raise AttributeError(f"{type(root).__name__} has no callable {path}")
    return value


def _config(config_or_model: Any) -> Any:
    """A model's config (or the config itself). Configs are untyped bags of family-specific keys: ``Any``."""
    return getattr(config_or_model, "config", config_or_model)


def _base(model: nn.Module) -> nn.Module:
    base = getattr(model, "base_model", model)
    return base if isinstance(base, nn.Module) else model


# --- The masked-LM head, as data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlmHead:
    """Where a masked-LM head keeps its parts: dotted paths relative to the masked-LM model (not the base encoder).

    The head computes ``decode(transform(h))`` with ``decode(x) = x @ decoder.weight.T + bias``. ``transform`` is one
    module path, or a ``(dense, activation, norm)`` triple applied as ``norm(activation(dense(h)))`` where
    ``activation`` is a path or a function. ``decoder`` is the module whose ``weight`` [V, E] decodes (possibly the
    tied input embeddings); ``bias`` lists paths tried in order, the first that is not None is used.
    """

    transform: str | tuple[str, str | Transform, str]
    decoder: str
    bias: tuple[str, ...]

    def resolve(self, model: nn.Module) -> tuple[Transform, torch.Tensor, torch.Tensor | None]:
        """(transform, decoder weight, bias) of ``model``; AttributeError when the model has no such head."""
        transform: Transform
        if isinstance(self.transform, str):
            transform = _module(model, self.transform)
        else:
            dense_path, activation_path, norm_path = self.transform
            dense, norm = _module(model, dense_path), _module(model, norm_path)
            activation = activation_path if callable(activation_path) else _callable(model, activation_path)

            def transform(h: torch.Tensor) -> torch.Tensor:
                return norm(activation(dense(h)))

        weight = _tensor(_module(model, self.decoder), "weight")
        if weight is None:
            raise AttributeError(f"{self.decoder} has no weight")
        bias = next((b for b in (_tensor(model, p) for p in self.bias) if b is not None), None)
        return transform, weight, bias


def _gelu(h: torch.Tensor) -> torch.Tensor:
    """transformers' own GELU (RoBERTa's head calls the function, not a module)."""
    from transformers.activations import gelu

    return gelu(h)


_BERT_HEAD = MlmHead("cls.predictions.transform", "cls.predictions.decoder",
                     ("cls.predictions.decoder.bias", "cls.predictions.bias"))


@dataclass(frozen=True)
class PoolerStyle:
    """How a family's own classification head transforms the first token before its classifier, as a selecting head
    with ``--pooler`` reproduces it: ``norm(activation(dense(dropout?(h))))``.

    ``activation`` is a transformers ``ACT2FN`` name; ``norm_eps`` is None when no LayerNorm follows (ModernBERT has
    one, with ``norm_bias``); ``dropout_before``: the head also drops out the token vector before ``dense`` (RoBERTa,
    ELECTRA, DeBERTa's ContextPooler), as well as the pooled vector before the classifier (every family).
    """

    activation: str = "tanh"
    norm_eps: float | None = None
    norm_bias: bool = True
    dropout_before: bool = False


@dataclass(frozen=True)
class SequenceClassifier:
    """Where a family's standard ``*ForSequenceClassification`` keeps its pooler-then-linear head, as data.

    Every family's classifier computes ``classifier(dropout(pooled))`` with ``pooled = norm(act(dense(dropout?(
    h[:, 0]))))`` on the last hidden state: BERT and ALBERT through the encoder's pooler (tanh), RoBERTa-style and
    ELECTRA through ``*ClassificationHead`` (tanh / GELU, a dropout before ``dense`` too), DistilBERT through
    ``pre_classifier`` (ReLU), DeBERTa-v2/v3 through its ``ContextPooler`` (``pooler_hidden_act``, GELU by default),
    ModernBERT through its prediction head (``classifier_activation``, then a LayerNorm). In eval mode that is exactly
    a selecting head with ``--pooler`` of the same :class:`PoolerStyle` reading ``cls`` of the last layer, all
    dimensions, into a linear layer. ``classes``: the transformers class of each model type; ``pooler`` /
    ``classifier`` / ``norm``: dotted paths, relative to that model, of the ``nn.Linear`` (and ``nn.LayerNorm``)
    that take the head's pooler dense, classifier (and pooler norm) weights; ``activation`` or ``activation_key`` (a
    config key naming it, which wins when the config has it); ``dropout_key`` and ``pooler_dropout_key``: the config
    keys of its dropouts (set to the head's own dropout); ``settings``: config values the exported model needs
    (ModernBERT: pool the first token, give the dense layer a bias).
    """

    classes: tuple[tuple[str, str], ...]
    pooler: str
    classifier: str
    dropout_key: str = "classifier_dropout"
    activation: str = "tanh"
    activation_key: str | None = None
    norm: str | None = None
    dropout_before: bool = False
    pooler_dropout_key: str | None = None
    settings: tuple[tuple[str, Any], ...] = ()

    def class_name(self, model_type: str) -> str:
        """The transformers class name of ``model_type``'s classifier."""
        return dict(self.classes)[model_type]

    def style(self, config_or_model: Any) -> PoolerStyle:
        """The pooler a selecting head needs to be this classifier, for a model of this config."""
        config = _config(config_or_model)
        activation = getattr(config, self.activation_key, None) if self.activation_key else None
        eps = None
        if self.norm is not None:
            eps = float(getattr(config, "norm_eps", None) or getattr(config, "layer_norm_eps", None) or 1e-5)
        return PoolerStyle(activation=str(activation or self.activation), norm_eps=eps,
                           norm_bias=bool(getattr(config, "norm_bias", True)) if self.norm else True,
                           dropout_before=self.dropout_before)


# --- The table ------------------------------------------------------------------------------------------------------

#: The attention implementations a family entry may list (``Family.attention``): transformers' names.
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


@dataclass(frozen=True)
class Family:
    """Where one architecture keeps its parts and how it runs them (see the module docstring for every field).

    Paths are relative to the base encoder (``model.base_model``), except :class:`MlmHead` paths.
    """

    name: str
    model_types: tuple[str, ...]
    layers_path: str
    depth_key: str = "num_hidden_layers"
    hidden_size_key: str = "hidden_size"
    depth_paths: tuple[str, ...] = ()
    embeddings_path: str = "embeddings"
    embeddings_inputs: tuple[Literal["token_type_ids", "mask"], ...] = ("token_type_ids",)
    embedding_maps: tuple[str, ...] = ()
    mlm_heads: tuple[MlmHead, ...] = ()
    head_prefixes: tuple[str, ...] = ()
    final_norm_path: str | None = None
    pooler: tuple[str, str] | None = None
    attention: tuple[str, ...] = ATTENTION_IMPLEMENTATIONS  # preferred first; see attention_implementation()
    sequence_classifier: SequenceClassifier | None = None
    shared_layers: bool = False
    groups_key: str = "num_hidden_groups"
    packable: bool = False  # layers see only hidden states + an attention mask: sequences may share a row
    bert_layer: bool = False
    layer_types_key: str | None = None
    pinned_first_layer: str | None = None
    decoder_reads_embedding_size: bool = False
    runner: str = "plain"  # how its layers are called: a key of bertscope.models.runners.RUNNERS
    positions_after_pad: bool = False  # position ids start at pad_token_id + 1 (RoBERTa): fewer usable positions
    notes: str = ""


FAMILIES: tuple[Family, ...] = (
    Family("bert", ("bert",), "encoder.layer", mlm_heads=(_BERT_HEAD,), head_prefixes=("cls.predictions",),
           pooler=("pooler.dense", "pooler.activation"), packable=True, bert_layer=True,
           sequence_classifier=SequenceClassifier((("bert", "BertForSequenceClassification"),),
                                                  "bert.pooler.dense", "classifier")),
    Family("roberta", ("roberta", "xlm-roberta", "camembert"), "encoder.layer",
           mlm_heads=(MlmHead(("lm_head.dense", _gelu, "lm_head.layer_norm"), "lm_head.decoder",
                              ("lm_head.decoder.bias",)),),
           head_prefixes=("lm_head",), pooler=("pooler.dense", "pooler.activation"), packable=True,
           bert_layer=True, positions_after_pad=True,
           sequence_classifier=SequenceClassifier((("roberta", "RobertaForSequenceClassification"),
                                                   ("xlm-roberta", "XLMRobertaForSequenceClassification"),
                                                   ("camembert", "CamembertForSequenceClassification")),
                                                  "classifier.dense", "classifier.out_proj", dropout_before=True)),
    Family("albert", ("albert",), "encoder.albert_layer_groups",
           embedding_maps=("encoder.embedding_hidden_mapping_in",),
           mlm_heads=(MlmHead(("predictions.dense", "predictions.activation", "predictions.LayerNorm"),
                              "predictions.decoder", ("predictions.decoder.bias",)),),
           head_prefixes=("predictions",), pooler=("pooler", "pooler_activation"), shared_layers=True,
           sequence_classifier=SequenceClassifier((("albert", "AlbertForSequenceClassification"),),
                                                  "albert.pooler", "classifier", "classifier_dropout_prob"),
           decoder_reads_embedding_size=True, packable=True,
           notes="one set of layer weights shared by all depths; depth = how often it is applied"),
    Family("distilbert", ("distilbert",), "transformer.layer", depth_key="n_layers", hidden_size_key="dim",
           depth_paths=("transformer.n_layers",), embeddings_inputs=(),
           mlm_heads=(MlmHead(("vocab_transform", "activation", "vocab_layer_norm"), "vocab_projector",
                              ("vocab_projector.bias",)),),
           head_prefixes=("vocab_transform", "vocab_layer_norm", "vocab_projector"), packable=True,
           sequence_classifier=SequenceClassifier((("distilbert", "DistilBertForSequenceClassification"),),
                                                  "pre_classifier", "classifier", "seq_classif_dropout",
                                                  activation="relu")),
    Family("electra", ("electra",), "encoder.layer", embedding_maps=("embeddings_project",),
           mlm_heads=(MlmHead("generator_predictions", "generator_lm_head", ("generator_lm_head.bias",)),),
           head_prefixes=("generator_predictions", "generator_lm_head"), decoder_reads_embedding_size=True,
           packable=True, bert_layer=True,
           sequence_classifier=SequenceClassifier((("electra", "ElectraForSequenceClassification"),),
                                                  "classifier.dense", "classifier.out_proj", activation="gelu",
                                                  dropout_before=True),
           notes="the MLM head is the generator's; discriminator checkpoints have none (use --head fit)"),
    Family("deberta-v2", ("deberta-v2",), "encoder.layer", embeddings_inputs=("token_type_ids", "mask"),
           mlm_heads=(_BERT_HEAD,  # legacy checkpoints; newer ones tie the decoder to the input embeddings
                      MlmHead(("lm_predictions.lm_head.dense", "lm_predictions.lm_head.transform_act_fn",
                               "lm_predictions.lm_head.LayerNorm"), "deberta.embeddings.word_embeddings",
                              ("lm_predictions.lm_head.bias",))),
           head_prefixes=("cls.predictions", "lm_predictions"), runner="deberta-v2", attention=("eager",),
           sequence_classifier=SequenceClassifier((("deberta-v2", "DebertaV2ForSequenceClassification"),),
                                                  "pooler.dense", "classifier", "cls_dropout", activation="gelu",
                                                  activation_key="pooler_hidden_act", dropout_before=True,
                                                  pooler_dropout_key="pooler_dropout"),
           notes="DeBERTa-v3 checkpoints ship no MLM head (use --head fit)"),
    Family("modernbert", ("modernbert",), "layers", embeddings_inputs=(),
           mlm_heads=(MlmHead("head", "decoder", ("decoder.bias",)),), head_prefixes=("head", "decoder"),
           final_norm_path="final_norm", layer_types_key="layer_types",
           pinned_first_layer="ModernBERT's layer 0 has no attention LayerNorm", runner="modernbert",
           sequence_classifier=SequenceClassifier((("modernbert", "ModernBertForSequenceClassification"),),
                                                  "head.dense", "classifier", activation="gelu",
                                                  activation_key="classifier_activation", norm="head.norm",
                                                  settings=(("classifier_pooling", "cls"), ("classifier_bias", True))),
           notes="pre-norm: the final norm is applied to intermediate layers before the head"),
)

_BY_TYPE = {t: fam for fam in FAMILIES for t in fam.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_TYPE)


def family_for(config_or_model: Any) -> Family:
    """The family of a config, a model or a ``model_type`` string; an unknown ``model_type`` is a clear error naming
    the supported ones."""
    model_type = config_or_model if isinstance(config_or_model, str) else getattr(
        _config(config_or_model), "model_type", None)
    family = _BY_TYPE.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        raise UnsupportedModelError(
            f"model type '{model_type}' is not supported; supported: {', '.join(supported_model_types())}"
        )
    return family


def attention_implementation(config_or_model: Any, requested: str = "auto") -> str:
    """The attention implementation to load a model of this family with (transformers' ``attn_implementation``).

    ``auto`` is the family's first choice (:attr:`Family.attention`: sdpa where transformers has it); ``sdpa`` or
    ``eager`` is itself where the family supports it, else a one-line :class:`BertscopeError` naming the family and
    what it supports. Loading always passes the answer explicitly, so which kernel a run used never depends on a
    transformers version's default. ``config_or_model``: a config, a model or a ``model_type``.
    """
    family = family_for(config_or_model)
    value = requested.strip().lower()
    if value == "auto":
        return family.attention[0]
    if value not in family.attention:
        raise BertscopeError(f"attention implementation {requested!r} is not available for {family.name} models; "
                             f"use {', '.join(('auto', *family.attention))}")
    return value


def attention_in_use(config_or_model: Any) -> str:
    """The attention implementation a loaded model actually runs (transformers' record on its config, read back after
    loading), what results record; ``eager`` for a bare config that records none (transformers' own fallback)."""
    return str(getattr(_config(config_or_model), "_attn_implementation", None) or "eager")


def num_layers(config_or_model: Any) -> int:
    """Number of transformer layers L (hidden states are 0..L, 0 being the embedding output)."""
    config = _config(config_or_model)
    return int(getattr(config, family_for(config).depth_key))


def hidden_size(config_or_model: Any) -> int:
    """Width of the hidden states (DistilBERT calls it ``dim``)."""
    config = _config(config_or_model)
    return int(getattr(config, family_for(config).hidden_size_key))


def max_input_length(config_or_model: Any) -> int | None:
    """The most tokens one input may have: what the absolute position embeddings cover (``max_position_embeddings``,
    less the padding offset of RoBERTa-style ids), or None when nothing bounds it (DeBERTa-v2 with relative
    positions only, ``position_biased_input=False``)."""
    config = _config(config_or_model)
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or getattr(config, "position_biased_input", True) is False:
        return None
    if family_for(config).positions_after_pad:
        positions -= int(getattr(config, "pad_token_id", None) or 0) + 1
    return positions


def check_max_length(max_length: int, config_or_model: Any, *, option: str = "--max-length") -> None:
    """Refuse a ``--max-length`` beyond the model's position embeddings (:func:`max_input_length`): an input that
    long would crash deep inside the forward pass, or worse, index past the table. Every command that truncates to
    ``--max-length`` calls this once the model's config is known, before any work, so all refuse it the same way."""
    limit = max_input_length(config_or_model)
    if limit is not None and max_length > limit:
        raise BertscopeError(f"{option} {max_length} exceeds the model's {limit} positions "
                             f"(max_position_embeddings); use {option} {limit} or less")


def base_encoder(model: nn.Module) -> nn.Module:
    """The bare encoder of any model of a supported family (no task head), e.g. to get hidden states cheaply."""
    return _base(model)


def get_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer stack (for ALBERT: the shared layer groups, not one module per depth)."""
    layers = _module(_base(model), family_for(model).layers_path)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{family_for(model).layers_path} of {type(model).__name__} is not an nn.ModuleList")
    return layers


def _install_stack(model: nn.Module, layers: nn.ModuleList, depth: int) -> None:
    """Put ``layers`` in the layer stack's place and make every record of the depth say ``depth``."""
    family = family_for(model)
    base = _base(model)
    owner, _, name = family.layers_path.rpartition(".")
    setattr(_module(base, owner) if owner else base, name, layers)
    set_depth(model, depth)


def set_depth(model: nn.Module, depth: int) -> None:
    """Make every record of the depth (the config's key, the entry's ``depth_paths``) say ``depth``."""
    family = family_for(model)
    setattr(_config(model), family.depth_key, depth)
    base = _base(model)
    for path in family.depth_paths:
        owner, _, name = path.rpartition(".")
        setattr(_module(base, owner) if owner else base, name, depth)


def set_layers(model: nn.Module, layers: nn.ModuleList) -> None:
    """Replace the layer stack and keep the config's depth (and every other record of it) consistent."""
    family = family_for(model)
    if family.shared_layers:
        raise BertscopeError(f"{family.name} shares one layer across depths; change its depth instead")
    _install_stack(model, layers, len(layers))


def mlm_head_parts(model: nn.Module, mode: HeadMode = "full") -> HeadParts:
    """The checkpoint's own MLM head as :class:`HeadParts`.

    ``full`` = transform + LayerNorm + (tied) decoder + bias, exactly what ``AutoModelForMaskedLM`` applies to the last
    layer; ``decoder`` = decoder + bias only, applied to the raw hidden state.
    """
    family = family_for(model)
    resolved = None
    if any(hasattr(model, p.split(".")[0]) for p in family.head_prefixes):
        for head in family.mlm_heads:
            with contextlib.suppress(AttributeError):
                resolved = head.resolve(model)
                break
    if resolved is None:
        raise BertscopeError(f"{type(model).__name__} has no masked-LM head; load it as a masked-LM model")
    transform: Transform | None
    transform, weight, bias = resolved
    if mode == "decoder":
        hidden = hidden_size(model)
        if weight.shape[1] != hidden:
            raise BertscopeError(
                f"--head-part decoder is impossible for {family.name}: its decoder reads {weight.shape[1]} "
                f"features, the hidden states have {hidden}; use the full head"
            )
        transform = None
    return HeadParts(transform=transform, weight=weight, bias=bias, pre_norm=final_norm(model))


def final_norm(model: nn.Module) -> Transform | None:
    """The final encoder norm of pre-norm families (ModernBERT), which ``hidden_states[L]`` already includes; else None."""
    family = family_for(model)
    return _module(_base(model), family.final_norm_path) if family.final_norm_path else None


def finalize_hidden(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The model's last hidden state from the raw output of its last layer (pre-norm families add a final norm)."""
    norm = final_norm(model)
    return hidden if norm is None else norm(hidden)


# --- Fine-tuning with a selecting head: embeddings for freezing, the pooler, token type ids -----------------


def embeddings_module(model: nn.Module) -> nn.Module:
    """The input embedding block (word/position/type embeddings and their norm), for ``--freeze embeddings``.

    ELECTRA's ``embeddings_project`` and ALBERT's ``embedding_hidden_mapping_in`` are not included: they are the
    first learned map after the embeddings, counted with the encoder.
    """
    return _module(_base(model), family_for(model).embeddings_path)


def pooler_parts(model: nn.Module) -> tuple[nn.Linear, nn.Module] | None:
    """The pretrained pooler as (dense layer, activation), or None for families (or checkpoints) without one.

    BERT-style poolers apply ``tanh(dense(h))`` to the [CLS] vector; ALBERT keeps the two as separate attributes.
    """
    paths = family_for(model).pooler
    if paths is None:
        return None
    base = _base(model)
    dense, activation = _find(base, paths[0]), _find(base, paths[1])
    if isinstance(dense, nn.Linear) and isinstance(activation, nn.Module):
        return dense, activation
    return None


def sequence_classifier(config_or_model: Any) -> SequenceClassifier | None:
    """Where the family's standard ``*ForSequenceClassification`` keeps its pooler-then-linear head (every family in
    the table has one), or None for a family whose own classification head has another shape."""
    return family_for(config_or_model).sequence_classifier


def pooler_style(config_or_model: Any) -> PoolerStyle | None:
    """The pooler of the family's own classification head (activation, norm, dropout placement), or None."""
    layout = sequence_classifier(config_or_model)
    return None if layout is None else layout.style(config_or_model)


def uses_token_type_ids(model: nn.Module) -> bool:
    """Whether the encoder takes segment ids (BERT, ALBERT, ELECTRA, DeBERTa with type embeddings) for pairs."""
    if "token_type_ids" not in inspect.signature(_base(model).forward).parameters:
        return False
    return int(getattr(_config(model), "type_vocab_size", 0) or 0) >= 2
