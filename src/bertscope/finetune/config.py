"""The options of ``finetune`` and ``predict``: data, head and selection, freezing, optimisation,
precision, tracking, checkpoints and output."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bertscope.core.config import Config, opt
from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_seed_list
from bertscope.data.options import check_task_name, env_glue_dir
from bertscope.finetune.tracking import needs_folder, parse_report_to, require_installed
from bertscope.models.options import ATTENTION_CHOICES, ATTENTION_HELP, ModelOptions

__all__ = ['FEATURE_NORMS', 'FIT_METHODS', 'FinetuneConfig', 'PredictConfig', 'fit_is_sgd', 'probe_applies', 'resolve_feature_norm', 'validate_fit']


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
        check_task_name(self.task)
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
        if self.data_dir is None and env_glue_dir() is not None:
            object.__setattr__(self, "data_dir", env_glue_dir())
        self._validate_resume()
        validate_fit(self.fit, self.freeze, self.head, self.pooler)
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
        if self.data_dir is None and env_glue_dir() is not None:
            object.__setattr__(self, "data_dir", env_glue_dir())
