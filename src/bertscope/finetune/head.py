"""The selecting head: the small module that maps selected token vectors ``[B, n_layers, H]`` to logits.

* :class:`HeadSpec`, the serialisable description of a head (written as ``head_config.json`` beside its weights);
* :class:`SelectingHead`: optional pooler -> fixed dimension mask -> feature normalisation -> dropout -> ``linear``
  or ``mlp2``; saved and loaded as ``head_config.json`` + ``head.safetensors``;
* :class:`SeededDropout`, dropout with its own generator, so the head never reads the global RNG.

Dropout (default 0.1, as in BERT's classifier) is applied to the selected features before the head. ``layers`` are
hidden-state indices (0 = embedding output), ``dims`` hidden-dimension indices, as :mod:`bertscope.core.options` parses
them.

Feature normalisation (``feature_norm``, resolved: never ``auto``): ``standardize`` subtracts a fixed per-feature mean
and divides by a fixed standard deviation (buffers ``feature_mean`` / ``feature_std``, set once from the training
split by :func:`bertscope.finetune.normalize.fit_standardizer` and saved with the weights), ``layernorm`` normalises each
selected vector over its features without a learned affine. BERT-family vectors carry a few "outlier" dimensions
hundreds of times larger than the rest; a plain linear head on them barely moves under AdamW (docs/finetune.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_token
from bertscope.core.results import write_json_atomic

__all__ = ["FEATURE_NORM_KINDS", "HEAD_KINDS", "LAYERNORM_EPS", "STD_FLOOR", "HeadSpec", "SeededDropout",
           "SelectingHead"]

HEAD_KINDS = ("linear", "mlp2")
#: Resolved ``--feature-norm`` values a head can hold.
FEATURE_NORM_KINDS = ("none", "standardize", "layernorm")
#: ``layernorm``'s epsilon (torch's default).
LAYERNORM_EPS = 1e-5
#: A standard deviation at or below this (a constant feature) is stored as 1: the feature is only centred.
STD_FLOOR = 1e-6


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
    feature_norm: str = "none"  # absent from heads saved before the option: they are plain heads
    # the pooler of the family's own classification head (models.families.PoolerStyle); heads saved before these
    # fields had BERT's dense + tanh
    pooler_activation: str = "tanh"
    pooler_norm_eps: float | None = None
    pooler_norm_bias: bool = True
    pooler_dropout_before: bool = False

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
        if self.feature_norm not in FEATURE_NORM_KINDS:
            raise BertscopeError(f"unknown feature normalisation {self.feature_norm!r}; use "
                                 f"{', '.join(FEATURE_NORM_KINDS)}")
        from transformers.activations import ACT2FN

        if self.pooler_activation not in ACT2FN:
            raise BertscopeError(f"unknown pooler activation {self.pooler_activation!r}")
        if self.feature_norm == "layernorm" and self.in_features < 2:
            raise BertscopeError("--feature-norm layernorm over a single feature makes it 0 for every example; use "
                                 "standardize or none")

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
    evaluation. With ``spec.pooler`` the head owns the pooler of the family's own classification head
    (:class:`bertscope.models.families.PoolerStyle`: dense, activation, optional LayerNorm, optional dropout before
    the dense), applied to each selected full vector before the mask; its dense starts from the backbone's pretrained
    pooler when ``pooler`` hands one in, else from the head's generator like the classifier. Weights are initialised from a dedicated generator seeded by ``seed``,
    so the head starts the same whatever happened to the global RNG (BERT's initialiser: N(0, 0.02), zero bias).
    """

    dims: torch.Tensor  # the buffer of selected dimension indices
    feature_mean: torch.Tensor  # standardize only: fixed per-feature mean and std ([in_features])
    feature_std: torch.Tensor

    def __init__(self, spec: HeadSpec, *, seed: int = 0, pooler: tuple[nn.Linear, nn.Module] | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("dims", torch.tensor(spec.dims, dtype=torch.long), persistent=True)
        if spec.feature_norm == "standardize":  # identity until set_standardizer (loading restores the saved ones)
            self.register_buffer("feature_mean", torch.zeros(spec.in_features), persistent=True)
            self.register_buffer("feature_std", torch.ones(spec.in_features), persistent=True)
        self.pooler_dense: nn.Linear | None = None
        self.pooler_activation: nn.Module | None = None
        self.pooler_norm: nn.LayerNorm | None = None
        self.pooler_dropout: SeededDropout | None = None
        fresh_pooler = spec.pooler and pooler is None
        if spec.pooler:
            from transformers.activations import ACT2FN

            self.pooler_dense = nn.Linear(spec.hidden_size, spec.hidden_size)
            if pooler is not None:  # the checkpoint's pretrained pooler
                self.pooler_dense.load_state_dict(pooler[0].state_dict())
            self.pooler_activation = ACT2FN[spec.pooler_activation]
            if spec.pooler_norm_eps is not None:
                self.pooler_norm = nn.LayerNorm(spec.hidden_size, eps=spec.pooler_norm_eps, bias=spec.pooler_norm_bias)
            if spec.pooler_dropout_before:
                self.pooler_dropout = SeededDropout(spec.dropout, seed + 3)
        self.dropout = SeededDropout(spec.dropout, seed + 1)
        initialised: list[nn.Linear] = []  # in the order their weights are drawn
        self.hidden: nn.Sequential | None = None
        if spec.head == "linear":
            self.classifier = nn.Linear(spec.in_features, spec.num_labels)
        else:
            first = nn.Linear(spec.in_features, spec.head_hidden)
            self.hidden = nn.Sequential(first, nn.GELU(), SeededDropout(spec.dropout, seed + 2))
            self.classifier = nn.Linear(spec.head_hidden, spec.num_labels)
            initialised.append(first)
        initialised.append(self.classifier)
        if fresh_pooler:  # no pretrained pooler (or a head being loaded): drawn after the classifier, same init
            assert self.pooler_dense is not None
            initialised.append(self.pooler_dense)
        generator = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for module in initialised:
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.02)
                module.bias.zero_()

    def start_at(self, value: float) -> None:
        """Start the output at ``value`` (the classifier's bias; its weights stay as drawn). A regression head starts
        at its training labels' mean, the constant predictor: from a zero bias its first steps would only move the
        output to the labels' scale (about 2.7 on STS-B), which a head reading two or three dimensions never
        reaches in a short run, and whose large gradients shake a fine-tuned encoder."""
        with torch.no_grad():
            self.classifier.bias.fill_(float(value))

    def selected(self, vectors: torch.Tensor) -> torch.Tensor:
        """``[B, n_layers, H]`` -> the selected features ``[B, n_layers * len(dims)]`` (before normalisation): what
        the standardisation statistics are computed over."""
        if self.pooler_dense is not None and self.pooler_activation is not None:
            if self.pooler_dropout is not None:
                vectors = self.pooler_dropout(vectors)
            vectors = self.pooler_activation(self.pooler_dense(vectors))
            if self.pooler_norm is not None:
                vectors = self.pooler_norm(vectors)
        return vectors.index_select(-1, self.dims).flatten(1)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """The feature normalisation of ``spec.feature_norm`` on selected features ``[B, F]``."""
        kind = self.spec.feature_norm
        if kind == "standardize":
            return (x - self.feature_mean.to(x.dtype)) / self.feature_std.to(x.dtype)
        if kind == "layernorm":
            return nn.functional.layer_norm(x, (x.shape[-1],), eps=LAYERNORM_EPS)
        return x

    def set_standardizer(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Fix the ``standardize`` statistics (per selected feature); a std at or below :data:`STD_FLOOR` is 1."""
        if self.spec.feature_norm != "standardize":
            raise ValueError(f"set_standardizer on a head with feature_norm={self.spec.feature_norm!r}")
        shape = (self.spec.in_features,)
        if tuple(mean.shape) != shape or tuple(std.shape) != shape:
            raise ValueError(f"standardizer of shape {tuple(mean.shape)}/{tuple(std.shape)}, expected {shape}")
        std = std.detach().float()
        with torch.no_grad():
            self.feature_mean.copy_(mean.detach().float())
            self.feature_std.copy_(torch.where(std > STD_FLOOR, std, torch.ones_like(std)))

    def features(self, vectors: torch.Tensor) -> torch.Tensor:
        """``[B, n_layers, H]`` -> the head's input ``[B, n_layers * len(dims)]`` (normalised, before dropout)."""
        return self.normalise(self.selected(vectors))

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.features(vectors))
        if self.hidden is not None:
            x = self.hidden(x)
        logits = self.classifier(x)
        return logits

    # --- serialisation: head_config.json + head.safetensors -------------------------------------------------------

    def save(self, folder: str | Path, *, seed: int = 0) -> None:
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
        folder = Path(folder)
        config_path, weights_path = folder / "head_config.json", folder / "head.safetensors"
        if not config_path.is_file() or not weights_path.is_file():
            raise BertscopeError(f"{folder} holds no bertscope selecting head (head_config.json + head.safetensors)")
        try:
            values = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BertscopeError(f"cannot read {config_path}: {exc}") from None
        head = cls(HeadSpec.from_dict(values), seed=int(values.get("seed", 0)))
        try:
            state = load_file(str(weights_path), device=str(map_location))
        except (SafetensorError, OSError) as exc:  # truncated or damaged: one line naming the file
            raise BertscopeError(f"cannot read {weights_path}: {str(exc).splitlines()[0] if str(exc) else exc!r}; "
                                 "save the model again") from None
        head.load_state_dict(state)
        return head
