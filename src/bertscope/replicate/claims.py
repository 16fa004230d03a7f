"""Pure functions from finished runs to claim rows: the measurement, its interval, the verdict and its rule.

Every interval is :func:`bertscope.core.stats.summarize` over seeds (a paired difference is the summary of the per-seed
differences, :func:`~bertscope.core.stats.paired_difference`); the verdict is :func:`bertscope.core.stats.verdict` on the
difference *claimed side minus reference side* (docs/statistics.md). Where a claim rests on one seed only, the
layer-scan claim bootstraps over its variants (:func:`~bertscope.core.stats.bootstrap_difference`); the others stay
``inconclusive`` (one number cannot tell a difference from seed noise), as the rule says.

Two guards keep a claim off heads that measured their optimiser rather than their features: every
fine-tuning head a comparison rests on (either side) is read for its ``learned`` flag (:mod:`bertscope.finetune.learning`:
finetune results' ``learning``, study run records' ``learned``), and a claim with any head that did not learn is
``inconclusive``, its note naming how many of how many and the likely remedy; each row records the share of learned
heads. And a comparison whose two sides both sit at the task's majority-class score (``RunRow.chance``, within
:data:`CHANCE_MARGIN`) is never ``supported``: two heads that learned nothing are "as good as" each other.

Inputs are :class:`RunRow` records (built by the runner from the result store), so the functions can be tested on
hand-made rows.

Length: every claim of both papers is one small pure function over the same :class:`RunRow` records, sharing
the pairing, learned-head and chance guards above them; split by paper, those guards would leave their users.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bertscope.core.sequential import LookPlan, sequential_verdict
from bertscope.core.stats import (
    Interval,
    bootstrap_difference,
    boundaries,
    paired_difference,
    summarize,
    verdict,
)
from bertscope.finetune.learning import REMEDY
from bertscope.replicate.protocols import DEEPENED_PREFIX, NATIVE_LAYERS, TOLERANCES, TUNED_LENS

__all__ = ["CHANCE_MARGIN", "TRAIN_LONGER", "Claim", "Head", "RunRow", "claims_for", "head_flags", "head_text",
           "paper1_claims", "paper2_claims"]

#: What decides a claim whose heads did not learn: more seeds do not, more training steps often do (a pair task such
#: as MRPC needs several times the steps SST-2 does; docs/power.md measures it).
TRAIN_LONGER = "more training steps (replicate --max-train N|all --epochs E; docs/power.md)"

#: A side whose mean score is at most the majority-class score plus this sits "at chance" (the score scale, 0..1).
CHANCE_MARGIN = 0.02

#: The looks of an adaptive replication (``replicate --seeds auto``) while :func:`claims_for` judges with them: a
#: context variable rather than an argument of every claim function, because only :func:`_claim` reads it.
_LOOKS: ContextVar[LookPlan | None] = ContextVar("bertscope_replicate_looks", default=None)

StudyPoint = tuple[dict[str, Any], float]


@dataclass(frozen=True)
class RunRow:
    """One finished run as the claims see it: experiment and grid axes, flat metrics, the payload and, for studies,
    the (axes, score) points its command declares (``CommandInfo.study_points``)."""

    id: str
    experiment: str
    axes: Mapping[str, Any]
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    payload: Mapping[str, Any] | None = None
    points: tuple[StudyPoint, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    #: task -> its majority-class (else uniform-chance) dev score on the examples this run was scored on
    chance: Mapping[str, float] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.axes.get("seed", self.options.get("seed", 0)))

    @property
    def task(self) -> str | None:
        value = self.axes.get("task", self.options.get("task"))
        return None if value is None else str(value)

    @property
    def model(self) -> str:
        return str(self.axes.get("model", self.options.get("model") or "default"))

    @property
    def deepened(self) -> bool:
        return self.model.startswith(DEEPENED_PREFIX)


@dataclass(frozen=True)
class Claim:
    """One row of the claims table. ``difference`` is claimed minus reference side (or the measured value minus a
    stated threshold); ``sides`` are the two sides' own intervals; ``runs`` the run ids it rests on."""

    paper: str
    id: str
    statement: str
    scope: str
    kind: str
    measurement: str
    difference: Interval
    verdict: str
    tolerance: float | None = None
    rule: str = ""
    note: str = ""
    sides: Mapping[str, Interval] = field(default_factory=dict)
    runs: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    heads: tuple[int, int] | None = None  # (learned, total) fine-tuning heads the claim rests on; None: no heads
    #: seeds the verdict read (an adaptive look may read fewer than were run) and, while a claim is still open
    #: under adaptive seeds, how many seeds its next look needs (0: final, more seeds would not be read)
    seeds_used: int = 0
    needs_seeds: int = 0
    #: the per-seed values the difference summarises, in seed order (every seed run, read or not)
    per_seed: tuple[float, ...] = ()
    #: experiment -> the arms of its runs the claim reads (token strategies, hidden states, K; in the study's option
    #: language, :data:`bertscope.replicate.protocols.ARM_OPTIONS`); an experiment it rests on but does not list is
    #: read whole. A later round of adaptive seeds trains only the arms of open claims.
    arms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def learned_share(self) -> float | None:
        """The share of the claim's heads that learned (None when it rests on no trained head, or none finished)."""
        return None if not self.heads or not self.heads[1] else self.heads[0] / self.heads[1]

    def to_dict(self) -> dict[str, Any]:
        return {"paper": self.paper, "id": self.id, "statement": self.statement, "scope": self.scope,
                "kind": self.kind, "measurement": self.measurement, "difference": self.difference.to_dict(),
                "verdict": self.verdict, "tolerance": self.tolerance, "rule": self.rule, "note": self.note,
                "sides": {k: v.to_dict() for k, v in self.sides.items()}, "runs": list(self.runs),
                "details": dict(self.details),
                "heads": None if self.heads is None else {"learned": self.heads[0], "total": self.heads[1]},
                "learned_share": self.learned_share, "seeds_used": self.seeds_used,
                "needs_seeds": self.needs_seeds, "per_seed": list(self.per_seed),
                "arms": {k: list(v) for k, v in self.arms.items()}}


def _rule(kind: str, tolerance: float | None, looks: LookPlan | None = None) -> str:
    which = ("95% interval" if looks is None else
             f"interval of the first decisive look (seeds {', '.join(map(str, looks.looks))}; alpha 0.05 spent over "
             "the looks, docs/statistics.md)")
    if kind == "better":
        return f"supported if the whole {which} of the difference is > 0"
    if kind == "worse":
        return f"supported if the whole {which} of the difference is < 0"
    if kind == "no_worse":
        return (f"supported if the whole {which} of the difference is >= -{tolerance:g} (no worse by more than "
                f"{tolerance:g}; better counts); not supported if it is wholly below -{tolerance:g}")
    return f"supported if the whole {which} of the difference lies within ±{tolerance:g}"


def _open_note(kind: str, tolerance: float | None, interval: Interval, looks: LookPlan, *,
               futile: bool = False) -> str:
    """Why a claim is still undecided at the last look (or stopped early for futility), and what would decide it."""
    near = min(boundaries(kind, tolerance), key=lambda e: abs(interval.mean - e))
    if futile:
        return (f"stopped for futility after {interval.n} seeds: even the last look ({looks.max_seeds} seeds) could "
                f"not decide it, the mean difference {interval.mean:+.3f} lying within that look's half-width (at "
                f"an optimistic spread) of the boundary {near:+g}; the true difference is near the boundary or "
                "too noisy per seed: many more seeds, or less noise per seed (more training, docs/power.md), "
                "would decide it")
    return (f"undecided at the last look ({looks.max_seeds} seeds): the mean difference {interval.mean:+.3f} is "
            f"within the interval's half-width of the boundary {near:+g}; more seeds (--max-seeds), or less noise "
            "per seed (more training or dev examples, docs/power.md), would decide it")


def _claim(paper: str, cid: str, statement: str, scope: str, kind: str, measurement: str, difference: Interval, *,
           tolerance: float | None = None, note: str = "", sides: Mapping[str, Interval] | None = None,
           runs: Iterable[str] = (), details: Mapping[str, Any] | None = None,
           heads: Sequence[Head] | None = None, seeds: Sequence[int] | None = None,
           chance: float | None = None, arms: Mapping[str, Iterable[str]] | None = None) -> Claim:
    """One row; ``heads``: (seed, learned) of every head it rests on (None: it rests on no trained head);
    ``seeds``: the seed of each per-seed difference, in order; ``chance``: the majority-class score both ``sides``
    are checked against (see the module); ``arms``: experiment -> the arms of its runs the row reads.

    Under adaptive seeds (:data:`_LOOKS` set) a difference over seeds is read look by look
    (:func:`bertscope.core.sequential.sequential_verdict`): the row shows the interval of the look that decided it
    (or of the last look its seeds reached), and ``needs_seeds`` says what the next look wants."""
    looks = _LOOKS.get()
    per_seed = difference.values
    judged = verdict(difference, kind, tolerance or 0.0)
    seeds_used, needs = difference.n, 0
    notes = [note] if note else []
    extra: dict[str, Any] = {}
    if looks is not None and difference.method in ("t", "none"):
        reading = sequential_verdict(per_seed, looks, kind, tolerance or 0.0)
        judged, seeds_used, needs = reading.verdict, reading.seeds_used, reading.needs_seeds
        difference = reading.interval or difference
        extra["sequential"] = {k: v for k, v in reading.to_dict().items() if k != "interval"} | {
            "looks": looks.to_dict()}
        if not needs and not reading.decided and reading.interval is not None:
            notes.append(_open_note(kind, tolerance, reading.interval, looks, futile=reading.futile))
    if difference.n == 0:
        notes.append("no finished runs")
    elif difference.low is None:
        notes.append("one seed: no interval")
    if heads is not None and seeds is not None and len(seeds) == len(per_seed) and seeds_used > 0:
        read = set(seeds[:seeds_used])  # the verdict rests on the heads of the seeds it read, not on later ones
        heads = [h for h in heads if h[0] in read]
    counted = None if heads is None else (sum(1 for _, learned in heads if learned), len(heads))
    if counted is not None and counted[0] < counted[1]:
        judged, needs = "inconclusive", 0  # more seeds do not make a head learn
        notes.append(f"inconclusive: {counted[1] - counted[0]} of {counted[1]} heads did not learn (training loss at "
                     f"the constant predictor's, or one predicted class); likely remedy: {TRAIN_LONGER}, or {REMEDY}")
    means = [v.mean for v in (sides or {}).values() if v.n]
    if chance is not None and len(means) == 2 and all(m <= chance + CHANCE_MARGIN for m in means):
        if judged == "supported":
            judged, needs = "inconclusive", 0
        notes.append(f"both sides at chance level (majority-class score {chance:.3f} + {CHANCE_MARGIN:g})")
    if chance is not None:
        extra["majority_class_score"] = chance
    if needs:  # still open (no guard stopped it): what the next round runs for it
        notes.append(f"open after {len(per_seed)} seed(s): the next look reads {needs}")
    return Claim(paper, cid, statement, scope, kind, measurement, difference, judged, tolerance,
                 _rule(kind, tolerance, looks if "sequential" in extra else None), "; ".join(notes),
                 dict(sides or {}), tuple(sorted(set(runs))), {**(details or {}), **extra}, counted, seeds_used,
                 needs, per_seed, {k: tuple(str(a) for a in v) for k, v in (arms or {}).items()})


def _run_learned(row: RunRow) -> bool:
    """A fine-tuning run's flag: results' ``learning.learned``, else the flat metric ``learned`` (1/0); a run
    recorded before the flag existed counts as learned (as :func:`bertscope.studies.common.not_learned` does)."""
    learning = (row.payload or {}).get("learning")
    if isinstance(learning, Mapping) and "learned" in learning:
        return bool(learning["learned"])
    value = row.metrics.get("learned")
    return value is None or float(value) >= 0.5


#: one fine-tuning head a claim rests on: the seed it trained with, and whether it learned
Head = tuple[int, bool]


def head_flags(rows: Iterable[RunRow], keep: Callable[[Mapping[str, Any]], bool] | None = None) -> list[Head]:
    """Every head in ``rows`` as (seed, learned): a study's run records (``payload["runs"]``, those ``keep``
    accepts when given), a fine-tuning run's own flag otherwise. The seed lets a verdict read at an early look
    count only the heads of the seeds it read."""
    flags: list[Head] = []
    for row in rows:
        records = (row.payload or {}).get("runs")
        if isinstance(records, list) and (row.points or records):
            flags += [(row.seed if r.get("seed") is None else int(r["seed"]), r.get("learned") is not False)
                      for r in records if isinstance(r, Mapping) and (keep is None or keep(r))]
        else:
            flags.append((row.seed, _run_learned(row)))
    return flags


def _chance(rows: Iterable[RunRow], task: str | None) -> float | None:
    """The task's majority-class score (the mean over runs, whose seeded dev subsets may differ)."""
    values = [r.chance[task] for r in rows if task is not None and task in r.chance]
    return statistics.fmean(values) if values else None


def _paired(claimed: Mapping[int, float],
            reference: Mapping[int, float]) -> tuple[Interval, dict[str, Interval], list[int]]:
    """The paired difference over the seeds both sides have, each side's own summary, and the seed of each
    difference the interval summarises (its finite ones, in order)."""
    seeds = sorted(set(claimed) & set(reference))
    a, b = [claimed[s] for s in seeds], [reference[s] for s in seeds]
    return (paired_difference(a, b), {"claimed": summarize(a), "reference": summarize(b)},
            _finite_seeds(seeds, [x - y for x, y in zip(a, b, strict=True)]))


def _finite_seeds(seeds: Sequence[int], differences: Sequence[float]) -> list[int]:
    """The seeds whose difference is finite: the seed of each value an :class:`Interval` summarises."""
    return [s for s, d in zip(seeds, differences, strict=True) if math.isfinite(d)]


def _shifted(values: Sequence[float], threshold: float) -> Interval:
    return summarize([v - threshold for v in values])


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# ------------------------------------------------------------------------------------------------------- paper 1


def _layer_top1(row: RunRow) -> dict[int, float]:
    """Top-1 reconstruction per hidden state (group ``all``) of a reconstruct run."""
    out: dict[int, float] = {}
    for record in (row.payload or {}).get("records") or []:
        if record.get("group", "all") == "all" and _finite(record.get("top1")) is not None:
            out[int(record["layer"])] = float(record["top1"])
    if not out:  # a payload without records: the flat metrics layer<L>.top1
        for key, value in row.metrics.items():
            parts = key.split(".")
            if len(parts) == 2 and parts[0].startswith("layer") and parts[1] == "top1" and _finite(value) is not None:
                out[int(parts[0][5:])] = float(value)  # type: ignore[arg-type]  # _finite checked it
    return out


def _layer_agreement(row: RunRow) -> dict[int, float]:
    """Per hidden state, the share of positions whose top-1 equals the final layer's (``final_agreement``)."""
    return {int(r["layer"]): float(r["final_agreement"]) for r in (row.payload or {}).get("records") or []
            if r.get("group", "all") == "all" and _finite(r.get("final_agreement")) is not None}


def head_text(payload: Mapping[str, Any] | None) -> str:
    """Whose head decoded the layers, which text fitted it and which text was measured (reconstruct's record)."""
    head = (payload or {}).get("head") or {}
    owner = (head.get("head_from") or {}).get("from", "self")
    whose = {"original": "the original's", "path": "another model's"}.get(str(owner), "its own")
    fit = head.get("fit") or {}
    corpus, measured = fit.get("corpus") or {}, fit.get("measured_texts") or {}
    if head.get("mode") == "fit":
        tasks = ",".join(str(t) for t in corpus.get("tasks") or [])
        fitted = corpus.get("train_sentences", corpus.get("num_sentences", "?"))
        where = "/".join(str(x) for x in (measured.get("task"), measured.get("split")) if x)
        text = (f"{whose} fitted head (fit on {corpus.get('kind', '?')}{f' {tasks}' if tasks else ''} "
                f"{corpus.get('split', '')}".rstrip() + f", {fitted} sentences")
        if _finite(fit.get("heldout_masked_top1")) is not None:
            text += f", held-out masked top-1 {float(fit['heldout_masked_top1']):.3f}"
        text += (f"); measured on {measured.get('kind', '?')}{f' {where}' if where else ''} "
                 f"({measured.get('num_sentences', '?')} sentences)")
        overlap = (fit.get("fit_overlap") or {}).get("measured_in_fit")
        return text + (f"; FLAGGED: {overlap} measured sentences in the fit corpus" if overlap else "")
    texts = (payload or {}).get("texts") or {}
    return f"{whose} {head.get('mode', '?')} MLM head; measured on {texts.get('source', texts.get('kind', '?'))}"


def _every_layer(rows: Sequence[RunRow], model: str, statement: str, cid: str) -> Claim:
    threshold = TOLERANCES["p1.reconstruct.threshold"]
    mins: list[float] = []
    per_layer: dict[int, list[float]] = defaultdict(list)
    agreement: dict[int, list[float]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r.seed):
        layers = _layer_top1(row)
        if layers:
            mins.append(min(layers.values()))
            for layer, value in layers.items():
                per_layer[layer].append(value)
        for layer, value in _layer_agreement(row).items():
            agreement[layer].append(value)
    family = next((str((r.payload or {}).get("model", {}).get("family")) for r in rows if r.payload), None)
    vocab = next(((r.payload or {}).get("model", {}).get("vocab_size") for r in rows if r.payload), None)
    details: dict[str, Any] = {"family": family, "threshold": threshold,
                               "uniform_chance": 1.0 / float(vocab) if vocab else None,
                               "per_layer_top1": {str(k): summarize(v).to_dict() for k, v in sorted(per_layer.items())},
                               "per_layer_final_agreement": {str(k): summarize(v).to_dict()
                                                             for k, v in sorted(agreement.items())},
                               "head": sorted({head_text(r.payload) for r in rows if r.payload})}
    heads = [head_text(r.payload) for r in sorted(rows, key=lambda r: r.seed) if r.payload]
    notes = [heads[0] + (f" (seed {min(r.seed for r in rows)}; every seed's in claims.json)" if len(set(heads)) > 1
                         else "")] if heads else []
    if agreement:  # the lens's second view: how early the layers already decode what the last layer does
        first = min(agreement)
        notes.append(f"agreement with the final layer's top-1: {statistics.fmean(agreement[first]):.2f} at layer "
                     f"{first}, " + ", ".join(f"{statistics.fmean(agreement[k]):.2f} at {k}"
                                              for k in sorted(agreement)[1:]))
    return _claim("paper1", cid, statement, model, "better",
                  f"min over hidden states of top-1 reconstruction - {threshold:g}", _shifted(mins, threshold),
                  note="; ".join(notes), sides={"min-layer top-1": summarize(mins)}, runs=[r.id for r in rows],
                  details=details)


def _deepen_finetune(rows: Sequence[RunRow]) -> list[Claim]:
    claims = []
    by_task: dict[str, list[RunRow]] = defaultdict(list)
    for row in rows:
        by_task[row.task or "?"].append(row)
    for task, task_rows in sorted(by_task.items()):
        deep = {r.seed: v for r in task_rows if r.deepened and (v := _score(r)) is not None}
        orig = {r.seed: v for r in task_rows if not r.deepened and (v := _score(r)) is not None}
        difference, sides, seeds = _paired(deep, orig)
        claims.append(_claim("paper1", "p1.deepen-finetune", "Deepening (a duplicated layer) then fine-tuning beats "
                             "fine-tuning the original", task, "better", "dev score: deepened - original, paired by "
                             "seed", difference, sides=sides, runs=[r.id for r in task_rows],
                             heads=head_flags(task_rows), seeds=seeds, chance=_chance(task_rows, task)))
    return claims


def _score(row: RunRow) -> float | None:
    """A fine-tuning run's dev score: the task's combined official metric (GLUE's per-task score)."""
    value = row.metrics.get("final.combined_score")
    if value is None and row.payload is not None:
        value = row.payload.get("final_score")
    return _finite(value)


def _layer_scan(rows: Sequence[RunRow]) -> Claim:
    agreement, most = TOLERANCES["p1.scan.agreement"], TOLERANCES["p1.scan.most"]
    by_seed: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        for variant in (row.payload or {}).get("rows") or []:
            if variant.get("status") == "ok" and _finite(variant.get("top1_agreement")) is not None:
                by_seed[row.seed].append(1.0 if float(variant["top1_agreement"]) >= agreement else 0.0)
    shares = [statistics.fmean(v) for _, v in sorted(by_seed.items()) if v]
    difference = _shifted(shares, most)
    note = ""
    if len(shares) == 1:  # one seed: resample the variants instead (how much the share depends on which layers)
        flags = next(iter(by_seed.values()))
        difference = bootstrap_difference(lambda _y, p: float(np.mean(p)), [0.0] * len(flags), flags,
                                          [most] * len(flags))
        note = "one seed: bootstrap over the variants"
    variants = sum(len(v) for v in by_seed.values())
    return _claim("paper1", "p1.layer-scan", "Removing or duplicating most single layers barely changes the outputs",
                  "duplicate + remove", "better",
                  f"share of one-layer variants with top-1 agreement >= {agreement:g} - {most:g}", difference,
                  note=note, sides={"share": summarize(shares)}, runs=[r.id for r in rows],
                  details={"agreement_threshold": agreement, "most": most, "variants": variants})


#: the two lenses a ``reconstruct --lens tuned`` run measures side by side
_LENSES = ("logit", "tuned")


def _lens_kl(row: RunRow, measured: bool = True) -> dict[str, dict[int, float]]:
    """Per lens, KL(p_final || p_layer) per hidden state of a ``reconstruct --lens tuned`` run: on the measured text
    (the flat metrics ``lens.<lens>.layer<l>.kl_to_final``, else the payload's ``lens.records``), or with
    ``measured=False`` on the fit corpus's held-out part (``lens.heldout.<lens>.layer<l>.kl``)."""
    out: dict[str, dict[int, float]] = {kind: {} for kind in _LENSES}
    for key, value in row.metrics.items():
        parts = key.split(".")
        if measured and len(parts) == 4 and parts[3] == "kl_to_final":
            kind, layer = parts[1], parts[2]
        elif not measured and len(parts) == 5 and parts[1] == "heldout" and parts[4] == "kl":
            kind, layer = parts[2], parts[3]
        else:
            continue
        number = _finite(value)
        if parts[0] == "lens" and kind in out and layer.startswith("layer") and number is not None:
            out[kind][int(layer[5:])] = number
    if measured and not any(out.values()):  # a run stored without its flat metrics: the result file's records
        for record in ((row.payload or {}).get("lens") or {}).get("records") or []:
            number = _finite(record.get("kl_to_final"))
            if record.get("lens") in out and number is not None:
                out[str(record["lens"])][int(record["layer"])] = number
    return out


def _per_layer(rows: Sequence[RunRow], measured: bool) -> dict[int, dict[str, Any]]:
    """Per hidden state: each lens's KL over seeds and the paired difference tuned - logit (``stats`` dicts)."""
    values: dict[int, dict[str, dict[int, float]]] = defaultdict(lambda: {kind: {} for kind in _LENSES})
    for row in rows:
        for kind, layers in _lens_kl(row, measured).items():
            for layer, value in layers.items():
                values[layer][kind][row.seed] = value
    out = {}
    for layer, sides in sorted(values.items()):
        difference = _paired(sides["tuned"], sides["logit"])[0]
        out[layer] = {"logit": summarize(list(sides["logit"].values())).to_dict(),
                      "tuned": summarize(list(sides["tuned"].values())).to_dict(), "difference": difference.to_dict()}
    return out


def _tuned_lens(rows: Sequence[RunRow]) -> Claim:
    """The tuned lens is closer to the final distribution than the logit lens at every hidden state below the last:
    per seed, the largest (least negative) tuned - logit KL over hidden states 0..L-1 (the weakest layer, as the
    every-layer claim takes the lowest top-1); supported when its whole interval is below 0."""
    worst: list[float] = []
    sides: dict[str, list[float]] = {kind: [] for kind in _LENSES}
    weakest: dict[int, int] = {}
    for row in sorted(rows, key=lambda r: r.seed):
        kl = _lens_kl(row)
        layers = sorted(set(kl["logit"]) & set(kl["tuned"]))
        below = layers[:-1]  # the last hidden state is the target itself: both lenses are about 0 there
        if not below:
            continue
        gaps = {layer: kl["tuned"][layer] - kl["logit"][layer] for layer in below}
        weakest[row.seed] = max(gaps, key=lambda layer: gaps[layer])
        worst.append(gaps[weakest[row.seed]])
        for kind in _LENSES:
            sides[kind].append(statistics.fmean(kl[kind][layer] for layer in below))
    per_layer = _per_layer(rows, measured=True)
    last = max(per_layer, default=None)
    listing = ", ".join(f"{layer}{' (last)' if layer == last else ''}: {v['logit']['mean']:.3f}/"
                        f"{v['tuned']['mean']:.3f}" for layer, v in per_layer.items())
    measurement = ("max over hidden states 0..L-1 of (tuned - logit) KL to the final layer's distribution, nats, "
                   "measured text, per seed" + (f"; mean KL logit/tuned by hidden state: {listing}" if listing else ""))
    notes = []
    lens_info = next((((r.payload or {}).get("lens") or {}).get("tuned") or {} for r in rows
                      if ((r.payload or {}).get("lens") or {}).get("tuned")), {})
    corpus = lens_info.get("corpus") or {}
    if lens_info:
        notes.append(f"translators trained on {corpus.get('kind', '?')} ({corpus.get('train_sentences', '?')} "
                     f"sentences, {(lens_info.get('options') or {}).get('steps', '?')} steps), never on the measured "
                     "text")
    if weakest:
        notes.append("weakest hidden state per seed: " + ", ".join(f"{layer} (seed {seed})"
                                                                   for seed, layer in sorted(weakest.items())))
    heads = sorted({head_text(r.payload) for r in rows if r.payload})
    notes += heads[:1]
    model = next((r.model for r in rows), "(none)")
    return _claim("paper1", "p1.tuned-lens", "The tuned lens is closer to the final distribution than the logit lens "
                  "at every layer below the last", model, "worse", measurement, summarize(worst),
                  note="; ".join(notes),
                  sides={f"{kind} KL (mean over hidden states 0..L-1)": summarize(sides[kind]) for kind in _LENSES},
                  runs=[r.id for r in rows],
                  details={"per_layer_kl": {str(k): v for k, v in per_layer.items()},
                           "heldout_per_layer_kl": {str(k): v for k, v in _per_layer(rows, measured=False).items()},
                           "weakest_layer": {str(k): v for k, v in sorted(weakest.items())},
                           "last_layer_deviation": lens_info.get("last_layer_deviation"), "head": heads})


def paper1_claims(rows: Sequence[RunRow]) -> list[Claim]:
    """Paper 1's claims from the runs of its protocol (experiments reconstruct, layer-scan, deepen-finetune and the
    logit lens beside the tuned lens)."""
    by_exp: dict[str, list[RunRow]] = defaultdict(list)
    for row in rows:
        by_exp[row.experiment].append(row)
    claims: list[Claim] = []
    recon = by_exp.get("reconstruct", [])
    by_model: dict[str, list[RunRow]] = defaultdict(list)
    for row in recon:
        by_model[row.model].append(row)
    originals = [m for m in by_model if not m.startswith(DEEPENED_PREFIX)]
    per_model = [_every_layer(by_model[m], m, "The MLM output layer reconstructs the input from every layer "
                              "(top-1 well above chance at every layer)", "p1.every-layer") for m in originals]
    if not per_model:
        per_model = [_every_layer([], "(none)", "The MLM output layer reconstructs the input from every layer",
                                  "p1.every-layer")]
    claims += per_model
    claims.append(_across_families(per_model))
    deepened = [m for m in by_model if m.startswith(DEEPENED_PREFIX)] or ["(none)"]
    claims += [_every_layer(by_model.get(m, []), m, "Reconstruction from every layer holds with duplicated layers",
                            "p1.duplicated-layers") for m in deepened]
    claims += _deepen_finetune(by_exp.get("deepen-finetune", [])) or [
        _claim("paper1", "p1.deepen-finetune", "Deepening then fine-tuning beats the original", "(none)", "better",
               "dev score: deepened - original", summarize([]))]
    claims.append(_layer_scan(by_exp.get("layer-scan", [])))
    claims.append(_tuned_lens(by_exp.get(TUNED_LENS, [])))
    return claims


def _across_families(per_model: Sequence[Claim]) -> Claim:
    families = sorted({str(c.details.get("family")) for c in per_model if c.difference.n})
    weakest = min(per_model, key=lambda c: c.difference.mean if c.difference.n else math.inf)
    statement = "Reconstruction from every layer holds across model families"
    measurement = "the weakest model's min-layer top-1 - threshold; supported when every family's claim is"
    base = _claim("paper1", "p1.across-families", statement, ", ".join(families) or "(none)", "better", measurement,
                  weakest.difference, runs=[r for c in per_model for r in c.runs],
                  details={"families": families, "models": [c.scope for c in per_model],
                           "verdicts": {c.scope: c.verdict for c in per_model}})
    verdicts = {c.verdict for c in per_model}
    if len(families) < 2:
        judged, note = "inconclusive", "inconclusive: one family measured" if families else "no family measured"
    elif verdicts == {"supported"}:
        judged, note = "supported", ""
    elif "not supported" in verdicts:
        judged, note = "not supported", "at least one family's claim is not supported"
    else:
        judged, note = "inconclusive", "some family's claim is inconclusive"
    open_families = max((c.needs_seeds for c in per_model), default=0)
    return replace(base, verdict=judged, tolerance=None, note=note, needs_seeds=open_families,
                   rule="supported if there are >= 2 families and every family's every-layer claim is supported")


# ------------------------------------------------------------------------------------------------------- paper 2


def _points(rows: Iterable[RunRow]) -> dict[str, dict[int, list[StudyPoint]]]:
    """task -> seed -> the study's points."""
    out: dict[str, dict[int, list[StudyPoint]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        out[row.task or "?"][row.seed].extend(row.points)
    return out


def _tokens(rows: Sequence[RunRow]) -> list[Claim]:
    tolerance = TOLERANCES["p2.tokens"]
    claims = []
    for task, seeds in sorted(_points(rows).items()):
        task_rows = _task_rows(rows, task)
        scores: dict[str, dict[int, float]] = defaultdict(dict)
        for seed, points in seeds.items():
            for axes, score in points:
                scores[str(axes.get("token"))][seed] = score
        for token in [t for t in scores if t != "cls"]:
            difference, sides, paired = _paired(scores[token], scores.get("cls", {}))
            claims.append(_claim("paper2", "p2.tokens", "A non-[CLS] token vector is as good as [CLS]",
                                 f"{token} vs cls, {task}", "no_worse", f"dev score: {token} - cls, paired by seed",
                                 difference, tolerance=tolerance, sides=sides, runs=[r.id for r in task_rows],
                                 heads=head_flags(task_rows, _where("token_strategy", {token, "cls"})), seeds=paired,
                                 chance=_chance(task_rows, task), arms={"tokens": ("cls", token)}))
    return claims


Keep = Callable[[Mapping[str, Any]], bool]


def _where(key: str, values: set[Any], cast: Callable[[Any], Any] = str) -> Keep:
    """Run records whose ``key`` (cast) is one of ``values``: the runs of a comparison's two sides."""
    def keep(record: Mapping[str, Any]) -> bool:
        try:
            return cast(record.get(key)) in values
        except (TypeError, ValueError):
            return False
    return keep


def _dims_of(k: int) -> Keep:
    """The dims study's runs of both sides of "k vs all": every all-dimension run and the random K = k runs."""
    def keep(record: Mapping[str, Any]) -> bool:
        return record.get("selection") == "all" or (record.get("selection") == "random" and str(record.get("k")) == str(k))
    return keep


def _task_rows(rows: Iterable[RunRow], task: str) -> list[RunRow]:
    return [r for r in rows if (r.task or "?") == task]


def _dims(rows: Sequence[RunRow]) -> list[Claim]:
    tolerance = TOLERANCES["p2.dims"]
    claims = []
    for task, seeds in sorted(_points(rows).items()):
        task_rows = _task_rows(rows, task)
        by_k: dict[str, dict[int, float]] = defaultdict(dict)
        for seed, points in seeds.items():
            groups: dict[str, list[float]] = defaultdict(list)
            for axes, score in points:
                groups[str(axes.get("dims"))].append(score)
            for dims, values in groups.items():
                by_k[dims][seed] = statistics.fmean(values)  # the mean over the random subsets of one seed
        for k in (2, 3):
            difference, sides, paired = _paired(by_k.get(f"random:{k}", {}), by_k.get("all", {}))
            claims.append(_claim("paper2", "p2.dims", "2-3 hidden dimensions suffice (as good as all)",
                                 f"k={k} vs all, {task}", "no_worse",
                                 f"dev score: random {k} dims (mean over subsets) - all dims, paired by seed",
                                 difference, tolerance=tolerance, sides=sides, runs=[r.id for r in task_rows],
                                 heads=head_flags(task_rows, _dims_of(k)), seeds=paired,
                                 chance=_chance(task_rows, task), arms={"dims": (str(k), "all")}))
    return claims


def _layers(rows: Sequence[RunRow], token: str | None = None, experiment: str = "layers") -> list[Claim]:
    """The lower/higher layers rows of one layers study (``token``: the token it read, when not the paper's
    [CLS], named in each row's scope; ``experiment``: the study's experiment name)."""
    tolerance = TOLERANCES["p2.layers.higher"]
    read = f", token {token}" if token else ""
    claims = []
    for task, seeds in sorted(_points(rows).items()):
        task_rows = _task_rows(rows, task)
        per_seed = {seed: {int(axes["layer"]): score for axes, score in points if "layer" in axes}
                    for seed, points in seeds.items()}
        depth = max((max(v) for v in per_seed.values() if v), default=0)
        lower = [layer for layer in range(1, depth // 2 + 1)]
        higher = [layer for layer in range(depth // 2 + 1, depth)]
        for group, layers, kind, cid, statement in (
                (lower, "lower", "worse", "p2.layers.lower", "Lower layers are weaker than the last"),
                (higher, "higher", "no_worse", "p2.layers.higher", "Higher layers are as good as the last")):
            used = sorted(seed for seed, s in per_seed.items()
                          if depth in s and group and all(layer in s for layer in group))
            diffs = [statistics.fmean(per_seed[s][layer] - per_seed[s][depth] for layer in group) for s in used]
            sides = {"claimed": summarize([statistics.fmean(per_seed[s][layer] for layer in group) for s in used]),
                     "reference": summarize([per_seed[s][depth] for s in used])}
            claims.append(_claim("paper2", cid, statement, f"layers {_span(group)} vs {depth}, {task}{read}", kind,
                                 f"mean over layers {_span(group)} of (score - last layer's score), per seed",
                                 summarize(diffs), tolerance=tolerance if kind == "no_worse" else None, sides=sides,
                                 runs=[r.id for r in task_rows], details={"layers": group, "last": depth,
                                                                          "group": layers},
                                 heads=head_flags(task_rows, _where("layer", {*group, depth}, int)),
                                 seeds=_finite_seeds(used, diffs),
                                 chance=_chance(task_rows, task), arms={experiment: tuple(map(str, (*group, depth)))}))
    return claims


def _span(layers: Sequence[int]) -> str:
    return "-" if not layers else str(layers[0]) if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"


def _freezing(frozen: Sequence[RunRow], tokens: Sequence[RunRow]) -> list[Claim]:
    """Frozen encoder vs fine-tuned encoder. The fine-tuned side is the tokens study's [CLS] run of the last layer
    with all dimensions: the very run (one identity) a separate ``finetune --freeze none`` would be, so it runs once."""
    claims = []
    tuned_points = _points(tokens)
    for task in sorted({r.task or "?" for r in frozen}):
        frozen_rows, tuned_rows = _task_rows(frozen, task), _task_rows(tokens, task)
        a = {r.seed: v for r in frozen_rows if (v := _score(r)) is not None}
        b = {seed: score for seed, points in tuned_points.get(task, {}).items()
             for axes, score in points if str(axes.get("token")) == "cls"}
        difference, sides, paired = _paired(a, b)
        claims.append(_claim("paper2", "p2.freezing", "Freezing the encoder hurts", task, "worse",
                             "dev score: frozen encoder - fine-tuned encoder (the tokens study's [CLS] run), "
                             "paired by seed", difference, sides=sides,
                             runs=[r.id for r in (*frozen_rows, *tuned_rows)],
                             heads=[*head_flags(frozen_rows),
                                    *head_flags(tuned_rows, _where("token_strategy", {"cls"}))], seeds=paired,
                             chance=_chance((*frozen_rows, *tuned_rows), task), arms={"tokens": ("cls",)}))
    return claims


def _cross(rows: Sequence[RunRow]) -> list[Claim]:
    tolerance = TOLERANCES["p2.cross"]
    after_a: dict[int, float] = {}
    after_b: dict[int, float] = {}
    tasks: list[str] = []
    for row in rows:
        order = [str(t) for t in ((row.payload or {}).get("summary", {}).get("tasks") or [])]
        if len(order) < 2:
            continue
        tasks = order[:2]
        for axes, score in row.points:
            if axes.get("target") == tasks[0] and axes.get("source") == f"after {tasks[0]}":
                after_a[row.seed] = score
            if axes.get("target") == tasks[0] and axes.get("source") == f"after {tasks[1]}":
                after_b[row.seed] = score
    difference, sides, paired = _paired(after_b, after_a)
    a, b = tasks if len(tasks) == 2 else ["A", "B"]
    return [_claim("paper2", "p2.cross", "Cross-fine-tuning forgets little (task A after B as good as after A)",
                   f"{a} after {b} vs after {a}", "no_worse", f"{a} dev score: after stage {b} - after stage {a}, "
                   "paired by seed", difference, tolerance=tolerance, sides=sides, runs=[r.id for r in rows],
                   # the heads both scores come from: task A's (trained at stage A, then frozen); B's head is not
                   # read, and B's stage moves the encoder whether or not its own head learns
                   heads=head_flags(rows, lambda r: r.get("task") == a) if rows else None, seeds=paired,
                   chance=_chance(rows, a))]


def _token_of(by_exp: Mapping[str, Sequence[RunRow]]) -> str:
    """The token the native layers study read (from its runs' options)."""
    return next((str(r.options.get("token")) for r in by_exp.get(NATIVE_LAYERS, []) if r.options.get("token")),
                "native")


def paper2_claims(rows: Sequence[RunRow]) -> list[Claim]:
    """Paper 2's claims from the runs of its protocol (tokens, dims, layers, frozen, cross)."""
    by_exp: dict[str, list[RunRow]] = defaultdict(list)
    for row in rows:
        by_exp[row.experiment].append(row)
    groups = [
        (_tokens(by_exp.get("tokens", [])), "p2.tokens", "A non-[CLS] token vector is as good as [CLS]", "no_worse"),
        (_dims(by_exp.get("dims", [])), "p2.dims", "2-3 hidden dimensions suffice (as good as all)", "no_worse"),
        (_layers(by_exp.get("layers", [])) + _layers(by_exp.get(NATIVE_LAYERS, []), _token_of(by_exp), NATIVE_LAYERS),
         "p2.layers", "Lower layers weaker, higher layers similar", "worse"),
        (_freezing(by_exp.get("frozen", []), by_exp.get("tokens", [])), "p2.freezing",
         "Freezing the encoder hurts", "worse"),
        (_cross(by_exp.get("cross", [])), "p2.cross", "Cross-fine-tuning forgets little", "no_worse"),
    ]
    claims: list[Claim] = []
    for found, cid, statement, kind in groups:  # a claim without finished runs still gets its (inconclusive) row
        claims += found or [_claim("paper2", cid, statement, "(none)", kind, "no finished runs", summarize([]),
                                   tolerance=TOLERANCES.get(cid))]
    return claims


def claims_for(paper: str, rows: Sequence[RunRow], looks: LookPlan | None = None) -> list[Claim]:
    """The paper's claims from its runs; with ``looks`` (adaptive seeds) every difference over seeds is read at
    those looks, with alpha spent over them, instead of as one 95% interval."""
    token = _LOOKS.set(looks)
    try:
        return paper1_claims(rows) if paper == "paper1" else paper2_claims(rows)
    finally:
        _LOOKS.reset(token)
