"""Each paper's protocol per budget, as data: which commands run, with which options, tasks and seeds.

A protocol is a list of :class:`Experiment` blocks that becomes one sweep spec (:meth:`Protocol.to_spec`), so it
runs, resumes and is stored like any other sweep. Neither paper's full text is available: every detail the papers
do not fix for us is an explicit entry of :data:`ASSUMPTIONS` (written into claims.md/json) or of a budget's
options, never a silent default.

Budgets: ``smoke`` (about 8 minutes per paper on a quiet 2-core CPU, on the embedded model: checks the whole path;
its fine-tuned heads learn SST-2, few-dimension heads mostly do not, and those claims say so), ``small`` (at most
about 25 minutes per paper on a 2-core CPU, 3 seeds), ``full`` (the papers' scale: GLUE dev sets, full training
sets, 5 seeds; documented for a GPU box, not run here) and the hidden ``test`` (a tiny random checkpoint in tests,
seconds). The fine-tuning options of smoke and small were chosen from measurements (see ``_SMOKE_FT``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bertscope.core.errors import BertscopeError
from bertscope.core.sequential import LookPlan
from bertscope.data.glue import GLUE_SIZES, get_task

__all__ = ["ARM_OPTIONS", "ASSUMPTIONS", "BUDGETS", "DEEPENED_PREFIX", "NATIVE_LAYERS", "PAPERS", "TOLERANCES",
           "TUNED_LENS", "Budget", "Experiment", "Protocol", "Stage", "arm_options", "protocol"]

PAPERS: dict[str, str] = {
    "paper1": "Kao et al. 2020, arXiv 2001.09309: the MLM output layer reads every layer; duplicating layers",
    "paper2": "Fukuhata & Kano 2025, arXiv 2504.04966: few dimensions, any token, lower layers, frozen, cross",
}

#: The experiment of paper 1 that measures the logit lens beside the tuned lens (``reconstruct --lens tuned``).
TUNED_LENS = "tuned-lens"

#: The experiment of paper 2 that scans the layers with the budget's native token beside [CLS].
NATIVE_LAYERS = "layers-native"

#: The model-axis label of a deepened variant starts with this (claims tell variants from originals by it).
DEEPENED_PREFIX = "deepened:"

#: The tolerance of each ``no_worse`` claim (the score scale of the task's main metric, 0..1) and the thresholds of
#: paper 1's "above chance" and "barely changes" claims. One place, cited in every claim row.
TOLERANCES: dict[str, float] = {
    "p2.tokens": 0.02,  # two points: about twice the published 5-seed std of BERT-base on RTE/MRPC
    "p2.dims": 0.05,  # "2-3 dimensions suffice": within five points of all dimensions
    "p2.layers.higher": 0.02,
    "p2.cross": 0.02,
    "p1.reconstruct.threshold": 0.05,  # top-1 "well above chance": the share of English text's commonest piece
    "p1.scan.agreement": 0.9,  # a variant "barely changes outputs": top-1 agreement with the original >= 0.9
    "p1.scan.most": 0.5,  # "most single layers": more than half of the variants
}


@dataclass(frozen=True)
class Budget:
    """How large one budget's runs are. ``finetune``: base options of every fine-tuning run (studies included);
    ``lens``: base options of reconstruct and layer-scan; ``tuned``: the tuned-lens training options added to
    ``lens`` for paper 1's logit-vs-tuned-lens run (empty: reconstruct's defaults)."""

    name: str
    seeds: tuple[int, ...]
    tasks: tuple[str, ...]
    finetune: dict[str, Any]
    lens: dict[str, Any]
    dims_k: str = "2,3,all"
    dims_samples: int = 3
    cross_single_task: bool = False
    tokens: str | None = None  # the tokens study's strategies (None: its default, every strategy)
    layers: str | None = None  # the layers study's hidden states (None: its default, 0..L)
    #: a second layers study reading this token beside the paper's [CLS] (experiment ``layers-native``): the
    #: embedded model was trained with mean pooling, and its lower layers' [CLS] heads do not learn
    native_token: str | None = None
    note: str = ""
    tuned: dict[str, Any] = field(default_factory=dict)
    #: adaptive seeds by default (``--seeds auto``), per paper: the seed counts at which claims are read (the last
    #: is the most any claim gets); empty: the fixed ``seeds``
    looks: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    #: per paper, fine-tuning options over ``finetune`` (a paper whose protocol has many runs per seed trains less)
    paper_finetune: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the papers whose adaptive seeds stop a claim for futility (:func:`bertscope.core.sequential.futile`): with two
    #: looks it costs no measurable power; before three looks from 3 seeds it does (docs/statistics.md)
    futility: tuple[str, ...] = ()
    #: a task whose official training set has fewer examples than this trains on all of them (its count, from
    #: :data:`bertscope.data.glue.GLUE_SIZES`) instead of ``finetune``'s ``max_train``: a size that teaches a
    #: single-sentence task in a few dozen steps leaves a small pair task's heads untrained or unstable
    #: (docs/power.md); ``--max-train`` overrides it for every task. None: every task takes ``max_train``
    train_all_below: int | None = None

    def task_finetune(self, task: str) -> dict[str, Any]:
        """The fine-tuning options of ``task``'s runs: ``finetune``, with its whole training set where
        ``train_all_below`` says so."""
        size = GLUE_SIZES.get(get_task(task).name, (0, 0))[0]
        if self.train_all_below is not None and 0 < size < self.train_all_below and "max_train" in self.finetune:
            return {**self.finetune, "max_train": size}
        return dict(self.finetune)

    def look_plan(self, paper: str, max_seeds: int | None = None) -> LookPlan:
        """The looks of ``--seeds auto`` for ``paper``: the budget's, cut (or stretched) to ``max_seeds``."""
        looks = self.looks.get(paper) or (len(self.seeds), 2 * len(self.seeds), 4 * len(self.seeds))
        futility = paper in self.futility
        if max_seeds is None:
            return LookPlan(tuple(looks), futility=futility)
        if max_seeds < 2:
            raise BertscopeError(f"--max-seeds must be at least 2, got {max_seeds}")
        kept = [n for n in looks if n < max_seeds]
        return LookPlan((*kept, max_seeds), futility=futility)


# Fine-tuning options measured on the embedded model (SST-2, OMP_NUM_THREADS=1, docs/replicate.md "Budgets"): the
# default lr 2e-5 barely moves it (128 examples x 1 epoch at 1e-4 left every head at chance), while lr 2e-4 learns
# from 192 examples x 2 epochs (batch 8: dev 0.72, train loss 0.657 -> 0.236; batch 16: 0.68) and from 256 x 2
# (0.77; 1e-4 gives 0.72). One such run trains in 10-18 s on one core.
_SMOKE_FT = {"max_train": 192, "max_eval": 128, "epochs": 2, "batch_size": 8, "max_length": 64, "lr": 2e-4}
_SMALL_FT = {"max_train": 256, "max_eval": 200, "epochs": 2, "batch_size": 8, "max_length": 64, "lr": 2e-4}
_FULL_FT = {"epochs": 3, "batch_size": 32, "max_length": 128, "lr": 2e-5}
# decide: chosen from the power study (docs/power.md): on the embedded model, 2000 SST-2 training examples x 1 epoch
# at batch 32, scored on the whole dev set, make most claims' paired seed differences small enough that a few seeds
# decide them; adaptive seeds spend the rest where an effect is small. Paper 2 trains at lr 2e-4: at 1e-4 its
# max-norm and first-word token rows sat on the tolerance (-0.022, -0.018 over seeds 1-3), at 2e-4 within -0.013.
_DECIDE_FT = {"max_train": 2000, "epochs": 1, "batch_size": 32, "max_length": 128, "lr": 1e-4}
# Tuned-lens translators (reconstruct --lens tuned) measured on the embedded model, seed 1, fit on 256 GLUE training
# sentences, 128 tokens a step: held-out KL (mean over layers) 0.363 after 15 steps, 0.334 after 30, 0.323 after 60,
# and below the logit lens's at every layer but the last on held-out and on measured text; each step decodes every
# layer over the whole vocabulary (about 2 s of one core on MiniLM), so smoke stops at 40. full: reconstruct's
# defaults (250 steps, 512 sentences).
_SMOKE_TUNED = {"lens_steps": 40, "lens_sentences": 256}

BUDGETS: dict[str, Budget] = {
    "test": Budget("test", (1, 2), ("rte",),
                   {"max_train": 8, "max_eval": 8, "epochs": 1, "batch_size": 8, "max_length": 16, "lr": 1e-3},
                   {"task": "sst2", "split": "validation", "max_examples": 4, "max_length": 16, "fit_steps": 3,
                    "fit_batch_size": 4, "fit_curve": False},
                   dims_k="2,all", dims_samples=1, tokens="cls,mean", note="tests only: a tiny random checkpoint, "
                                                                            "seconds",
                   tuned={"lens_steps": 3, "lens_sentences": 16, "lens_batch_tokens": 16}),
    "smoke": Budget("smoke", (1, 2), ("sst2",), _SMOKE_FT,
                    {"task": "sst2", "split": "validation", "max_examples": 64, "max_length": 64, "fit_steps": 100,
                     "fit_curve": False},
                    dims_samples=2, tokens="cls,mean,max-norm",
                    note="about 8 minutes per paper on a quiet 2-core CPU: checks the path; 2 seeds, 192 training "
                         "examples x 2 epochs at lr 2e-4 (heads learn on SST-2; few-dimension heads mostly do not), "
                         "three token strategies, the MLM head fitted in 100 steps, tuned-lens translators in 40",
                    tuned=_SMOKE_TUNED),
    "small": Budget("small", (1, 2, 3), ("sst2",), _SMALL_FT,
                    {"task": "sst2", "split": "validation", "max_examples": 200, "max_length": 64, "fit_steps": 300,
                     "fit_curve": False},
                    dims_samples=2,
                    note="at most about 25 minutes per paper on a quiet 2-core CPU; 3 seeds, 256 training examples "
                         "x 2 epochs at lr 2e-4, every default token strategy, the MLM head fitted in 300 steps, "
                         "tuned-lens translators in 100",
                    tuned={"lens_steps": 100, "lens_sentences": 256}),
    "decide": Budget("decide", (1, 2, 3, 4), ("sst2",), _DECIDE_FT,
                     {"task": "sst2", "split": "validation", "max_examples": 200, "max_length": 64, "fit_steps": 300,
                      "fit_curve": False},
                     dims_samples=1, layers="1--1", native_token="mean",
                     looks={"paper1": (3, 8, 16), "paper2": (3, 8, 16)}, futility=("paper2",),
                     paper_finetune={"paper2": {"lr": 2e-4}}, tuned={"lens_steps": 100, "lens_sentences": 256},
                     train_all_below=10_000,
                     note="decides claims on a laptop (docs/replicate.md, 'decide'): seeds in rounds, alpha spent "
                          "over fixed looks at 3, 8 and 16 seeds (paper 2 stops a claim "
                          "no look could decide for futility), 2000 training examples x 1 epoch (a task with fewer "
                          "than 10,000: all of them), batch 32, at lr 1e-4 (paper 2: 2e-4), the whole dev set, "
                          "layers 1..L read through [CLS] and through the mean over tokens; lens rows as in small"),
    "full": Budget("full", (1, 2, 3, 4, 5), ("cola", "sst2", "mrpc", "stsb", "rte"), _FULL_FT,
                   {"task": "sst2", "split": "validation", "max_examples": 872, "max_length": 128},
                   dims_k="1,2,3,5,10,all", dims_samples=5, cross_single_task=True,
                   note="the papers' scale (full GLUE training sets, dev sets, 5 seeds, lr 2e-5 as for BERT-base): "
                        "a GPU box"),
}

#: The explicit choices behind each paper's protocol (the papers' full texts are unavailable).
ASSUMPTIONS: dict[str, tuple[str, ...]] = {
    "paper1": (
        "Text: GLUE SST-2 dev sentences (a seeded subset per seed), never the fitted head's fit corpus.",
        "Head: each checkpoint's own pretrained MLM head when it has one, else one fitted on its frozen final layer "
        "(reconstruct's --head auto) on GLUE training texts (--fit-corpus auto, disjoint from the measured "
        "sentences; each claim row names the fit and the measured text); the budget sets the fit steps and turns "
        "the fit-growth curve off (smoke: 100 steps, small: 300).",
        "Deepened variant decoded with the original's head (reconstruct's --head-from auto for a deepen output, "
        "never overridden here), as the paper keeps the original output layer.",
        "One head cache for every run: fitted heads are kept in $BERTSCOPE_CACHE (default ~/.cache/bertscope), "
        "keyed by model weights, fit corpus, seed and fit options, so one fit per seed serves reconstruct, "
        "layer-scan and the deepened variant, and later invocations reuse it.",
        "Agreement with the final layer (reconstruct's final_agreement per hidden state) is reported beside each "
        "every-layer row; it is not part of the verdict.",
        "Special tokens are not counted; inputs are not masked.",
        "'Well above chance' = top-1 above 0.05 at every hidden state (0..L): uniform chance is 1/vocab, and 0.05 "
        "is about the share of English text's most frequent word piece.",
        "Deepened variant: the last transformer layer duplicated once (deepen --duplicate -1), of the first model.",
        "Families: one per distinct family of the --model list; with one model the claim is inconclusive.",
        "Fine-tuning: the budget's options, [CLS] of the last layer, a linear head, the official dev metric; "
        "deepened vs original paired by seed. smoke/small use lr 2e-4 and 2 epochs: measured on the embedded "
        "model, the default 2e-5 (and 1e-4 over 128 examples x 1 epoch) leaves the head at chance.",
        "A claim resting on any fine-tuning head flagged as not learned (bertscope.finetune.learning) is inconclusive, and "
        "so is a comparison of two sides at the majority-class score.",
        "'Barely changes outputs': top-1 agreement with the original model >= 0.9 on the same positions; 'most' = "
        "more than half of the one-layer variants (duplicate and remove pooled).",
        "Tuned lens (not in paper 1; Belrose et al. 2023, arXiv 2303.08112): reconstruct --lens tuned on the first "
        "model, per seed, with the same head, measured text and fit corpus as the every-layer row; one affine "
        "translator per hidden state trained on the fit corpus (never the measured sentences) to minimise "
        "KL(p_final || p_layer), in the budget's steps (test: 3, smoke: 40, small: 100, full: reconstruct's 250) on "
        "at most its sentences (16, 256, 256, 512).",
        "'Closer at every layer below the last': per seed, the largest tuned - logit KL to the final layer's "
        "distribution (nats, measured text) over hidden states 0..L-1 (the weakest layer), paired within the run; "
        "supported when its whole 95% interval is below 0. The last hidden state is the target itself (both "
        "about 0) and is listed, not counted; the fit corpus's held-out KL per layer is in claims.json.",
    ),
    "paper2": (
        "Model: --model (default the embedded MiniLM-L6-H384, trained with mean pooling, so [CLS] was never its "
        "training target).",
        "Fine-tuning: the budget's options, a linear head on the last layer unless the study varies it "
        "(smoke/small: lr 2e-4, 2 epochs, batch 8, measured to learn SST-2 on the embedded model; lr 2e-5 does "
        "not at these sizes).",
        "A claim resting on any head flagged as not learned (bertscope.finetune.learning: finetune's learning.learned, "
        "study run records' learned) is inconclusive, with the count in its note and the share in 'learned "
        "heads'; a comparison of two sides both at the majority-class score is never supported.",
        "'As good as' (a token vs [CLS], K dimensions vs all, higher layers vs the last, task A after B vs after "
        "A) is read as non-inferiority (kind no_worse): supported when the interval lies at or above minus the "
        "tolerance, so doing better than the reference supports it; not a two-sided equivalence.",
        "Tokens: the tokens study's default strategies, each compared with [CLS], paired by seed.",
        "Dimensions: random subsets of K = 2 and 3 (the mean over the budget's subsets per seed) vs all "
        "dimensions, paired by seed.",
        "Layers: 'lower' = hidden states 1..L/2, 'higher' = L/2+1..L-1 (embedding output 0 shown, not counted); "
        "each group's mean difference to the last layer, paired by seed. The paper reads [CLS]; the decide budget "
        "also scans the layers reading the mean over tokens (the embedded model's own pooling: its lower layers' "
        "[CLS] heads do not learn), each token its own rows.",
        "Freezing: --freeze encoder with a converged probe on cached, standardised features (--fit converged, "
        "--feature-norm auto = standardize), so the frozen side is a property of the features, vs the whole "
        "encoder fine-tuned with the budget's options: the tokens study's [CLS] run (the same run, run once).",
        "Cross: the cross study over the first two --tasks (A then B), disjoint random dimensions per task; the "
        "task-A score after stage B vs after stage A, paired by seed.",
    ),
}


def _tokens_option(arms: set[str]) -> dict[str, Any]:
    return {"tokens": ",".join(sorted(arms, key=lambda t: (t != "cls", t)))}


def _layers_option(arms: set[str]) -> dict[str, Any]:
    return {"layers": ",".join(sorted(arms, key=int))}


def _dims_option(arms: set[str]) -> dict[str, Any]:
    return {"k": ",".join([*sorted(arms - {"all"}, key=int), "all"])}


#: A study whose runs train several heads (its arms) and the option that narrows a run to some of them, in the
#: study's own option language. A claim names the arms it reads (:attr:`bertscope.replicate.claims.Claim.arms`), so a
#: later round of adaptive seeds trains only the arms of claims still open. A command not listed runs whole.
ARM_OPTIONS: dict[str, Callable[[set[str]], dict[str, Any]]] = {
    "tokens": _tokens_option,  # token strategies ([CLS] first)
    "layers": _layers_option,  # hidden states
    "dims": _dims_option,  # K of the random subsets; the all-dimension reference always runs
}


def arm_options(command: str, arms: Iterable[str] | None) -> dict[str, Any]:
    """The options that narrow a run of ``command`` to ``arms`` (None, or a command without arms: the whole run)."""
    narrow = ARM_OPTIONS.get(command)
    return {} if arms is None or narrow is None else narrow({str(a) for a in arms})


@dataclass(frozen=True)
class Stage:
    """Seeds up to ``seeds`` of one experiment (from the previous stage's end), run with ``options`` over the
    experiment's own: a later round of adaptive seeds narrows its runs to the arms still needed."""

    seeds: int
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "options": dict(self.options)}


@dataclass(frozen=True)
class Experiment:
    """One block of the spec: a command, its base options and grid axes (``seed`` is the replicate axis)."""

    name: str
    command: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]

    def to_block(self) -> dict[str, Any]:
        return {"name": self.name, "command": self.command, "base": dict(self.base), "grid": dict(self.grid)}


@dataclass(frozen=True)
class Protocol:
    """A paper's protocol at one budget: the experiments, and what the claims need to know about them."""

    paper: str
    budget: Budget
    models: tuple[str | None, ...]
    tasks: tuple[str, ...]
    experiments: tuple[Experiment, ...]
    assumptions: tuple[str, ...] = field(default=())
    sweep_name: str | None = None  # another name in the store (the power study names one per setting)

    @property
    def name(self) -> str:
        """The sweep's name in the store: one per paper and budget (re-running replaces its membership)."""
        return self.sweep_name or f"replicate-{self.paper}-{self.budget.name}"

    def to_spec(self) -> dict[str, Any]:
        return {"name": self.name, "description": f"bertscope replicate {self.paper} --budget {self.budget.name}",
                "experiments": [e.to_block() for e in self.experiments]}


def _deepened(model: str | None) -> dict[str, Any]:
    """A model-axis value that is a deepen pre-step (the last layer duplicated), labelled as deepened."""
    options: dict[str, Any] = {"duplicate": "-1"}
    if model is not None:
        options["model"] = model
    return {"deepen": options, "label": f"{DEEPENED_PREFIX}{model or 'default'}+dup-1"}


def _task_blocks(budget: Budget, tasks: tuple[str, ...], name: str, command: str, options: dict[str, Any],
                 axes: dict[str, list[Any]] | None = None) -> list[Experiment]:
    """The blocks of one fine-tuning experiment: one per group of tasks that share their fine-tuning options (a
    single block unless the budget sizes some tasks apart), all under the experiment's name, so claims read them as
    one. ``options`` go over each task's fine-tuning options; ``axes`` are grid axes ahead of ``task``."""
    groups: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for task in tasks:
        finetune = budget.task_finetune(task)
        groups.setdefault(json.dumps(finetune, sort_keys=True, default=str), (finetune, []))[1].append(task)
    return [Experiment(name, command, {**finetune, **options}, {**(axes or {}), "task": group,
                                                                "seed": list(budget.seeds)})
            for finetune, group in groups.values()]


def _paper1(budget: Budget, models: tuple[str | None, ...], tasks: tuple[str, ...]) -> list[Experiment]:
    seeds = list(budget.seeds)
    first = models[0]
    return [
        Experiment("reconstruct", "reconstruct", dict(budget.lens),
                   {"model": [*models, _deepened(first)], "seed": seeds}),
        Experiment("layer-scan", "layer-scan", {**budget.lens, "model": first},
                   {"op": ["duplicate", "remove"], "seed": seeds}),
        # the logit lens next to the tuned lens (translators trained on the fit corpus), on the same measured text
        Experiment(TUNED_LENS, "reconstruct", {**budget.lens, **budget.tuned, "model": first, "lens": "tuned"},
                   {"seed": seeds}),
        *_task_blocks(budget, tasks, "deepen-finetune", "finetune", {"token": "cls", "layer": "-1"},
                      {"model": [first, _deepened(first)]}),
    ]


def _paper2(budget: Budget, models: tuple[str | None, ...], tasks: tuple[str, ...]) -> list[Experiment]:
    model = {"model": models[0]}
    layers = {"layers": budget.layers} if budget.layers else {}
    experiments = [
        *_task_blocks(budget, tasks, "tokens", "tokens",
                      {**model, "layer": "-1", **({"tokens": budget.tokens} if budget.tokens else {})}),
        *_task_blocks(budget, tasks, "dims", "dims", {**model, "k": budget.dims_k, "samples": budget.dims_samples}),
        *_task_blocks(budget, tasks, "layers", "layers", {**model, **layers}),
        *(_task_blocks(budget, tasks, NATIVE_LAYERS, "layers", {**model, "token": budget.native_token, **layers})
          if budget.native_token else []),
        # the frozen side: a converged probe on cached (standardised) features, a property of the features
        *_task_blocks(budget, tasks, "frozen", "finetune",
                      {**model, "freeze": "encoder", "cache_features": True, "fit": "converged"}),
    ]
    # cross trains on both tasks with the first task's options: the claim reads the first task's score
    pair = list(tasks[:2]) if len(tasks) >= 2 else [tasks[0], "rte" if tasks[0] != "rte" else "mrpc"]
    experiments.append(Experiment("cross", "cross", {**budget.task_finetune(pair[0]), **model,
                                                     "tasks": ",".join(pair),
                                                     "single_task": budget.cross_single_task},
                                  {"seed": list(budget.seeds)}))
    return experiments


def _staged(experiment: Experiment, stages: int | Sequence[Stage]) -> list[Experiment]:
    """``experiment``'s blocks for its stages: seeds 1..n split where the stages end, each block with its stage's
    options. A stage without options keeps the block as it was, so its runs keep their ids."""
    blocks, start = [], 1
    for stage in ((Stage(stages),) if isinstance(stages, int) else stages):
        if stage.seeds >= start:
            blocks.append(replace(experiment, base={**experiment.base, **stage.options},
                                  grid={**experiment.grid, "seed": list(range(start, stage.seeds + 1))}))
            start = stage.seeds + 1
    return blocks


def protocol(paper: str, budget: str, *, models: tuple[str | None, ...] = (None,),
             tasks: tuple[str, ...] | None = None, seeds: tuple[int, ...] | None = None,
             rounds: Mapping[str, int | Sequence[Stage]] | None = None,
             finetune: Mapping[str, Any] | None = None) -> Protocol:
    """The protocol of ``paper`` at ``budget`` for these models (None = the embedded default) and tasks (default:
    the budget's). ``seeds``: the seeds of every experiment instead of the budget's; ``rounds``: experiment name ->
    how many seeds it runs now (seeds 1..n; adaptive seeds grow it round by round, experiment by experiment), or its
    :class:`Stage` list (seeds 1..n in stages, each with its own narrowing options; one block per stage, under the
    experiment's name); ``finetune``: fine-tuning options over the budget's (the power study's settings)."""
    if paper not in PAPERS:
        raise BertscopeError(f"unknown paper {paper!r}; one of {', '.join(PAPERS)}")
    if budget not in BUDGETS:
        raise BertscopeError(f"unknown budget {budget!r}; one of {', '.join(b for b in BUDGETS if b != 'test')}")
    b = BUDGETS[budget] if seeds is None else replace(BUDGETS[budget], seeds=tuple(seeds))
    b = replace(b, finetune={**b.finetune, **b.paper_finetune.get(paper, {}), **(finetune or {})})
    if finetune and "max_train" in finetune:  # the caller's size is every task's
        b = replace(b, train_all_below=None)
    chosen = tuple(tasks) if tasks else b.tasks
    models = tuple(models) or (None,)
    experiments = _paper1(b, models, chosen) if paper == "paper1" else _paper2(b, models, chosen)
    if rounds:
        experiments = [staged for e in experiments
                       for staged in (_staged(e, rounds[e.name]) if e.name in rounds else [e])]
    return Protocol(paper, b, models, chosen, tuple(experiments), ASSUMPTIONS[paper])
