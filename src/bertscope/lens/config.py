"""The options of the output-layer lens commands: where sentences come from, how a missing MLM head is
fitted, and ``reconstruct`` itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bertscope.core.config import Config, Options, group, opt
from bertscope.core.errors import BertscopeError
from bertscope.core.progress import LOG_CHOICES
from bertscope.data.options import check_task_name, env_glue_dir
from bertscope.models.options import ModelOptions, OutputOptions

if TYPE_CHECKING:
    from bertscope.lens.tuned import TunedOptions

__all__ = ['FitHeadOptions', 'ReconstructConfig', 'TextOptions']


@dataclass(frozen=True)
class TextOptions(Options):
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
        check_task_name(self.task)
        if self.max_examples is not None and self.max_examples < 1:
            raise BertscopeError(f"--max-examples must be at least 1, got {self.max_examples}")
        if self.data_dir is None and env_glue_dir() is not None:
            object.__setattr__(self, "data_dir", env_glue_dir())


@dataclass(frozen=True)
class FitHeadOptions(Options):
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
    # ---- fit corpus vs measured text
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


@dataclass(frozen=True, init=False)
class ReconstructConfig(Config):
    """Apply the masked-LM output head to every hidden layer and measure how well the input is reconstructed."""

    command = "reconstruct"

    encoder: ModelOptions = group(ModelOptions)
    output: OutputOptions = group(OutputOptions)
    text: TextOptions = group(TextOptions)
    fit_head: FitHeadOptions = group(FitHeadOptions)

    log: str = opt("auto", "what the command prints while it works: auto (progress bars on a terminal, plain "
                           "timestamped lines when stderr is not one, e.g. a batch job), bar, plain, or off (nothing, "
                           "as --no-progress)", choices=LOG_CHOICES)
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
    # ---- the lens closer to paper 1
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
    # ---- the tuned lens (per-layer affine translators; lens.tuned)
    lens: str = opt("logit", "logit: decode every layer with the head as it is (paper 1); tuned: also train one "
                             "affine translator per layer on the fit corpus (KL to the final layer's distribution) "
                             "and report both lenses side by side", choices=("logit", "tuned"))
    lens_steps: int = opt(250, "optimisation steps when training tuned-lens translators")
    lens_lr: float = opt(1e-3, "AdamW learning rate of the tuned-lens translators")
    lens_batch_tokens: int = opt(128, "fit-corpus tokens per tuned-lens training step")
    lens_sentences: int = opt(512, "fit-corpus sentences the tuned lens is trained on (at most)")

    def validate(self) -> None:
        if not 0.0 <= self.mask_prob < 1.0:
            raise BertscopeError(f"--mask-prob must be in [0, 1), got {self.mask_prob}")
        if self.examples < 0:
            raise BertscopeError(f"--examples must be at least 0, got {self.examples}")
        # ---- the lens closer to paper 1
        if not self.head_from.strip():
            raise BertscopeError("--head-from must be auto, self, original or a model folder / hub id")
        if self.token_view < 0:
            raise BertscopeError(f"--token-view must be at least 0, got {self.token_view}")
        if self.lens == "tuned":
            self.tuned_options()  # one-line errors for bad --lens-* values now
        if self.token_view_sentences is not None and not any(
                s.strip() for s in self.token_view_sentences.split("|")):
            raise BertscopeError("--token-view-sentences holds no sentence (separate sentences by '|')")

    def tuned_options(self) -> TunedOptions:
        """The tuned-lens training options of this run."""
        from bertscope.lens.tuned import TunedOptions

        return TunedOptions(steps=self.lens_steps, lr=self.lens_lr, batch_tokens=self.lens_batch_tokens,
                            max_sentences=self.lens_sentences, max_length=self.encoder.max_length)
