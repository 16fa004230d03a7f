"""The options of the studies (``dims``, ``layers``, ``tokens``, ``cross``): a fine-tuning config plus the study axis."""

from __future__ import annotations

from dataclasses import dataclass

from bertscope.core.config import group, opt
from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_name_list, parse_token_list
from bertscope.data.options import DataOptions
from bertscope.finetune.config import FinetuneConfig
from bertscope.finetune.distributed import refuse_data_parallel
from bertscope.finetune.options import FIT_METHODS, CacheOptions, FinetuneOutput, SelectionOptions

__all__ = ['CrossConfig', 'DimsConfig', 'LayersConfig', 'StudyConfig', 'TokensConfig']


# ---- option groups as the studies declare them: finetune's, with a study's defaults and help


@dataclass(frozen=True)
class StudyCache(CacheOptions):
    cache_features: bool = opt(True, "with --freeze encoder: train every run's head on cached token vectors (one "
                                     "encoder pass for the whole study, same numbers as without)")


@dataclass(frozen=True)
class StudyOutput(FinetuneOutput):
    overwrite: bool = opt(False, "start over: discard the finished runs in OUT/runs.db (default: resume, skipping "
                                 "finished runs)")
    retry_failed: bool = opt(False, "run again the runs that failed in an earlier start (default: a failed run "
                                    "stops the study, naming it)")


@dataclass(frozen=True)
class StudySelection(SelectionOptions):
    fit: str = opt("auto", "how each run's head is fitted: auto (a converged probe when the encoder is fully "
                           "frozen and the head linear, so a frozen point is a property of the features; else the "
                           "sgd training loop), sgd, or converged (see finetune --fit)", choices=FIT_METHODS)


@dataclass(frozen=True)
class DimsSelection(StudySelection):
    dims: str = opt("all", "set by the study (see --k)", cli=False)


@dataclass(frozen=True)
class LayersSelection(StudySelection):
    layer: str = opt("-1", "set by the study (see --layers)", cli=False)


@dataclass(frozen=True)
class TokensSelection(StudySelection):
    token: str = opt("cls", "set by the study (see --tokens)", cli=False)


@dataclass(frozen=True)
class CrossSelection(StudySelection):
    dims: str = opt("all", "set by the study (see --dims-per-task)", cli=False)
    fit: str = opt("sgd", "not used: cross fine-tunes the encoder (its heads train with the sgd loop)", cli=False)


@dataclass(frozen=True)
class CrossData(DataOptions):
    task: str | None = opt(None, "set by the study (see --tasks)", cli=False)


@dataclass(frozen=True)
class CrossCache(StudyCache):
    cache_features: bool = opt(False, "not used: cross fine-tunes the encoder", cli=False)
    cache_dir: str | None = opt(None, "not used: cross fine-tunes the encoder", cli=False)


@dataclass(frozen=True, init=False)
class StudyConfig(FinetuneConfig):
    """Options every paper-2 study adds to finetune's: each run is a fine-tuning run with these options."""

    output: StudyOutput = group(StudyOutput)
    selection: StudySelection = group(StudySelection)
    cache: StudyCache = group(StudyCache)
    tolerance: float = opt(0.01, "an 'as good as' claim (k dims vs all, a token vs [CLS], a layer vs the last, a "
                                 "task after later stages vs after its own) is supported when the 95 percent "
                                 "interval of the paired difference lies at or above -this (it loses at most this; "
                                 "doing better counts) (in GLUE score, 0..1)")

    def validate(self) -> None:
        refuse_data_parallel(self.command)  # under torchrun: one line before any work
        FinetuneConfig.validate(self)
        if self.output.save_model:
            raise BertscopeError(f"{self.command} does not save models; use finetune --save-model for one run")
        if self.output.predict_test:
            raise BertscopeError(f"{self.command} does not write test predictions; use finetune --predict-test")
        if not self.tolerance >= 0:
            raise BertscopeError(f"--tolerance must not be negative, got {self.tolerance}")


@dataclass(frozen=True, init=False)
class DimsConfig(StudyConfig):
    """Score vs the number of hidden dimensions the head sees (seeded random subsets, optional ranked choices), or
    paper 2's search for effective dimensions (--find-effective)."""

    command = "dims"

    selection: DimsSelection = group(DimsSelection)
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
        StudyConfig.validate(self)
        if self.selection.dims.strip().lower() != "all":
            raise BertscopeError("dims chooses the dimensions itself; use --k (and --samples, --rank-by)")
        if self.samples < 1:
            raise BertscopeError(f"--samples must be at least 1, got {self.samples}")
        if self.start < 2:
            raise BertscopeError(f"--start must be at least 2, got {self.start}")
        if self.start_subsets < 1 or self.max_pairs < 0:
            raise BertscopeError("--start-subsets must be at least 1 and --max-pairs not negative")
        if self.hurt_threshold < 0:
            raise BertscopeError(f"--hurt-threshold must not be negative, got {self.hurt_threshold}")


@dataclass(frozen=True, init=False)
class LayersConfig(StudyConfig):
    """The same head configuration read from each hidden layer 0..L in turn: score per layer."""

    command = "layers"

    selection: LayersSelection = group(LayersSelection)
    layers: str | None = opt(None, "hidden states to scan, counted 0..L (0 = embedding output, l = output of "
                                   "transformer layer l): e.g. 0-6, 0,3,6, -3--1 or all; default: all of 0..L",
                             metavar="HIDDEN_STATES")

    def validate(self) -> None:
        StudyConfig.validate(self)
        if self.selection.layer != "-1":
            raise BertscopeError("layers scans the layer itself; use --layers to choose which")


@dataclass(frozen=True, init=False)
class TokensConfig(StudyConfig):
    """The same head configuration reading different token vectors: CLS, max-norm, mean, element-wise max, fixed
    positions."""

    command = "tokens"

    selection: TokensSelection = group(TokensSelection)
    tokens: str = opt("cls,max-norm,mean,max,index:1,index:-1", "token strategies to compare (comma list of cls, "
                                                                 "max-norm, mean, max, index:K)", metavar="T[,T...]")

    def validate(self) -> None:
        StudyConfig.validate(self)
        if self.selection.token != "cls":
            raise BertscopeError("tokens varies the token itself; use --tokens to choose which")
        parse_token_list(self.tokens, option="--tokens")


@dataclass(frozen=True, init=False)
class CrossConfig(StudyConfig):
    """Cross-fine-tuning: one encoder fine-tuned on task A, then B, then C..., each task with its own head and
    dimensions; after every stage every task seen so far is evaluated with its own head (stage x task matrix)."""

    command = "cross"

    data: CrossData = group(CrossData)
    selection: CrossSelection = group(CrossSelection)
    cache: CrossCache = group(CrossCache)
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

    def validate(self) -> None:
        refuse_data_parallel(self.command)  # under torchrun: one line before any work
        if self.data.task is not None:
            raise BertscopeError("cross takes --tasks (comma list in training order), not --task")
        names = parse_name_list(self.tasks, option="--tasks", at_least=2, example="sst2,rte,cola (training order)")
        if self.selection.freeze.strip().lower() == "encoder":
            raise BertscopeError("cross fine-tunes the encoder from task to task; --freeze encoder leaves "
                                 "nothing to carry over")
        if self.selection.dims.strip().lower() != "all":
            raise BertscopeError("cross sets each task's dimensions from --dims-per-task (and --dims-mode)")
        if self.output.save_model:
            raise BertscopeError("cross does not save models (see --keep-checkpoint)")
        if self.output.predict_test:
            raise BertscopeError("cross does not write test predictions; use finetune --predict-test")
        for name in names:  # every other option is checked as for finetune
            values = self.to_dict()
            FinetuneConfig.from_flat({**{k: values[k] for k in FinetuneConfig.field_names()}, "task": name,
                                      "cache_features": False})
