"""The options of ``replicate``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bertscope.core.config import Config, group, opt
from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_name_list, parse_seed_list
from bertscope.data.options import check_task_name
from bertscope.replicate.cost import DEFAULT_GPU_TFLOPS, DEFAULT_GPU_UTILISATION
from bertscope.replicate.protocols import BUDGETS
from bertscope.sweep.config import ExecutorOptions

__all__ = ['REPLICATE_BUDGETS', 'PowerConfig', 'ReplicateConfig', 'parse_settings', 'train_examples', 'training_size']


_DECIDE, _DECIDE_ALL = BUDGETS["decide"].finetune, BUDGETS["decide"].train_all_below
_DECIDE_MAX_SEEDS = ", ".join(f"{looks[-1]} for {paper}" for paper, looks in sorted(BUDGETS["decide"].looks.items()))

#: The budgets a user may name (``test`` is a hidden one for the test suite: a tiny checkpoint, seconds).
REPLICATE_BUDGETS = ("smoke", "small", "decide", "full")


@dataclass(frozen=True, init=False)
class ReplicateConfig(Config):
    """Run a paper's protocol through the sweep machinery (resumable) and write its claims table: claims.md,
    claims.json and claims.html (one row per claim: measurement, 95% interval over seeds, verdict, assumptions)."""

    command = "replicate"

    paper: str | None = opt(None, "which paper's claims: paper1 (Kao et al., the MLM head reads every layer; "
                                  "duplicated layers) or paper2 (Fukuhata & Kano, few dimensions, tokens, layers, "
                                  "frozen, cross)", positional=True, choices=("paper1", "paper2"), metavar="PAPER")
    budget: str = opt("smoke", "size of the protocol: smoke (minutes on a laptop CPU: checks the path), small (3 "
                               "seeds), decide (decides most claims on a laptop: adaptive seeds, sized by "
                               "docs/power.md) or full (the papers' scale, a GPU box); see docs/replicate.md",
                      metavar="smoke|small|decide|full")
    seeds: str | None = opt(None, "seeds: 'auto' (run seeds in rounds and stop adding runs to a claim once it is "
                                  "decided; alpha is spent over the looks, docs/statistics.md), or a list such as "
                                  "1-5 (read once, as one 95 percent interval); default: the budget's (auto for decide)",
                            metavar="auto|LIST")
    max_seeds: int | None = opt(None, "with --seeds auto: the most seeds any claim gets (the last look); default: "
                                      f"the budget's (decide: {_DECIDE_MAX_SEEDS})", metavar="N")
    model: str | None = opt(None, "model(s): hub id or local folder, a comma list for several (paper 1's 'across "
                                  "families' needs two families or more); default: the embedded MiniLM-L6-H384",
                            metavar="M[,M...]")
    tasks: str | None = opt(None, "GLUE tasks of the fine-tuning claims (comma list); default: the budget's "
                                  "(sst2 for smoke and small)", metavar="T1,T2,...")
    data_dir: str | None = opt(None, "local GLUE folder in the original tsv layout, passed to every run that reads "
                                     "GLUE (env BERTSCOPE_GLUE_DIR, read by each run); default: the hub",
                               metavar="DIR")
    max_train: str | None = opt(None, "training examples of every fine-tuning run, a number or all (a harder task "
                                      "than the budget's needs more: docs/power.md); default: the budget's (decide: "
                                      f"{_DECIDE['max_train']}, or all of a task with fewer than "
                                      f"{_DECIDE_ALL:,})", metavar="N|all")
    epochs: int | None = opt(None, "epochs of every fine-tuning run; default: the budget's", metavar="E")
    store: str | None = opt(None, "SQLite result store (re-running resumes it: finished runs are skipped); "
                                  "default: OUT/replicate.db", metavar="DB")
    out: str = opt("replicate", "output folder: claims.md, claims.json, claims.html and the spec it ran",
                   metavar="DIR")
    execution: ExecutorOptions = group(ExecutorOptions)
    gpu_tflops: float = opt(DEFAULT_GPU_TFLOPS, "GPU peak (TFLOP/s) of the GPU-hours estimate printed before full "
                                                "and by --dry-run (default: an A100's dense bf16 peak)", metavar="T")
    gpu_utilisation: float = opt(DEFAULT_GPU_UTILISATION, "share of --gpu-tflops the estimate assumes a run "
                                                          "sustains (model FLOPs utilisation)", metavar="U")
    retry_failed: bool = opt(False, "run failed runs again")
    dry_run: bool = opt(False, "write the spec and list its runs with their stored status; run nothing")
    progress: bool = opt(True, "show overall progress")

    def validate(self) -> None:
        _check_paper_and_budget(self.paper, self.budget, "bertscope replicate paper1|paper2 --budget smoke")
        if self.model is not None:
            parse_name_list(self.model, option="--model", example="bert-base-uncased,roberta-base")
        if self.tasks is not None:
            for task in parse_name_list(self.tasks, option="--tasks", example="sst2,rte"):
                check_task_name(task)
        if self.gpu_tflops <= 0 or not 0 < self.gpu_utilisation <= 1:
            raise BertscopeError(f"--gpu-tflops must be positive and --gpu-utilisation in (0, 1]; got "
                                 f"{self.gpu_tflops} and {self.gpu_utilisation}")
        if self.data_dir is not None and not Path(self.data_dir).expanduser().is_dir():
            raise BertscopeError(f"--data-dir {self.data_dir} is not a folder")
        if self.seeds is not None and self.seeds != "auto":
            parse_seed_list(self.seeds, option="--seeds")
        training_size(self)
        if self.max_seeds is not None:
            if self.max_seeds < 2:
                raise BertscopeError(f"--max-seeds must be at least 2, got {self.max_seeds}")
            if self.seeds is not None and self.seeds != "auto":
                raise BertscopeError("--max-seeds goes with --seeds auto (a seed list fixes the seeds)")


def train_examples(text: str) -> int | Literal[False] | None:
    """A training size as the options spell it: a number of at least 2, or ``all`` (None: every example); False when
    it is neither (each option words its own error)."""
    value = text.strip().lower()
    if value == "all":
        return None
    return int(value) if value.isdigit() and int(value) >= 2 else False


def training_size(config: ReplicateConfig) -> dict[str, int | None]:
    """The fine-tuning options ``--max-train``/``--epochs`` set over the budget's (None: all examples)."""
    out: dict[str, int | None] = {}
    if config.max_train is not None:
        train = train_examples(config.max_train)
        if train is False:
            raise BertscopeError(f"--max-train must be a number of at least 2 or all; got {config.max_train!r}")
        out["max_train"] = train
    if config.epochs is not None:
        if config.epochs < 1:
            raise BertscopeError(f"--epochs must be at least 1; got {config.epochs}")
        out["epochs"] = config.epochs
    return out


def _check_paper_and_budget(paper: str | None, budget: str, example: str) -> None:
    if paper is None:
        raise BertscopeError(f"give the paper: {example}")
    if budget not in (*REPLICATE_BUDGETS, "test"):  # test: the hidden budget of the test suite
        raise BertscopeError(f"--budget must be one of {', '.join(REPLICATE_BUDGETS)}; got {budget!r}")


def parse_settings(spec: str, *, option: str = "--settings") -> list[tuple[str, int | None, int]]:
    """``sst2:1000:1,mrpc:500:2`` -> [(task, training examples or None for all, epochs), ...]."""
    out: list[tuple[str, int | None, int]] = []
    for item in parse_name_list(spec, option=option, example="sst2:1000:1,mrpc:500:1"):
        parts = item.split(":")
        if len(parts) != 3 or not (parts[1] == "all" or parts[1].isdigit()) or not parts[2].isdigit():
            raise BertscopeError(f"{option}: {item!r} is not TASK:TRAIN:EPOCHS (e.g. sst2:1000:1; TRAIN may be all)")
        train = train_examples(parts[1])
        if train is False or int(parts[2]) < 1:
            raise BertscopeError(f"{option}: {item!r} needs at least 2 training examples and 1 epoch")
        out.append((parts[0], train, int(parts[2])))
    return out


@dataclass(frozen=True, init=False)
class PowerConfig(Config):
    """Measure how noisy each of paper 2's claim rows is per task, training size and epochs (and dev size, by
    rescoring the runs' dev predictions), and the seeds each row needs: power.md and power.json, which size the
    replicate budgets (docs/power.md)."""

    command = "power"

    paper: str | None = opt(None, "the paper whose fine-tuning claims to measure (paper2)", positional=True,
                            choices=("paper2",), metavar="PAPER")
    budget: str = opt("decide", "the replicate budget whose protocol and adaptive looks the study measures, with "
                                "its fine-tuning options changed by each setting's training size and epochs",
                      metavar="|".join(REPLICATE_BUDGETS))
    settings: str = opt("sst2:500:1,sst2:1000:1", "the settings to measure, a comma list of TASK:TRAIN:EPOCHS (GLUE "
                                                  "task of the fine-tuning claims, training examples or all, "
                                                  "epochs), e.g. sst2:250:2,mrpc:500:1",
                        metavar="T:N:E[,...]")
    seeds: str = opt("1-4", "the seeds every setting runs (a list such as 1-4)", metavar="LIST")
    dev_sizes: str = opt("100,200,400,all", "dev sizes at which study runs are rescored (comma list; all = every "
                                            "dev example)", metavar="M[,M...]")
    experiments: str | None = opt(None, "only these experiments of the protocol (comma list of tokens, dims, "
                                        "layers, layers-native, frozen, cross; freezing reads tokens' [CLS] runs); "
                                        "default: all", metavar="E[,E...]")
    model: str | None = opt(None, "model: hub id or local folder; default: the embedded MiniLM-L6-H384")
    data_dir: str | None = opt(None, "local GLUE folder in the original tsv layout; default: the hub",
                               metavar="DIR")
    store: str | None = opt(None, "SQLite result store (resumable; share replicate's to reuse its runs); default: "
                                  "OUT/power.db", metavar="DB")
    out: str = opt("power", "output folder: power.md, power.json and each setting's spec", metavar="DIR")
    execution: ExecutorOptions = group(ExecutorOptions)
    progress: bool = opt(True, "show overall progress")

    def validate(self) -> None:
        _check_paper_and_budget(self.paper, self.budget, "bertscope power paper2")
        for task, _, _ in parse_settings(self.settings):
            check_task_name(task)
        for item in parse_name_list(self.dev_sizes, option="--dev-sizes"):
            if item != "all" and (not item.isdigit() or int(item) < 2):
                raise BertscopeError(f"--dev-sizes: {item!r} is not a whole number >= 2 or all")
        if len(parse_seed_list(self.seeds, option="--seeds")) < 2:
            raise BertscopeError("--seeds: the noise of a paired difference needs at least 2 seeds")
        if self.data_dir is not None and not Path(self.data_dir).expanduser().is_dir():
            raise BertscopeError(f"--data-dir {self.data_dir} is not a folder")
