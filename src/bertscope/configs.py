"""The options of every bertscope command, one frozen dataclass each.

These classes generate the CLI (``bertscope <command> --help``), validate sweep specs and are written next to every
result. Options shared by several commands live in small base classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bertscope.config import Config, opt
from bertscope.errors import BertscopeError

__all__ = ["ModelOptions", "ReconstructConfig", "TextOptions"]


def _env_glue_dir() -> str | None:
    return os.environ.get("BERTSCOPE_GLUE_DIR") or None


@dataclass(frozen=True)
class ModelOptions(Config):
    """Options for every command that loads a model."""

    model: str | None = opt(None, "Hugging Face hub id or local model folder; default: the embedded MiniLM-L6-H384",
                            metavar="ID_OR_PATH")
    device: str = opt("auto", "torch device: auto (cuda when available), cpu, cuda, cuda:N")
    dtype: str = opt("float32", "compute dtype", choices=("float32", "bfloat16", "float16"))
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

    texts: str | None = opt(None, "text file, one sentence per line (default: the built-in English sample)",
                            metavar="FILE")
    task: str | None = opt(None, "GLUE task to read sentences from (e.g. sst2, mrpc)")
    split: str = opt("validation", "GLUE split: train, validation (dev) or test")
    data_dir: str | None = opt(None, "local GLUE folder in the original tsv layout (env BERTSCOPE_GLUE_DIR); "
                                     "default: the Hugging Face hub", metavar="DIR")
    max_examples: int | None = opt(None, "use at most this many sentences (a seeded subset)")

    def validate(self) -> None:
        if self.texts is not None and self.task is not None:
            raise BertscopeError("give either --texts or --task, not both")
        if self.max_examples is not None and self.max_examples < 1:
            raise BertscopeError(f"--max-examples must be at least 1, got {self.max_examples}")
        if self.data_dir is None and _env_glue_dir() is not None:
            object.__setattr__(self, "data_dir", _env_glue_dir())


@dataclass(frozen=True)
class ReconstructConfig(TextOptions, ModelOptions):
    """Apply the masked-LM output head to every hidden layer and measure how well the input is reconstructed."""

    command = "reconstruct"

    head: str = opt("auto", "MLM head: the checkpoint's own (pretrained), one fitted on the frozen final layer (fit), "
                            "or pretrained when present else fit (auto)", choices=("auto", "pretrained", "fit"))
    head_part: str = opt("full", "with a pretrained head: full (transform+LayerNorm+decoder+bias) or decoder only",
                         choices=("full", "decoder"))
    include_special: bool = opt(False, "count special tokens ([CLS], [SEP], ...) in the metrics")
    mask_prob: float = opt(0.0, "mask inputs BERT-style (80/10/10) with this probability first; masked and unmasked "
                                "positions are then reported separately")

    def validate(self) -> None:
        ModelOptions.validate(self)
        TextOptions.validate(self)
        if not 0.0 <= self.mask_prob < 1.0:
            raise BertscopeError(f"--mask-prob must be in [0, 1), got {self.mask_prob}")
