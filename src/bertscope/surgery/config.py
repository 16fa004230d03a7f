"""The options of the layer-surgery commands: ``deepen``, ``compare`` and ``layer-scan``."""

from __future__ import annotations

from dataclasses import dataclass

from bertscope.core.config import Config, check_seed, group, opt
from bertscope.core.errors import BertscopeError
from bertscope.lens.config import FitHeadOptions, TextOptions
from bertscope.models.options import ModelOptions, OutputOptions

__all__ = ['CompareConfig', 'DeepenConfig', 'LayerScanConfig']


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
        check_seed(self.seed)
        if self.duplicate is None and (self.copies != 1 or self.placement != "adjacent"):
            raise BertscopeError("--copies and --placement only apply to --duplicate")


@dataclass(frozen=True, init=False)
class CompareConfig(Config):
    """Agreement between an original model and a variant (e.g. a deepened one) on real text, layer by layer."""

    command = "compare"

    encoder: ModelOptions = group(ModelOptions)
    output: OutputOptions = group(OutputOptions)
    text: TextOptions = group(TextOptions)
    fit_head: FitHeadOptions = group(FitHeadOptions)

    variant: str | None = opt(None, "the variant's model folder or hub id (required)", metavar="ID_OR_PATH")
    head: str = opt("auto", "MLM head for the agreement metrics: each checkpoint's own (pretrained), one fitted on "
                            "the original's frozen final layer and shared by both (fit), or pretrained when both "
                            "have one else fit (auto)", choices=("auto", "pretrained", "fit"))
    include_special: bool = opt(False, "count special tokens ([CLS], [SEP], ...) in the metrics")
    curves: bool = opt(True, "also compute both models' per-layer reconstruction curves (the lens)")

    def validate(self) -> None:
        if self.variant is None:
            raise BertscopeError("--variant is required: the model to compare against --model")


@dataclass(frozen=True, init=False)
class LayerScanConfig(Config):
    """Build every single-layer variant (one layer duplicated, or removed) in memory and measure its agreement."""

    command = "layer-scan"

    encoder: ModelOptions = group(ModelOptions)
    output: OutputOptions = group(OutputOptions)
    text: TextOptions = group(TextOptions)
    fit_head: FitHeadOptions = group(FitHeadOptions)

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
        if self.variants_per_pass < 1:
            raise BertscopeError(f"--variants-per-pass must be at least 1, got {self.variants_per_pass}")
