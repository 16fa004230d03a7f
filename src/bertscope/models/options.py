"""The option groups every command that loads a model shares: the model, its device, precision and batches
(:class:`ModelOptions`), and where results go (:class:`OutputOptions`)."""

from __future__ import annotations

from dataclasses import dataclass

from bertscope.core.config import Options, check_seed, opt
from bertscope.core.errors import BertscopeError

__all__ = ['ATTENTION_CHOICES', 'ATTENTION_HELP', 'ModelOptions', 'OutputOptions']


#: ``--attention`` values (``families.ATTENTION_IMPLEMENTATIONS`` and ``auto``; configs import no torch, so they are
#: spelled out here and tests/test_attention.py checks that they agree).
ATTENTION_CHOICES = ("auto", "sdpa", "eager")


ATTENTION_HELP = ("attention implementation: auto (the family's first choice: sdpa where transformers has it, else "
                  "eager), sdpa (PyTorch's fused scaled_dot_product_attention kernel: faster, the same numbers up to "
                  "float rounding) or eager (plain matrix products, the reference: needed e.g. to read attention "
                  "weights); recorded in the results, never part of a run's identity")


@dataclass(frozen=True)
class ModelOptions(Options):
    """Which model, on which device, at which precision, read in what batches (every command that loads one)."""

    model: str | None = opt(None, "Hugging Face hub id or local model folder; default: the embedded MiniLM-L6-H384",
                            metavar="ID_OR_PATH")
    device: str = opt("auto", "torch device: auto (cuda when available), cpu, cuda, cuda:N")
    dtype: str = opt("float32", "compute dtype", choices=("float32", "bfloat16", "float16"))
    attention: str = opt("auto", ATTENTION_HELP, choices=ATTENTION_CHOICES)
    seed: int = opt(0, "random seed (data subsets, masking, initialisation)")
    batch_size: int = opt(32, "examples per batch")
    max_length: int = opt(128, "maximum tokens per example (longer inputs are truncated)")

    def validate(self) -> None:
        check_seed(self.seed)
        if self.batch_size < 1:
            raise BertscopeError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_length < 4:
            raise BertscopeError(f"--max-length must be at least 4, got {self.max_length}")


@dataclass(frozen=True)
class OutputOptions(Options):
    """Where a command writes its result files, and whether it shows progress."""

    out: str | None = opt(None, "output folder for result files (JSON, CSV, PNG)", metavar="DIR")
    progress: bool = opt(True, "show progress bars")
