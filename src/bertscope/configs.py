"""The options of every bertscope command, one frozen dataclass each.

These classes generate the CLI (``bertscope <command> --help``), validate sweep specs and are written next to every
result. Options shared by several commands live in small base classes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bertscope.config import Config, opt
from bertscope.distributed import refuse_data_parallel
from bertscope.errors import BertscopeError
from bertscope.options import parse_name_list, parse_seed_list, parse_token_list
from bertscope.tracking import needs_folder, parse_report_to, require_installed

__all__ = ["CompareConfig", "DeepenConfig", "FinetuneConfig", "FitHeadOptions", "LayerScanConfig", "ModelOptions", "ReconstructConfig",
    "ReportConfig", "StatusConfig", "SweepConfig", "TextOptions"]
__all__ += ["PredictConfig"]
__all__ += ["FIT_METHODS", "fit_is_sgd", "probe_applies"]
__all__ += ["FEATURE_NORMS", "resolve_feature_norm"]
__all__ += ["ATTENTION_CHOICES", "ATTENTION_HELP"]
__all__ += ["CrossConfig", "DimsConfig", "LayersConfig", "StudyOptions", "TokensConfig"]


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


#: ``--attention`` values (``families.ATTENTION_IMPLEMENTATIONS`` and ``auto``; configs import no torch, so they are
#: spelled out here and tests/test_attention.py checks that they agree).
ATTENTION_CHOICES = ("auto", "sdpa", "eager")
ATTENTION_HELP = ("attention implementation: auto (the family's first choice: sdpa where transformers has it, else "
                  "eager), sdpa (PyTorch's fused scaled_dot_product_attention kernel: faster, the same numbers up to "
                  "float rounding) or eager (plain matrix products, the reference: needed e.g. to read attention "
                  "weights); recorded in the results, never part of a run's identity")


def _env_glue_dir() -> str | None:
    return os.environ.get("BERTSCOPE_GLUE_DIR") or None


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


def _validate_fit(fit: str, freeze: str, head: str, pooler: bool) -> None:
    if fit != "converged":
        return
    if freeze.strip().lower() in ("none", "embeddings"):
        raise BertscopeError(f"--fit converged needs a fully frozen encoder; --freeze {freeze} leaves it trainable "
                             "(add --freeze encoder, or use --fit sgd)")
    if head != "linear" or pooler:
        raise BertscopeError("--fit converged solves a linear head; drop --head mlp2 / --pooler (or use --fit sgd)")


def _check_task_name(task: str | None) -> None:
    """An unknown task name fails when the config is built (so a sweep's ``--dry-run`` reports it): the name lookup
    only, no data is read."""
    if task is not None:
        from bertscope.glue import get_task

        get_task(task)


@dataclass(frozen=True)
class ModelOptions(Config):
    """Options for every command that loads a model."""

    model: str | None = opt(None, "Hugging Face hub id or local model folder; default: the embedded MiniLM-L6-H384",
                            metavar="ID_OR_PATH")
    device: str = opt("auto", "torch device: auto (cuda when available), cpu, cuda, cuda:N")
    dtype: str = opt("float32", "compute dtype", choices=("float32", "bfloat16", "float16"))
    attention: str = opt("auto", ATTENTION_HELP, choices=ATTENTION_CHOICES)
    seed: int = opt(0, "random seed (data subsets, masking, initialisation)")
    batch_size: int = opt(32, "examples per batch")
    max_length: int = opt(128, "maximum tokens per example (longer inputs are truncated)")
    out: str | None = opt(None, "output folder for result files (JSON, CSV, PNG)", metavar="DIR")
    progress: bool = opt(True, "show progress bars")

    def validate(self) -> None:
        if self.batch_size < 1:
            raise BertscopeError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_length < 4:
            raise BertscopeError(f"--max-length must be at least 4, got {self.max_length}")


@dataclass(frozen=True)
class TextOptions(Config):
    """Where the sentences come from: the built-in sample, a text file, or a GLUE task split."""

    texts: str | None = opt(None, "text file, one sentence per line, or builtin (default: the built-in sample's "
                                  "measure half, never used to fit a head), builtin-fit, builtin-all",
                            metavar="FILE")
    task: str | None = opt(None, "GLUE task to read sentences from (e.g. sst2, mrpc)")
    split: str = opt("validation", "GLUE split: train, validation (dev) or test")
    data_dir: str | None = opt(None, "local GLUE folder in the original tsv layout (env BERTSCOPE_GLUE_DIR); "
                                     "default: the Hugging Face hub", metavar="DIR")
    max_examples: int | None = opt(None, "use at most this many sentences (a seeded subset)")

    def validate(self) -> None:
        if self.texts is not None and self.task is not None:
            raise BertscopeError("give either --texts or --task, not both")
        _check_task_name(self.task)
        if self.max_examples is not None and self.max_examples < 1:
            raise BertscopeError(f"--max-examples must be at least 1, got {self.max_examples}")
        if self.data_dir is None and _env_glue_dir() is not None:
            object.__setattr__(self, "data_dir", _env_glue_dir())


@dataclass(frozen=True)
class FitHeadOptions(Config):
    """How a masked-LM head is fitted for checkpoints that ship none (same options and defaults as reconstruct)."""

    fit_corpus: str = opt("auto", "text the fitted head is trained on: auto (GLUE training texts when a GLUE folder "
                                  "or the hub is at hand, else the built-in fit half, with a warning), glue, builtin "
                                  "(the built-in sample's fit half), source (the measured sentences: an overlap) or "
                                  "a text file", metavar="SOURCE")
    fit_steps: int = opt(300, "optimisation steps when fitting a head")
    fit_lr: float = opt(6e-3, "AdamW learning rate when fitting a head")
    fit_batch_size: int = opt(32, "sentences per step when fitting a head")
    fit_mask_prob: float = opt(0.15, "share of tokens selected for BERT-style 80/10/10 masking when fitting a head")
    fit_tie: bool = opt(True, "tie the fitted head's decoder to the model's (frozen) input embeddings")
    head_cache: str | None = opt(None, "folder of cached fitted heads (env BERTSCOPE_CACHE; default "
                                       "~/.cache/bertscope)", metavar="DIR")
    refit: bool = opt(False, "fit the head again even if a cached one matches")
    # ---- fit corpus vs measured text (issue 11, 6d/6e; engineer L2)
    fit_overlap: str = opt("refuse", "measured sentences found in the fit corpus (exact match after normalisation): "
                                     "refuse (one-line error) or allow (measure, and flag the result)",
                           choices=("refuse", "allow"))
    fit_curve: bool = opt(True, "also refit on 1/8, 1/4, 1/2 of the fit sentences (cached features) and report "
                                "how the held-out masked-token accuracy grows with the fit corpus")

    def validate(self) -> None:
        if self.fit_steps < 1:
            raise BertscopeError(f"--fit-steps must be at least 1, got {self.fit_steps}")
        if not self.fit_lr > 0:
            raise BertscopeError(f"--fit-lr must be positive, got {self.fit_lr}")
        if self.fit_batch_size < 1:
            raise BertscopeError(f"--fit-batch-size must be at least 1, got {self.fit_batch_size}")
        if not 0.0 < self.fit_mask_prob < 1.0:
            raise BertscopeError(f"--fit-mask-prob must be in (0, 1), got {self.fit_mask_prob}")


@dataclass(frozen=True)
class ReconstructConfig(FitHeadOptions, TextOptions, ModelOptions):
    """Apply the masked-LM output head to every hidden layer and measure how well the input is reconstructed."""

    command = "reconstruct"

    head: str = opt("auto", "MLM head: the checkpoint's own (pretrained), one fitted on the frozen final layer (fit), "
                            "or pretrained when present else fit (auto)", choices=("auto", "pretrained", "fit"))
    head_part: str = opt("full", "with a pretrained head: full (transform+LayerNorm+decoder+bias) or decoder only",
                         choices=("full", "decoder"))
    include_special: bool = opt(False, "count special tokens ([CLS], [SEP], ...) in the metrics")
    mask_prob: float = opt(0.0, "mask inputs BERT-style (80/10/10) with this probability first; masked and unmasked "
                                "positions are then reported separately")
    layers: str | None = opt(None, "decode only these hidden states, counted 0..L (0 = embedding output, l = output "
                                   "of transformer layer l): e.g. 0,6,12, 0-3, -1 or all; default: all of 0..L",
                             metavar="HIDDEN_STATES")
    examples: int = opt(3, "decode this many sentences token by token at every layer into reconstruct.json")
    # ---- the lens closer to paper 1 (issue 11 item 6 a-c)
    head_from: str = opt("auto", "whose head decodes the layers: auto (the original's when the model folder records "
                                 "a deepen origin, else the model's own), self, original (the recorded deepen "
                                 "origin; an error when none is recorded) or a model folder / hub id; --head then "
                                 "chooses between that model's pretrained head and one fitted on its final layer",
                         metavar="auto|self|original|PATH")
    token_view: int = opt(3, "draw a layers x tokens grid (top-1 decoded token, input token's probability) of this "
                             "many measured sentences into --out as token_view.png/.svg/.pdf and token_view.html; "
                             "0 = none")
    token_view_sentences: str | None = opt(None, "sentences for the token view instead of measured ones, separated "
                                                 "by '|' (e.g. 'The cat sat.|Why?')", metavar="TEXT")

    def validate(self) -> None:
        ModelOptions.validate(self)
        TextOptions.validate(self)
        if not 0.0 <= self.mask_prob < 1.0:
            raise BertscopeError(f"--mask-prob must be in [0, 1), got {self.mask_prob}")
        FitHeadOptions.validate(self)
        if self.examples < 0:
            raise BertscopeError(f"--examples must be at least 0, got {self.examples}")
        # ---- the lens closer to paper 1 (issue 11 item 6 a-c)
        if not self.head_from.strip():
            raise BertscopeError("--head-from must be auto, self, original or a model folder / hub id")
        if self.token_view < 0:
            raise BertscopeError(f"--token-view must be at least 0, got {self.token_view}")
        if self.token_view_sentences is not None and not any(
                s.strip() for s in self.token_view_sentences.split("|")):
            raise BertscopeError("--token-view-sentences holds no sentence (separate sentences by '|')")


@dataclass(frozen=True)
class DeepenConfig(Config):
    """Deepen or shrink an encoder by copying/removing layers (no training); saves a verified Hugging Face folder."""

    command = "deepen"

    model: str | None = opt(None, "Hugging Face hub id or local model folder; default: the embedded MiniLM-L6-H384",
                            metavar="ID_OR_PATH")
    out: str | None = opt(None, "folder to write the new checkpoint to (required; refused if it exists)",
                          metavar="DIR")
    duplicate: str | None = opt(None, "transformer layers to duplicate, counted 0..L-1 (0 = the first transformer "
                                      "layer, -1 = the last): one (6), a range (6-8, inclusive), a list (2,6-8) or all",
                                metavar="BLOCKS")
    copies: int = opt(1, "extra copies of each duplicated layer")
    placement: str = opt("adjacent", "where copies go: right after each layer (adjacent: 6,6,7,7) or the whole "
                                     "selection repeated after itself (block: 6,7,6,7)",
                         choices=("adjacent", "block"))
    remove: str | None = opt(None, "transformer layers to remove, counted 0..L-1 (0 = the first transformer layer, "
                                   "-1 = the last): one, a range or a list (e.g. 3,7)", metavar="BLOCKS")
    layer_map: str | None = opt(None, "the new stack spelled out, in order, as source transformer-layer indices "
                                      "0..L-1 (0 = the first transformer layer), e.g. 0,1,2,2,3 or 0-2,2-3",
                                metavar="BLOCK_MAP")
    overwrite: bool = opt(False, "replace --out if it already exists (the old folder is kept until the new one "
                                 "is complete)")
    verify: bool = opt(True, "reload the saved folder and check depth, storage and outputs before publishing it")
    device: str = opt("auto", "torch device for verification: auto (cuda when available), cpu, cuda, cuda:N")
    seed: int = opt(0, "random seed (verification inputs)")

    def validate(self) -> None:
        given = [name for name, value in (("--duplicate", self.duplicate), ("--remove", self.remove),
                                          ("--layer-map", self.layer_map)) if value is not None]
        if len(given) != 1:
            raise BertscopeError("give exactly one of --duplicate, --remove or --layer-map"
                                 + (f" (got {', '.join(given)})" if given else ""))
        if self.out is None:
            raise BertscopeError("--out is required: the folder the new checkpoint is written to")
        if self.copies < 1:
            raise BertscopeError(f"--copies must be at least 1, got {self.copies}")
        if self.duplicate is None and (self.copies != 1 or self.placement != "adjacent"):
            raise BertscopeError("--copies and --placement only apply to --duplicate")


@dataclass(frozen=True)
class CompareConfig(FitHeadOptions, TextOptions, ModelOptions):
    """Agreement between an original model and a variant (e.g. a deepened one) on real text, layer by layer."""

    command = "compare"

    variant: str | None = opt(None, "the variant's model folder or hub id (required)", metavar="ID_OR_PATH")
    head: str = opt("auto", "MLM head for the agreement metrics: each checkpoint's own (pretrained), one fitted on "
                            "the original's frozen final layer and shared by both (fit), or pretrained when both "
                            "have one else fit (auto)", choices=("auto", "pretrained", "fit"))
    include_special: bool = opt(False, "count special tokens ([CLS], [SEP], ...) in the metrics")
    curves: bool = opt(True, "also compute both models' per-layer reconstruction curves (the lens)")

    def validate(self) -> None:
        ModelOptions.validate(self)
        TextOptions.validate(self)
        FitHeadOptions.validate(self)
        if self.variant is None:
            raise BertscopeError("--variant is required: the model to compare against --model")


@dataclass(frozen=True)
class LayerScanConfig(FitHeadOptions, TextOptions, ModelOptions):
    """Build every single-layer variant (one layer duplicated, or removed) in memory and measure its agreement."""

    command = "layer-scan"

    op: str = opt("duplicate", "edit applied to each layer in turn", choices=("duplicate", "remove"))
    layers: str | None = opt(None, "scan only these transformer layers, counted 0..L-1 as deepen counts them (0 = the "
                                   "first transformer layer): e.g. 0-5, 2,7 or -1; default: all",
                             metavar="BLOCKS")
    head: str = opt("auto", "MLM head: the checkpoint's own (pretrained), one fitted on the frozen final layer "
                            "(fit), or pretrained when present else fit (auto)", choices=("auto", "pretrained", "fit"))
    include_special: bool = opt(False, "count special tokens ([CLS], [SEP], ...) in the metrics")
    variants_per_pass: int = opt(4, "variants stacked into one forward call per layer: bigger matrix products (faster "
                                    "on a GPU), that many times one batch's activation memory")

    def validate(self) -> None:
        ModelOptions.validate(self)
        TextOptions.validate(self)
        FitHeadOptions.validate(self)
        if self.variants_per_pass < 1:
            raise BertscopeError(f"--variants-per-pass must be at least 1, got {self.variants_per_pass}")


@dataclass(frozen=True)
class SweepConfig(Config):
    """Run every configuration of an experiment spec (YAML) into a resumable SQLite result store."""

    command = "sweep"

    spec: str | None = opt(None, "experiment spec (YAML): command, base options, grid axes", positional=True,
                           metavar="SPEC")
    store: str = opt("results.db", "SQLite result store (created if missing; re-running resumes it)", metavar="DB")
    executor: str = opt("local", "where runs execute: local processes or a Ray cluster", choices=("local", "ray"))
    workers: int | None = opt(None, "local: worker processes (default 1: runs in this process); ray without "
                                    "--address: CPUs of the local Ray instance (default: all)")
    address: str | None = opt(None, "Ray cluster address (auto, host:port or ray://host:port); default: start a "
                                    "local Ray instance", metavar="ADDR")
    cpus_per_run: float | None = opt(None, "Ray: CPUs each run reserves (overrides the spec's resources; default 1)")
    gpus_per_run: float | None = opt(None, "Ray: GPUs each run reserves (overrides the spec's resources; default 0)")
    threads: int | None = opt(None, "torch threads per local worker (default: CPU count / workers)")
    runs_dir: str | None = opt(None, "folder for each run's own output folder (named by run id); default: "
                                     "<store>-runs/ beside the store", metavar="DIR")
    retry_failed: bool = opt(False, "run failed runs again (done runs are always kept)")
    dry_run: bool = opt(False, "validate the spec and list its runs with their stored status; run nothing (never "
                               "imports the spec's plugins)")
    allow_plugins: bool = opt(False, "import the spec's plugins (their code runs in the driver and every worker); "
                                     "without it a spec with plugins is refused")
    plugins_from: str = opt("spec", "with --allow-plugins, where plugin files may come from: spec (the spec's "
                                    "folder or below), a folder (in it or below), or any (also module names)",
                            metavar="spec|any|DIR")
    progress: bool = opt(True, "show overall progress")

    def validate(self) -> None:
        refuse_data_parallel(self.command)  # a sweep parallelises runs itself; under torchrun it would run n times
        if not self.spec:
            raise BertscopeError("give the experiment spec: bertscope sweep SPEC.yaml --store results.db")
        if self.workers is not None and self.workers < 1:
            raise BertscopeError(f"--workers must be at least 1, got {self.workers}")
        if self.address is not None and self.executor != "ray":
            raise BertscopeError("--address needs --executor ray")
        for name, value in (("--cpus-per-run", self.cpus_per_run), ("--gpus-per-run", self.gpus_per_run)):
            if value is not None and value < 0:
                raise BertscopeError(f"{name} must not be negative, got {value}")
        if self.threads is not None and self.threads < 1:
            raise BertscopeError(f"--threads must be at least 1, got {self.threads}")
        if self.plugins_from != "spec" and not self.allow_plugins:
            raise BertscopeError("--plugins-from says where plugins may come from; add --allow-plugins to import them")
        if self.plugins_from not in ("spec", "any") and not os.path.isdir(os.path.expanduser(self.plugins_from)):
            raise BertscopeError(f"--plugins-from must be spec, any or an existing folder, got {self.plugins_from!r}")


@dataclass(frozen=True)
class StatusConfig(Config):
    """Counts of a result store's runs by status, the slowest runs and the failed ones with their errors."""

    command = "status"

    store: str = opt("results.db", "SQLite result store written by `bertscope sweep`", metavar="DB")
    sweep: str | None = opt(None, "only this sweep (its spec's name); default: every run in the store")
    slowest: int = opt(5, "how many of the slowest finished runs to list")
    failed: int = opt(20, "how many failed runs to list (with their errors)")

    def validate(self) -> None:
        if self.slowest < 0 or self.failed < 0:
            raise BertscopeError("--slowest and --failed must not be negative")


@dataclass(frozen=True)
class ReportConfig(Config):
    """Build a Markdown and a self-contained HTML report (figures as PNG, SVG and PDF; tables as CSV and LaTeX) from a
    result store."""

    command = "report"

    store: str = opt("results.db", "SQLite result store written by `bertscope sweep`", metavar="DB")
    out: str = opt("report", "output folder: report.md, report.html, plots/ (PNG, SVG, PDF) and tables/ (CSV, LaTeX)", metavar="DIR")
    sweep: str | None = opt(None, "only this sweep (its spec's name); default: every sweep in the store")
    title: str | None = opt(None, "report title (default: the store's file name)")
    metric: str | None = opt(None, "metric key for the GLUE-score sections (default: each task's official "
                                   "main metric when present, else the first metric)")


@dataclass(frozen=True)
class FinetuneConfig(ModelOptions):
    """Fine-tune on a GLUE task with a head that sees only a chosen token vector, layer(s) and hidden dimensions
    (paper 2); the encoder may be frozen in part or whole."""

    command = "finetune"

    task: str | None = opt(None, "GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli")
    data_dir: str | None = opt(None, "local GLUE folder in the original tsv layout (env BERTSCOPE_GLUE_DIR); "
                                     "default: the Hugging Face hub", metavar="DIR")
    max_train: int | None = opt(None, "train on a seeded random subset of this many examples")
    max_eval: int | None = opt(None, "evaluate on a seeded random subset of this many examples (per dev split)")
    eval_split: str = opt("auto", "dev split(s) to evaluate each epoch: auto (validation; MNLI matched and "
                                  "mismatched), or a split name / comma list")
    bad_rows: str = opt("error", "malformed tsv rows: error (stop, naming file and line) or skip (skip them and "
                                 "list them in results.json)", choices=("error", "skip"))
    epochs: int = opt(3, "training epochs")
    lr: float = opt(2e-5, "peak learning rate of the encoder (AdamW)")
    head_lr: float | None = opt(None, "peak learning rate of the head; default: --lr, or 1e-3 when the encoder "
                                      "is entirely frozen")
    weight_decay: float = opt(0.01, "AdamW weight decay (not applied to biases and norm weights)")
    warmup_ratio: float = opt(0.1, "fraction of the steps with linear warmup, then linear decay to 0")
    grad_clip: float = opt(1.0, "clip the gradient norm to this value (0 = off)")
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
    group_by_length: bool = opt(True, "batch examples of similar length together (less padding)")
    eval_batch_size: int | None = opt(None, "examples per evaluation batch (default: --batch-size)")
    save_model: bool = opt(False, "save the fine-tuned encoder (plain transformers folder) and the head in OUT/model")
    overwrite: bool = opt(False, "replace an existing OUT/results.json")
    predict_test: bool = opt(False, "also predict the task's test split(s) and write them in the GLUE server's "
                                    "submission format to OUT/glue_submission/ (needs --out)")
    cache_features: bool = opt(False, "fast path for a frozen encoder (--freeze encoder): compute every layer's "
                                      "token vectors once, keep them on disk, train the head on them (same numbers)")
    cache_dir: str | None = opt(None, "feature cache folder (default $BERTSCOPE_CACHE/features or "
                                      "~/.cache/bertscope/features)", metavar="DIR")
    report_to: str = opt("none", "experiment trackers for the training curves, dev metrics and options: none, "
                                 "tensorboard, mlflow, wandb, a comma list or all (files under --out; see "
                                 "docs/finetune.md, Trackers)", metavar="TRACKERS")
    run_name: str | None = opt(None, "the run's name in the trackers (default: <command>-<task>-<out folder "
                                     "name>; a sweep names each run by its run id)", metavar="NAME")
    log_every: int = opt(10, "report the training loss to the trackers (the mean over those steps) and check that "
                             "it is finite every this many optimizer steps", metavar="STEPS")
    report_dir: str | None = opt(None, "folder the trackers write under (default: --out; a study's runs: the "
                                       "study's --out)", cli=False)
    log: str = opt("auto", "what training prints: auto (progress bars on a terminal, plain timestamped lines when "
                           "stdout is not one, e.g. a batch job), bar, plain, or off (nothing); --no-progress drops "
                           "the bars and step lines but keeps one line per epoch", choices=("auto", "bar", "plain", "off"))
    log_seconds: float = opt(30.0, "with plain logs: at most one step line (step, loss, examples/s, ETA) per this many "
                                   "seconds, read every --log-every steps", metavar="SECONDS")
    on_divergence: str = opt("stop", "a NaN or infinite training loss: stop (one-line error naming epoch and step, "
                                     "no results.json) or continue", choices=("stop", "continue"))
    # ---- seeds and statistics (issue 11, item 4)
    seeds: str | None = opt(None, "run once per seed of this list (e.g. 1,2,3 or 1-5; replaces --seed) and report "
                                  "each metric's mean, std, n and 95 percent interval over them (finetune: "
                                  "OUT/seed-<s>/ per seed and OUT/seeds.json; studies: every point and comparison)",
                            metavar="S[,S...]")
    # ---- resume (issue 12): checkpoints and exact resume; result-neutral (finetune's NOT_IDENTITY)
    resume: bool = opt(False, "continue an interrupted run from its last checkpoint in OUT/checkpoints (the same "
                              "numbers as a run that never stopped); with none there, start fresh")
    keep_checkpoints: bool = opt(False, "keep the last checkpoint when the run completes (default: removed)")
    checkpoint_every: int = opt(0, "also write a checkpoint every this many optimizer steps (0 = at the end of each "
                                   "epoch only; Ctrl-C and SIGTERM always write one at the step in hand)",
                                metavar="STEPS")
    # ---- converged probes (issue 11, item 2)
    fit: str = opt("auto", "how the head is fitted: sgd (the training loop: AdamW over --epochs), converged (a probe "
                          "solved to convergence on the frozen features: L2 logistic regression by full-batch "
                          "L-BFGS, ridge for STS-B, L2 chosen on held-out training rows; needs a fully frozen "
                          "encoder and a linear head) or auto (converged when the encoder is fully frozen and the "
                          "head linear, else sgd)", choices=FIT_METHODS)
    # ---- feature normalisation on the selecting head (issue 11)
    feature_norm: str = opt("auto", "normalise the head's selected features: none (the papers' plain head), "
                                    "standardize (per-dimension mean/std of the training split, from the pretrained "
                                    "encoder, fixed), layernorm (no learned affine), or auto (standardize with "
                                    "--freeze encoder, else none; see docs/finetune.md)", choices=FEATURE_NORMS)

    @property
    def resolved_feature_norm(self) -> str:
        """What ``--feature-norm`` means for this run (``auto`` resolved): none, standardize or layernorm."""
        return resolve_feature_norm(self.feature_norm, self.freeze)

    @classmethod
    def identity_values(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """``feature_norm`` resolved, and left out when it is ``none`` (what every run did before the option
        existed), so runs stored earlier keep their ids and ``auto`` shares the id of what it resolves to."""
        out = dict(values)
        value = str(out.get("feature_norm", "")).strip().lower()
        if value in FEATURE_NORMS:  # anything else is left as it is (validating options is the config's job)
            resolved = resolve_feature_norm(value, str(out.get("freeze", "none")))
            if resolved == "none":
                del out["feature_norm"]
            else:
                out["feature_norm"] = resolved
        return out

    def validate(self) -> None:
        ModelOptions.validate(self)
        self._validate_reporting()
        if (self.cache_features and self.command == "finetune"
                and self.freeze.strip().lower() in ("none", "embeddings")):
            raise BertscopeError("--cache-features needs a fully frozen encoder: add --freeze encoder")
        if self.task is None:
            raise BertscopeError("--task is required (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli)")
        _check_task_name(self.task)
        for name in ("max_train", "max_eval", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise BertscopeError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.epochs < 1:
            raise BertscopeError(f"--epochs must be at least 1, got {self.epochs}")
        if self.lr <= 0 or (self.head_lr is not None and self.head_lr <= 0):
            raise BertscopeError("--lr and --head-lr must be positive")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise BertscopeError("--weight-decay and --grad-clip must not be negative")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise BertscopeError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise BertscopeError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.head_hidden < 1:
            raise BertscopeError(f"--head-hidden must be at least 1, got {self.head_hidden}")
        if self.save_model and self.out is None:
            raise BertscopeError("--save-model needs --out DIR")
        if self.predict_test and self.out is None:
            raise BertscopeError("--predict-test needs --out DIR (the submission files go to OUT/glue_submission)")
        if self.seeds is not None:
            parse_seed_list(self.seeds, option="--seeds")
        if self.data_dir is None and _env_glue_dir() is not None:
            object.__setattr__(self, "data_dir", _env_glue_dir())
        self._validate_resume()
        _validate_fit(self.fit, self.freeze, self.head, self.pooler)
        if self.fit == "auto" and fit_is_sgd(self.to_dict()):  # no probe can apply: auto is the training loop, and
            object.__setattr__(self, "fit", "sgd")  # says so (sgd is --fit's neutral value: the run keeps its id)

    def _validate_resume(self) -> None:
        """--checkpoint-every is a step count (finetune checks that --resume has an --out to continue)."""
        if self.checkpoint_every < 0:
            raise BertscopeError(f"--checkpoint-every must not be negative, got {self.checkpoint_every}")

    def _validate_reporting(self) -> None:
        """--report-to names known trackers whose packages are installed, and where they write."""
        trackers = parse_report_to(self.report_to)
        require_installed(trackers)
        lacking = needs_folder(trackers) if self.out is None and self.report_dir is None else []
        if lacking:
            raise BertscopeError(f"--report-to {lacking[0]} needs --out: its files go under the output folder")
        if self.log_every < 1:
            raise BertscopeError(f"--log-every must be at least 1, got {self.log_every}")
        if not self.log_seconds >= 0:
            raise BertscopeError(f"--log-seconds must not be negative, got {self.log_seconds}")


@dataclass(frozen=True)
class StudyOptions(FinetuneConfig):
    """Options every paper-2 study adds to finetune's: each run is a fine-tuning run with these options."""

    cache_features: bool = opt(True, "with --freeze encoder: train every run's head on cached token vectors (one "
                                     "encoder pass for the whole study, same numbers as without)")
    overwrite: bool = opt(False, "start over: discard the finished runs in OUT/runs (default: resume, skipping "
                                 "finished runs)")
    # ---- seeds and statistics (issue 11, item 4)
    tolerance: float = opt(0.01, "an 'as good as' claim (k dims vs all, a token vs [CLS], a layer vs the last, a "
                                 "task after later stages vs after its own) is supported when the 95 percent "
                                 "interval of the paired difference lies within +-this (in GLUE score, 0..1)")
    fit: str = opt("auto", "how each run's head is fitted: auto (a converged probe when the encoder is fully "
                           "frozen and the head linear, so a frozen point is a property of the features; else the "
                           "sgd training loop), sgd, or converged (see finetune --fit)", choices=FIT_METHODS)

    def validate(self) -> None:
        refuse_data_parallel(self.command)  # under torchrun: one line before any work (issue 12)
        FinetuneConfig.validate(self)
        if self.save_model:
            raise BertscopeError(f"{self.command} does not save models; use finetune --save-model for one run")
        if self.predict_test:
            raise BertscopeError(f"{self.command} does not write test predictions; use finetune --predict-test")
        if not self.tolerance >= 0:
            raise BertscopeError(f"--tolerance must not be negative, got {self.tolerance}")


@dataclass(frozen=True)
class DimsConfig(StudyOptions):
    """Score vs the number of hidden dimensions the head sees (seeded random subsets, optional ranked choices), or
    paper 2's search for effective dimensions (--find-effective)."""

    command = "dims"

    dims: str = opt("all", "set by the study (see --k)", cli=False)
    k: str = opt("1,2,3,5,10,50,all", "numbers of dimensions to try: a comma list of K in 1..H, ranges A-B, and "
                                       "all (= every dimension)", metavar="K[,K...]")
    samples: int = opt(5, "seeded random dimension subsets per K (the control)")
    rank_by: str = opt("random", "also pick the top-K dimensions by: the weights of the full-dimension run's head "
                                 "(weights) or the variance of the pretrained token vectors on the train set "
                                 "(variance); random = random subsets only",
                       choices=("random", "weights", "variance"))
    find_effective: bool = opt(False, "search effective dimensions: start from --start-subsets random subsets of "
                                      "--start dims, drop one at a time, recombine the marked ones into pairs")
    start: int = opt(3, "--find-effective: size of each starting subset")
    start_subsets: int = opt(5, "--find-effective: number of seeded starting subsets")
    hurt_threshold: float = opt(0.01, "--find-effective: a removal hurts when the score drops by more than this; a "
                                      "pair is verified when it scores within this of the start subsets' mean")
    max_pairs: int = opt(20, "--find-effective: at most this many recombined pairs to verify (0 = all)")

    def validate(self) -> None:
        StudyOptions.validate(self)
        if self.dims.strip().lower() != "all":
            raise BertscopeError("dims chooses the dimensions itself; use --k (and --samples, --rank-by)")
        if self.samples < 1:
            raise BertscopeError(f"--samples must be at least 1, got {self.samples}")
        if self.start < 2:
            raise BertscopeError(f"--start must be at least 2, got {self.start}")
        if self.start_subsets < 1 or self.max_pairs < 0:
            raise BertscopeError("--start-subsets must be at least 1 and --max-pairs not negative")
        if self.hurt_threshold < 0:
            raise BertscopeError(f"--hurt-threshold must not be negative, got {self.hurt_threshold}")


@dataclass(frozen=True)
class LayersConfig(StudyOptions):
    """The same head configuration read from each hidden layer 0..L in turn: score per layer."""

    command = "layers"

    layer: str = opt("-1", "set by the study (see --layers)", cli=False)
    layers: str | None = opt(None, "hidden states to scan, counted 0..L (0 = embedding output, l = output of "
                                   "transformer layer l): e.g. 0-6, 0,3,6, -3--1 or all; default: all of 0..L",
                             metavar="HIDDEN_STATES")

    def validate(self) -> None:
        StudyOptions.validate(self)
        if self.layer != "-1":
            raise BertscopeError("layers scans the layer itself; use --layers to choose which")


@dataclass(frozen=True)
class TokensConfig(StudyOptions):
    """The same head configuration reading different token vectors: CLS, max-norm, mean, element-wise max, fixed
    positions."""

    command = "tokens"

    token: str = opt("cls", "set by the study (see --tokens)", cli=False)
    tokens: str = opt("cls,max-norm,mean,max,index:1,index:-1", "token strategies to compare (comma list of cls, "
                                                                 "max-norm, mean, max, index:K)", metavar="T[,T...]")

    def validate(self) -> None:
        StudyOptions.validate(self)
        if self.token != "cls":
            raise BertscopeError("tokens varies the token itself; use --tokens to choose which")
        parse_token_list(self.tokens, option="--tokens")


@dataclass(frozen=True)
class CrossConfig(StudyOptions):
    """Cross-fine-tuning: one encoder fine-tuned on task A, then B, then C..., each task with its own head and
    dimensions; after every stage every task seen so far is evaluated with its own head (stage x task matrix)."""

    command = "cross"

    task: str | None = opt(None, "set by the study (see --tasks)", cli=False)
    dims: str = opt("all", "set by the study (see --dims-per-task)", cli=False)
    cache_features: bool = opt(False, "not used: cross fine-tunes the encoder", cli=False)
    cache_dir: str | None = opt(None, "not used: cross fine-tunes the encoder", cli=False)
    tasks: str | None = opt(None, "tasks in training order, e.g. sst2,rte,cola (required)", metavar="T1,T2,...")
    dims_per_task: str = opt("random:2", "each task's dimensions: random:K, first:K or all (with --dims-mode shared "
                                         "also idx:LIST)")
    dims_mode: str = opt("disjoint", "tasks get disjoint dimension sets (disjoint) or one shared set (shared)",
                         choices=("disjoint", "shared"))
    earlier_heads: str = opt("frozen", "after later stages, evaluate an earlier task with its head as trained in its "
                                       "own stage (frozen), or with its head retrained on the current, frozen encoder "
                                       "first (retrain: is the information still there?)",
                             choices=("frozen", "retrain"))
    single_task: bool = opt(True, "also fine-tune each task alone from the pretrained encoder (the single-task "
                                  "reference beside the matrix)")
    keep_checkpoint: bool = opt(True, "keep the encoder after each stage in OUT/checkpoint so an interrupted study "
                                      "resumes at the next stage")
    fit: str = opt("sgd", "not used: cross fine-tunes the encoder (its heads train with the sgd loop)", cli=False)

    def validate(self) -> None:
        refuse_data_parallel(self.command)  # under torchrun: one line before any work (issue 12)
        ModelOptions.validate(self)
        if self.task is not None:
            raise BertscopeError("cross takes --tasks (comma list in training order), not --task")
        names = parse_name_list(self.tasks, option="--tasks", at_least=2, example="sst2,rte,cola (training order)")
        if self.freeze.strip().lower() == "encoder":
            raise BertscopeError("cross fine-tunes the encoder from task to task; --freeze encoder leaves "
                                 "nothing to carry over")
        if self.dims.strip().lower() != "all":
            raise BertscopeError("cross sets each task's dimensions from --dims-per-task (and --dims-mode)")
        if self.save_model:
            raise BertscopeError("cross does not save models (see --keep-checkpoint)")
        if self.predict_test:
            raise BertscopeError("cross does not write test predictions; use finetune --predict-test")
        for name in names:  # every other option is checked as for finetune
            FinetuneConfig(**{**{k: getattr(self, k) for k in FinetuneConfig.field_names()}, "task": name,
                              "cache_features": False})


@dataclass(frozen=True)
class PredictConfig(Config):
    """Predict with a model saved by finetune --save-model, on a GLUE split (test included), a tsv or a text file:
    predictions.csv with label names and the probability of every label, and the official metrics where the data
    has labels."""

    command = "predict"

    model: str | None = opt(None, "folder written by finetune --save-model (OUT/model, or OUT itself)", metavar="DIR")
    task: str | None = opt(None, "GLUE task whose split to predict (default: the task the model was trained on)")
    split: str = opt("validation", "GLUE split: train, validation (dev) or test (no labels: no metrics)")
    data_dir: str | None = opt(None, "local GLUE folder in the original tsv layout (env BERTSCOPE_GLUE_DIR); "
                                     "default: the Hugging Face hub", metavar="DIR")
    max_examples: int | None = opt(None, "GLUE split: predict a seeded random subset of this many examples (as "
                                         "finetune --max-eval with the same --seed)")
    seed: int = opt(0, "seed of the --max-examples subset")
    tsv: str | None = opt(None, "tab-separated file with a header row, instead of a GLUE split", metavar="FILE")
    text_column: str | None = opt(None, "--tsv: column of the (first) text; default: the task's first text field")
    text_pair_column: str | None = opt(None, "--tsv: column of the second text (pair tasks); default: the task's "
                                             "second text field")
    label_column: str | None = opt(None, "--tsv: column of gold labels (names, ids or STS-B scores) to score "
                                         "against; default: 'label' when the file has one")
    texts: str | None = opt(None, "text file, one example per line (a pair: the two texts separated by a tab), "
                                  "instead of a GLUE split", metavar="FILE")
    max_length: int | None = opt(None, "maximum tokens per example; default: the length the model was fine-tuned "
                                       "with (its tokenizer's model_max_length)")
    batch_size: int = opt(32, "examples per batch")
    device: str = opt("auto", "torch device: auto (cuda when available), cpu, cuda, cuda:N")
    attention: str = opt("auto", ATTENTION_HELP, choices=ATTENTION_CHOICES)
    out: str | None = opt(None, "output folder: predictions.csv and predict.json", metavar="DIR")
    progress: bool = opt(True, "show a progress bar")

    def validate(self) -> None:
        if self.model is None:
            raise BertscopeError("--model is required: a folder written by finetune --save-model")
        if self.tsv is not None and self.texts is not None:
            raise BertscopeError("give either --tsv or --texts (or neither, for a GLUE split), not both")
        if self.tsv is None and (self.text_column, self.text_pair_column, self.label_column) != (None,) * 3:
            raise BertscopeError("--text-column, --text-pair-column and --label-column apply to --tsv only")
        if (self.tsv is not None or self.texts is not None) and (self.task is not None
                                                                 or self.max_examples is not None):
            raise BertscopeError("--task and --max-examples choose a GLUE split; with --tsv or --texts the model's "
                                 "own task gives the labels")
        if self.max_examples is not None and self.max_examples < 1:
            raise BertscopeError(f"--max-examples must be at least 1, got {self.max_examples}")
        if self.max_length is not None and self.max_length < 4:
            raise BertscopeError(f"--max-length must be at least 4, got {self.max_length}")
        if self.batch_size < 1:
            raise BertscopeError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.data_dir is None and _env_glue_dir() is not None:
            object.__setattr__(self, "data_dir", _env_glue_dir())


# ---- replicate (issue 11 item 5)
__all__ += ["ReplicateConfig"]

#: The budgets a user may name (``test`` is a hidden one for the test suite: a tiny checkpoint, seconds).
REPLICATE_BUDGETS = ("smoke", "small", "full")


@dataclass(frozen=True)
class ReplicateConfig(Config):
    """Run a paper's protocol through the sweep machinery (resumable) and write its claims table: claims.md,
    claims.json and claims.html (one row per claim: measurement, 95% interval over seeds, verdict, assumptions)."""

    command = "replicate"

    paper: str | None = opt(None, "which paper's claims: paper1 (Kao et al., the MLM head reads every layer; "
                                  "duplicated layers) or paper2 (Fukuhata & Kano, few dimensions, tokens, layers, "
                                  "frozen, cross)", positional=True, choices=("paper1", "paper2"), metavar="PAPER")
    budget: str = opt("smoke", "size of the protocol: smoke (minutes on a laptop CPU), small (about an hour, 3 "
                               "seeds) or full (the papers' scale, a GPU box); see docs/replicate.md",
                      metavar="smoke|small|full")
    model: str | None = opt(None, "model(s): hub id or local folder, a comma list for several (paper 1's 'across "
                                  "families' needs two families or more); default: the embedded MiniLM-L6-H384",
                            metavar="M[,M...]")
    tasks: str | None = opt(None, "GLUE tasks of the fine-tuning claims (comma list); default: the budget's "
                                  "(sst2 for smoke and small)", metavar="T1,T2,...")
    store: str | None = opt(None, "SQLite result store (re-running resumes it: finished runs are skipped); "
                                  "default: OUT/replicate.db", metavar="DB")
    out: str = opt("replicate", "output folder: claims.md, claims.json, claims.html and the spec it ran",
                   metavar="DIR")
    workers: int | None = opt(None, "local worker processes of the sweep (default 1: runs in this process)")
    retry_failed: bool = opt(False, "run failed runs again")
    dry_run: bool = opt(False, "write the spec and list its runs with their stored status; run nothing")
    progress: bool = opt(True, "show overall progress")

    def validate(self) -> None:
        if self.paper is None:
            raise BertscopeError("give the paper: bertscope replicate paper1|paper2 --budget smoke")
        if self.budget not in (*REPLICATE_BUDGETS, "test"):
            raise BertscopeError(f"--budget must be one of {', '.join(REPLICATE_BUDGETS)}; got {self.budget!r}")
        if self.model is not None:
            parse_name_list(self.model, option="--model", example="bert-base-uncased,roberta-base")
        if self.tasks is not None:
            for task in parse_name_list(self.tasks, option="--tasks", example="sst2,rte"):
                _check_task_name(task)
        if self.workers is not None and self.workers < 1:
            raise BertscopeError(f"--workers must be at least 1, got {self.workers}")
