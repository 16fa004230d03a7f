"""Which representation a GLUE head sees: token, layer(s), hidden dimensions; the selecting head; freezing.

Paper 2 (Fukuhata & Kano, "few dimensions are enough") fine-tunes with a head that reads only one token vector, of one
layer, restricted to a few hidden dimensions. This module holds the pieces:

* pure selection functions: :func:`select_tokens` (hidden ``[B, T, H]`` + attention mask + special-token mask ->
  ``[B, H]``), :func:`parse_layers`, :func:`parse_dims`, :func:`parse_token`;
* :class:`HeadSpec`, the serialisable description of a head (written as ``head_config.json`` beside its weights);
* :class:`SelectingHead`, the small module that maps the selected token vectors ``[B, n_layers, H]`` to logits:
  optional pooler -> fixed dimension mask -> dropout -> ``linear`` or ``mlp2``;
* freezing helpers: :func:`apply_freezing` sets ``requires_grad=False`` on frozen parameters, which the optimizer
  then never sees (:func:`trainable_parameters`).

Assumptions where the paper is silent (all options, recorded in every result file): ``max-norm`` compares the L2
norms of the full hidden vectors (before dimension selection), per layer; pooling excludes [CLS]/[SEP]/padding unless
``include_special``; when an example has no candidate token left (e.g. empty text) pooling falls back to all its
non-padding tokens; ``index:K`` beyond an example's length is clamped to its last token (negative K counts from the
end, so ``index:-1`` is [SEP]); with several layers each layer picks its own token, and the vectors are concatenated
layer-major; dropout (default 0.1, as in BERT's classifier) is applied to the selected features before the head.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertscope import families
from bertscope.errors import BertscopeError

__all__ = [
    "FREEZE_HELP",
    "HEAD_KINDS",
    "TOKEN_METHODS",
    "HeadSpec",
    "SeededDropout",
    "SelectingHead",
    "apply_freezing",
    "parse_dims",
    "parse_freeze",
    "parse_layers",
    "parse_token",
    "select_layers",
    "select_tokens",
    "token_positions",
    "trainable_parameters",
]

TOKEN_METHODS = ("cls", "max-norm", "mean", "max", "index")
HEAD_KINDS = ("linear", "mlp2")
FREEZE_HELP = "none, embeddings, encoder, or layers:A-B (0 = embeddings, 1..L = transformer layers)"


# ----------------------------------------------------------------------------------------------------- parsing


def parse_token(spec: str) -> tuple[str, int | None]:
    """``cls``, ``max-norm``, ``mean``, ``max`` or ``index:K`` -> (method, K or None)."""
    text = spec.strip().lower().replace("_", "-")
    if text in ("maxnorm", "max-norm"):
        return "max-norm", None
    if text in ("cls", "mean", "max"):
        return text, None
    match = re.fullmatch(r"index:(-?\d+)", text)
    if match:
        return "index", int(match.group(1))
    raise BertscopeError(f"unknown --token {spec!r}; use cls, max-norm, mean, max or index:K")


def parse_layers(spec: str | int | Sequence[int], num_layers: int) -> tuple[int, ...]:
    """Hidden-state indices 0..L (0 = embedding output) from ``6``, ``-1`` (the top), ``3,6`` or ``-2,-1``."""
    if isinstance(spec, int):
        items: list[Any] = [spec]
    elif isinstance(spec, str):
        items = [s for s in re.split(r"[,\s]+", spec.strip()) if s]
    else:
        items = list(spec)
    if not items:
        raise BertscopeError("--layer is empty; give a hidden layer 0..L or a negative index from the top")
    out: list[int] = []
    for item in items:
        try:
            value = int(item)
        except (TypeError, ValueError):
            raise BertscopeError(f"--layer expects integers, got {item!r}") from None
        if not -(num_layers + 1) <= value <= num_layers:
            raise BertscopeError(
                f"--layer {value} out of range: this model has hidden layers 0..{num_layers} "
                f"(or -1..-{num_layers + 1} from the top)"
            )
        absolute = value if value >= 0 else num_layers + 1 + value
        if absolute in out:
            raise BertscopeError(f"--layer lists hidden layer {absolute} twice")
        out.append(absolute)
    return tuple(out)


def parse_dims(spec: str, hidden_size: int, seed: int = 0) -> tuple[int, ...]:
    """Dimension indices from ``all``, ``first:K``, ``random:K`` (seeded; sorted) or ``idx:i,j,...`` (kept in order)."""
    text = spec.strip().lower()
    if text == "all":
        return tuple(range(hidden_size))
    kind, _, arg = text.partition(":")
    if kind in ("first", "random"):
        try:
            k = int(arg)
        except ValueError:
            raise BertscopeError(f"--dims {spec!r}: expected {kind}:K with an integer K") from None
        if not 1 <= k <= hidden_size:
            raise BertscopeError(f"--dims {spec!r}: K must be in 1..{hidden_size} (the hidden size)")
        if kind == "first":
            return tuple(range(k))
        return tuple(sorted(random.Random(seed).sample(range(hidden_size), k)))
    if kind == "idx":
        try:
            values = [int(v) for v in re.split(r"[,\s]+", arg.strip()) if v]
        except ValueError:
            raise BertscopeError(f"--dims {spec!r}: expected idx:i,j,... with integers") from None
        if not values:
            raise BertscopeError(f"--dims {spec!r}: give at least one index")
        bad = [v for v in values if not 0 <= v < hidden_size]
        if bad:
            raise BertscopeError(f"--dims index {bad[0]} out of range 0..{hidden_size - 1} (the hidden size)")
        if len(set(values)) != len(values):
            raise BertscopeError(f"--dims {spec!r} lists a dimension twice")
        return tuple(values)
    raise BertscopeError(f"unknown --dims {spec!r}; use all, first:K, random:K or idx:i,j,...")


def parse_freeze(spec: str, num_layers: int) -> tuple[str, tuple[int, int] | None]:
    """``none``/``embeddings``/``encoder``/``layers:A-B`` -> (kind, inclusive range of hidden-layer numbers)."""
    text = spec.strip().lower()
    if text in ("none", "embeddings", "encoder"):
        return text, None
    match = re.fullmatch(r"layers:(\d+)(?:-(\d+))?", text)
    if match:
        a = int(match.group(1))
        b = int(match.group(2)) if match.group(2) is not None else a
        if not 0 <= a <= b <= num_layers:
            raise BertscopeError(f"--freeze {spec!r}: need 0 <= A <= B <= {num_layers} (0 = embeddings)")
        return "layers", (a, b)
    raise BertscopeError(f"unknown --freeze {spec!r}; use {FREEZE_HELP}")


# ------------------------------------------------------------------------------------------ pure selection


def token_positions(attention_mask: torch.Tensor, method: str, *, index: int | None = None) -> torch.Tensor | None:
    """The position each example's vector is read at, ``[B]``, for ``cls`` and ``index``; None for pooling methods
    (their choice depends on the hidden states). Known before the layer is computed, which lets the top layer read
    be computed at that position only (:func:`bertscope.families.layer_at_positions`)."""
    if method == "cls":
        return torch.zeros(attention_mask.shape[0], dtype=torch.long, device=attention_mask.device)
    if method != "index":
        return None
    if index is None:
        raise ValueError("method 'index' needs index")
    lengths = attention_mask.to(torch.bool).sum(dim=1)
    pos = torch.full_like(lengths, index) if index >= 0 else lengths + index
    return torch.minimum(pos.clamp(min=0), lengths - 1)


def select_tokens(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    special_mask: torch.Tensor | None,
    method: str,
    *,
    index: int | None = None,
    include_special: bool = False,
) -> torch.Tensor:
    """One vector per example from ``hidden`` ``[B, T, H]``; masks are ``[B, T]`` (1 = real token / special token).

    ``cls``: position 0. ``index``: position K (negative from the example's end, clamped to its tokens).
    ``max-norm``: the candidate token with the largest L2 norm. ``mean`` / ``max``: over candidate tokens.
    Candidates are non-padding tokens, minus special tokens unless ``include_special``.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, T, H], got {tuple(hidden.shape)}")
    batch = torch.arange(hidden.shape[0], device=hidden.device)
    real = attention_mask.to(torch.bool)
    positions = token_positions(attention_mask, method, index=index)
    if positions is not None:
        return hidden[batch, positions]
    candidates = real
    if special_mask is not None and not include_special:
        candidates = real & ~special_mask.to(torch.bool)
    empty = ~candidates.any(dim=1, keepdim=True)
    candidates = torch.where(empty, real, candidates)
    if method == "max-norm":
        norms = hidden.float().norm(dim=-1).masked_fill(~candidates, float("-inf"))
        return hidden[batch, norms.argmax(dim=1)]
    if method == "mean":
        weights = candidates.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    if method == "max":
        return hidden.masked_fill(~candidates.unsqueeze(-1), torch.finfo(hidden.dtype).min).amax(dim=1)
    raise ValueError(f"unknown token method {method!r}")


def select_layers(
    hidden_states: Sequence[torch.Tensor],
    layers: Sequence[int],
    attention_mask: torch.Tensor,
    special_mask: torch.Tensor | None,
    method: str,
    *,
    index: int | None = None,
    include_special: bool = False,
) -> torch.Tensor:
    """Selected token vectors of several hidden layers, ``[B, len(layers), H]`` (each layer picks its own token)."""
    return torch.stack(
        [select_tokens(hidden_states[layer], attention_mask, special_mask, method, index=index,
                       include_special=include_special) for layer in layers],
        dim=1,
    )


# ------------------------------------------------------------------------------------------ the head


@dataclass(frozen=True)
class HeadSpec:
    """Everything needed to rebuild a :class:`SelectingHead` (saved as ``head_config.json``)."""

    num_labels: int
    hidden_size: int
    layers: tuple[int, ...]
    dims: tuple[int, ...]
    token: str = "cls"
    include_special: bool = False
    head: str = "linear"
    head_hidden: int = 256
    dropout: float = 0.1
    pooler: bool = False
    task: str | None = None
    label_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        object.__setattr__(self, "dims", tuple(int(x) for x in self.dims))
        object.__setattr__(self, "label_names", tuple(self.label_names))
        parse_token(self.token)
        if self.head not in HEAD_KINDS:
            raise BertscopeError(f"unknown --head {self.head!r}; use {' or '.join(HEAD_KINDS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise BertscopeError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.head_hidden < 1:
            raise BertscopeError(f"--head-hidden must be at least 1, got {self.head_hidden}")

    @property
    def in_features(self) -> int:
        return len(self.layers) * len(self.dims)

    @property
    def token_method(self) -> tuple[str, int | None]:
        return parse_token(self.token)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"], out["dims"], out["label_names"] = list(self.layers), list(self.dims), list(self.label_names)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HeadSpec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


class SeededDropout(nn.Module):
    """Dropout drawing its masks from its own generator, so head training never touches the global RNG stream.

    The same seed gives the same masks whether the token vectors come from a live encoder or from a cache.
    """

    def __init__(self, p: float, seed: int) -> None:
        super().__init__()
        self.p, self.seed = float(p), int(seed)
        self._generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        keep = torch.rand(x.shape, generator=self._generator, device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, seed={self.seed}"


class SelectingHead(nn.Module):
    """Selected token vectors ``[B, n_layers, H]`` -> (pooler) -> fixed dimension mask -> dropout -> logits.

    The dimension mask is a buffer of indices: unselected dimensions never reach the head, in training and in
    evaluation. With ``pooler`` the head owns a copy of the backbone's pretrained pooler (dense + tanh), applied to
    each selected full vector before the mask. Weights are initialised from a dedicated generator seeded by ``seed``,
    so the head starts the same whatever happened to the global RNG (BERT's initialiser: N(0, 0.02), zero bias).
    """

    def __init__(self, spec: HeadSpec, *, seed: int = 0, pooler: tuple[nn.Linear, nn.Module] | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("dims", torch.tensor(spec.dims, dtype=torch.long), persistent=True)
        self.pooler_dense: nn.Linear | None = None
        self.pooler_activation: nn.Module | None = None
        if spec.pooler:
            if pooler is None:
                self.pooler_dense = nn.Linear(spec.hidden_size, spec.hidden_size)
                self.pooler_activation = nn.Tanh()
            else:
                dense, activation = pooler
                self.pooler_dense = nn.Linear(dense.in_features, dense.out_features)
                self.pooler_dense.load_state_dict(dense.state_dict())
                self.pooler_activation = activation
        self.dropout = SeededDropout(spec.dropout, seed + 1)
        if spec.head == "linear":
            self.classifier = nn.Linear(spec.in_features, spec.num_labels)
            self.hidden = None
        else:
            self.hidden = nn.Sequential(nn.Linear(spec.in_features, spec.head_hidden), nn.GELU(),
                                        SeededDropout(spec.dropout, seed + 2))
            self.classifier = nn.Linear(spec.head_hidden, spec.num_labels)
        generator = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for module in (self.hidden[0] if self.hidden is not None else None, self.classifier):
                if module is not None:
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.02)
                    module.bias.zero_()

    def features(self, vectors: torch.Tensor) -> torch.Tensor:
        """``[B, n_layers, H]`` -> the head's input ``[B, n_layers * len(dims)]`` (before dropout)."""
        if self.pooler_dense is not None:
            vectors = self.pooler_activation(self.pooler_dense(vectors))
        return vectors.index_select(-1, self.dims).flatten(1)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.features(vectors))
        if self.hidden is not None:
            x = self.hidden(x)
        logits = self.classifier(x)
        return logits

    # --- serialisation: head_config.json + head.safetensors -------------------------------------------------------

    def save(self, folder: str | Path, *, seed: int = 0) -> None:
        from safetensors.torch import save_file

        from bertscope.results import write_json_atomic

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = folder / ".head.safetensors.tmp"
        save_file(state, str(tmp), metadata={"format": "pt"})
        tmp.replace(folder / "head.safetensors")
        write_json_atomic(folder / "head_config.json", {**self.spec.to_dict(), "seed": seed,
                                                        "format": "bertscope-selecting-head/1"})

    @classmethod
    def load(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> SelectingHead:
        from safetensors.torch import load_file

        folder = Path(folder)
        config_path, weights_path = folder / "head_config.json", folder / "head.safetensors"
        if not config_path.is_file() or not weights_path.is_file():
            raise BertscopeError(f"{folder} holds no bertscope selecting head (head_config.json + head.safetensors)")
        try:
            values = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BertscopeError(f"cannot read {config_path}: {exc}") from None
        head = cls(HeadSpec.from_dict(values), seed=int(values.get("seed", 0)))
        head.load_state_dict(load_file(str(weights_path), device=str(map_location)))
        return head


# ------------------------------------------------------------------------------------------ freezing


def apply_freezing(model: nn.Module, spec: str, *, read_layers: Iterable[int] = ()) -> dict[str, Any]:
    """Set ``requires_grad=False`` on the frozen part of ``model`` and on parts the head can never reach.

    Parts never reached: transformer layers above the highest layer read (they are not computed) and the backbone's
    own pooler (a pooler, when asked for, is owned by the head). Returns a summary for the result file.
    """
    depth = families.num_layers(model)
    kind, span = parse_freeze(spec, depth)
    shared = families.family_for(model).shared_layers
    if kind == "layers" and shared and span[1] >= 1 and not (max(span[0], 1) == 1 and span[1] == depth):  # type: ignore[index]
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
        a, b = span  # type: ignore[misc]
        if a == 0:
            freeze(families.embeddings_module(model), "embeddings")
        if b >= 1:
            for i in range(max(a, 1), b + 1):
                freeze(layers[0] if shared else layers[i - 1], f"layer {i}")
            if shared:
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
