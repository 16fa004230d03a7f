"""The option groups of fine-tuning that are not the loop's: what the head reads and how it is fitted, the feature
cache, checkpoints, and what a run writes. Composed into ``finetune``'s and the studies' configs
(:mod:`bertscope.finetune.config`, :mod:`bertscope.studies.config`); no torch here, so ``--help`` stays fast."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bertscope.core.config import Options, opt
from bertscope.core.errors import BertscopeError
from bertscope.models.options import OutputOptions

__all__ = ["FEATURE_NORMS", "FIT_METHODS", "CacheOptions", "CheckpointOptions", "FinetuneOutput", "SelectionOptions",
           "fit_is_sgd", "probe_applies", "resolve_feature_norm", "validate_fit"]


#: ``--feature-norm`` values; ``auto`` resolves to one of the others (:func:`resolve_feature_norm`).
FEATURE_NORMS = ("auto", "none", "standardize", "layernorm")


def resolve_feature_norm(feature_norm: str, freeze: str) -> str:
    """``auto`` -> ``standardize`` when ``--freeze encoder`` (a fixed feature extractor, whose outlier dimensions
    stall a plain head), else ``none`` (fine-tuning moves the features; measured in docs/finetune.md). Decided from
    the options alone, so a run's id can say what its head did."""
    value = feature_norm.strip().lower()
    if value not in FEATURE_NORMS:
        raise BertscopeError(f"--feature-norm must be one of {', '.join(FEATURE_NORMS)}, got {feature_norm!r}")
    if value != "auto":
        return value
    return "standardize" if freeze.strip().lower() == "encoder" else "none"


#: How a head is fitted (``--fit``): the training loop, a converged probe, or the probe where it applies.
FIT_METHODS = ("auto", "sgd", "converged")


def probe_applies(freeze: str, head: str, pooler: bool) -> bool:
    """Whether options may give a fully frozen encoder and a linear head, the probe's conditions (``--freeze
    layers:LIST`` freezes everything only when the list covers the model; the pipeline checks that)."""
    return freeze.strip().lower() not in ("none", "embeddings") and head == "linear" and not pooler


def fit_is_sgd(options: Mapping[str, Any]) -> bool:
    """Whether a run's ``fit`` certainly trains its head with the sgd loop (as every run did before ``--fit``)."""
    fit = options.get("fit", "sgd")
    if fit in ("sgd", "converged"):
        return fit == "sgd"
    return not probe_applies(str(options.get("freeze", "none")), str(options.get("head", "linear")),
                             bool(options.get("pooler", False)))


def validate_fit(fit: str, freeze: str, head: str, pooler: bool) -> None:
    if fit != "converged":
        return
    if freeze.strip().lower() in ("none", "embeddings"):
        raise BertscopeError(f"--fit converged needs a fully frozen encoder; --freeze {freeze} leaves it trainable "
                             "(add --freeze encoder, or use --fit sgd)")
    if head != "linear" or pooler:
        raise BertscopeError("--fit converged solves a linear head; drop --head mlp2 / --pooler (or use --fit sgd)")


@dataclass(frozen=True)
class SelectionOptions(Options):
    """What the selecting head reads (token, layers, dimensions), what it is, what stays frozen and how it is fitted
    (paper 2's head; :mod:`bertscope.finetune.selection`, :mod:`bertscope.finetune.head`)."""

    token: str = opt("cls", "token vector the head reads: cls, max-norm, mean, max (element-wise) or index:K "
                            "(position K; negative from the end)")
    include_special: bool = opt(False, "let max-norm/mean/max pooling choose [CLS]/[SEP] too")
    layer: str = opt("-1", "hidden state(s) the head reads, counted 0..L (0 = embedding output, l = output of "
                           "transformer layer l): N, -N from the top, A-B or all; a comma list concatenates in the "
                           "order given", metavar="HIDDEN_STATES")
    dims: str = opt("all", "hidden dimensions the head sees: all, first:K, random:K (seeded by --seed) or "
                           "idx:LIST of indices 0..H-1 (e.g. idx:3,17 or idx:0-9; kept in the order given)")
    head: str = opt("linear", "head: linear, or mlp2 (two fully connected layers with GELU)",
                    choices=("linear", "mlp2"))
    head_hidden: int = opt(256, "width of the mlp2 head's hidden layer")
    dropout: float = opt(0.1, "dropout on the selected features (and inside mlp2)")
    pooler: bool = opt(False, "pass the selected vector(s) through the checkpoint's pretrained pooler (dense+tanh) "
                              "first, trained with the head")
    freeze: str = opt("none", "frozen part: none, embeddings, encoder, or layers:LIST of hidden-state indices "
                              "(0 = embeddings, l = transformer layer l; e.g. layers:0-3)")
    fit: str = opt("auto", "how the head is fitted: sgd (the training loop: AdamW over --epochs), converged (a probe "
                          "solved to convergence on the frozen features: L2 logistic regression by full-batch "
                          "L-BFGS, ridge for STS-B, L2 chosen on held-out training rows; needs a fully frozen "
                          "encoder and a linear head) or auto (converged when the encoder is fully frozen and the "
                          "head linear, else sgd)", choices=FIT_METHODS)
    feature_norm: str = opt("auto", "normalise the head's selected features: none (the papers' plain head), "
                                    "standardize (per-dimension mean/std of the training split, from the pretrained "
                                    "encoder, fixed), layernorm (no learned affine), or auto (standardize with "
                                    "--freeze encoder, else none; see docs/finetune.md)", choices=FEATURE_NORMS)

    @property
    def encoder_frozen(self) -> bool:
        """``--freeze encoder`` (or ``layers:LIST``): the options leave no whole encoder trainable."""
        return self.freeze.strip().lower() not in ("none", "embeddings")

    @property
    def resolved_feature_norm(self) -> str:
        """What ``--feature-norm`` means for this run (``auto`` resolved): none, standardize or layernorm."""
        return resolve_feature_norm(self.feature_norm, self.freeze)

    def validate(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise BertscopeError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.head_hidden < 1:
            raise BertscopeError(f"--head-hidden must be at least 1, got {self.head_hidden}")
        validate_fit(self.fit, self.freeze, self.head, self.pooler)
        if self.fit == "auto" and fit_is_sgd(self.to_dict()):  # no probe can apply: auto is the training loop, and
            object.__setattr__(self, "fit", "sgd")  # says so (sgd is --fit's neutral value: the run keeps its id)


@dataclass(frozen=True)
class CacheOptions(Options):
    """The frozen encoder's fast path: every layer's token vectors computed once and kept on disk
    (:mod:`bertscope.finetune.features`)."""

    cache_features: bool = opt(False, "fast path for a frozen encoder (--freeze encoder): compute every layer's "
                                      "token vectors once, keep them on disk, train the head on them (same numbers)")
    cache_dir: str | None = opt(None, "feature cache folder (default $BERTSCOPE_CACHE/features or "
                                      "~/.cache/bertscope/features)", metavar="DIR")


@dataclass(frozen=True)
class CheckpointOptions(Options):
    """Checkpoints and exact resume (:mod:`bertscope.finetune.checkpoint`); they never change a run's numbers."""

    resume: bool = opt(False, "continue an interrupted run from its last checkpoint in OUT/checkpoints (the same "
                              "numbers as a run that never stopped); with none there, start fresh")
    keep_checkpoints: bool = opt(False, "keep the last checkpoint when the run completes (default: removed)")
    checkpoint_every: int = opt(0, "also write a checkpoint every this many optimizer steps (0 = at the end of each "
                                   "epoch only; Ctrl-C and SIGTERM always write one at the step in hand)",
                                metavar="STEPS")

    def validate(self) -> None:
        if self.checkpoint_every < 0:
            raise BertscopeError(f"--checkpoint-every must not be negative, got {self.checkpoint_every}")


@dataclass(frozen=True)
class FinetuneOutput(OutputOptions):
    """What a fine-tuning run writes besides its results: the model, test predictions; and whether it replaces."""

    save_model: bool = opt(False, "save the fine-tuned encoder (plain transformers folder) and the head in OUT/model")
    overwrite: bool = opt(False, "replace an existing OUT/results.json")
    predict_test: bool = opt(False, "also predict the task's test split(s) and write them in the GLUE server's "
                                    "submission format to OUT/glue_submission/ (needs --out)")

    def validate(self) -> None:
        if self.save_model and self.out is None:
            raise BertscopeError("--save-model needs --out DIR")
        if self.predict_test and self.out is None:
            raise BertscopeError("--predict-test needs --out DIR (the submission files go to OUT/glue_submission)")
