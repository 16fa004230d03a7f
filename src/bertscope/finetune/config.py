"""The options of ``finetune`` and ``predict``. ``finetune``'s config composes the option groups, each declared
beside the code that reads it: the model (:mod:`bertscope.models.options`), the data (:mod:`bertscope.data.options`),
the head and selection, cache, checkpoints and output (:mod:`bertscope.finetune.options`), the optimisation
(:mod:`bertscope.finetune.optim`) and logging/tracking (:mod:`bertscope.finetune.tracking`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bertscope.core.config import Config, check_seed, group, opt
from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_seed_list
from bertscope.data.options import DataOptions, env_glue_dir
from bertscope.finetune.optim import OptimOptions
from bertscope.finetune.options import (
    FEATURE_NORMS,
    CacheOptions,
    CheckpointOptions,
    FinetuneOutput,
    SelectionOptions,
    resolve_feature_norm,
)
from bertscope.finetune.tracking import TrackingOptions, needs_folder, parse_report_to
from bertscope.models.options import ATTENTION_CHOICES, ATTENTION_HELP, ModelOptions

__all__ = ['FinetuneConfig', 'PredictConfig']


@dataclass(frozen=True, init=False)
class FinetuneConfig(Config):
    """Fine-tune on a GLUE task with a head that sees only a chosen token vector, layer(s) and hidden dimensions
    (paper 2); the encoder may be frozen in part or whole."""

    command = "finetune"

    encoder: ModelOptions = group(ModelOptions)
    output: FinetuneOutput = group(FinetuneOutput)
    data: DataOptions = group(DataOptions)
    optim: OptimOptions = group(OptimOptions)
    selection: SelectionOptions = group(SelectionOptions)
    cache: CacheOptions = group(CacheOptions)
    tracking: TrackingOptions = group(TrackingOptions)
    checkpoints: CheckpointOptions = group(CheckpointOptions)
    seeds: str | None = opt(None, "run once per seed of this list (e.g. 1,2,3 or 1-5; replaces --seed) and report "
                                  "each metric's mean, std, n and 95 percent interval over them (finetune: "
                                  "OUT/seed-<s>/ per seed and OUT/seeds.json; studies: every point and comparison)",
                            metavar="S[,S...]")

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
        self._validate_reporting()
        if self.cache.cache_features and self.command == "finetune" and not self.selection.encoder_frozen:
            raise BertscopeError("--cache-features needs a fully frozen encoder: add --freeze encoder")
        if self.data.task is None:
            raise BertscopeError("--task is required (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli)")
        if self.seeds is not None:
            parse_seed_list(self.seeds, option="--seeds")

    def _validate_reporting(self) -> None:
        """--report-to's trackers that write here need a folder: --out (or a study's report_dir)."""
        trackers = parse_report_to(self.tracking.report_to)
        lacking = needs_folder(trackers) if self.output.out is None and self.tracking.report_dir is None else []
        if lacking:
            raise BertscopeError(f"--report-to {lacking[0]} needs --out: its files go under the output folder")


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
        check_seed(self.seed)
        if self.max_length is not None and self.max_length < 4:
            raise BertscopeError(f"--max-length must be at least 4, got {self.max_length}")
        if self.batch_size < 1:
            raise BertscopeError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.data_dir is None and env_glue_dir() is not None:
            object.__setattr__(self, "data_dir", env_glue_dir())
