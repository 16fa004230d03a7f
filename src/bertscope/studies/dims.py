"""``bertscope dims``: how the score depends on the number of hidden dimensions the head sees (paper 2).

Score vs K: for each K, ``--samples`` seeded random subsets of K dimensions (the control, always run), their mean,
standard deviation, min and max, beside the full-dimension run. ``--rank-by weights`` adds the top-K dimensions by the
weight magnitude of the full-dimension run's head (:func:`~bertscope.studies.common.dim_importance`); ``--rank-by
variance`` the top-K by the variance of the pretrained encoder's token vectors on the training subset.

``--find-effective`` (paper 2's procedure; details the abstract leaves open are options): draw ``--start-subsets``
random subsets of ``--start`` dimensions; fine-tune with each, then with each of its ``start`` subsets missing one
dimension; a dimension is *marked* when removing it lowers the score by more than ``--hurt-threshold``. The marked
dimensions of all starts are recombined into pairs (at most ``--max-pairs``, in a seeded order); a pair is
*verified* when it scores at least the start subsets' mean score minus ``--hurt-threshold``. The effective
dimensions are those in a verified pair; the table reports, per dimension, how often it was drawn, marked and
verified.

Random subsets are drawn from a generator seeded by (``--seed``, K, sample), independently of the training seed, so
adding a K or a sample never changes the others; the training seed (data subset, head initialisation, batch order)
is ``--seed`` for every run.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from typing import Any

from bertscope.core import stats
from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_k_list
from bertscope.core.progress import progress_setting
from bertscope.core.registry import CommandInfo, ReportSection, StudyPoint
from bertscope.finetune.command import NOT_IDENTITY
from bertscope.finetune.learning import REMEDY
from bertscope.studies.axis import seed_runs
from bertscope.studies.common import (
    HeadRunner,
    StudyResult,
    dim_importance,
    draw_reference,
    execute,
    finetune_config,
    finish_study,
    model_shape,
    plot_title,
    score_label,
    summarise,
)
from bertscope.studies.config import DimsConfig
from bertscope.studies.seed_points import (
    by_seed,
    comparison,
    comparison_columns,
    error_bars,
    point,
    run_seeds,
    seed_note,
)
from bertscope.studies.store import RunSpec, RunStore

__all__ = ["SECTION", "random_subset", "run_dims"]


def random_subset(hidden: int, k: int, seed: int, sample: int, salt: str = "dims") -> tuple[int, ...]:
    """A seeded random subset of K of the ``hidden`` dimensions, sorted; independent of every other (K, sample)."""
    return tuple(sorted(random.Random(f"{salt}|{seed}|{k}|{sample}").sample(range(hidden), k)))


def _idx(dims: tuple[int, ...] | list[int]) -> str:
    return "idx:" + ",".join(str(d) for d in dims)


def _full_spec(config: DimsConfig, hidden: int) -> RunSpec:
    return RunSpec("all", {"selection": "all", "k": hidden, "sample": 0}, finetune_config(config, dims="all"))


def run_dims(config: DimsConfig) -> StudyResult:
    if config.find_effective:
        return _run_find_effective(config)
    depth, hidden = model_shape(config)
    ks = list(parse_k_list(config.k, hidden))
    store = RunStore.of(config)
    runner = HeadRunner([config.selection.token], progress=progress_setting(config.output.progress, config.tracking.log))
    seeds = run_seeds(config)
    rankings: dict[int, list[int] | None] = {}

    def one_seed(per_seed: DimsConfig, desc: str) -> list[dict[str, Any]]:  # same ids, subsets and hashes per seed
        seed_records, rankings[per_seed.encoder.seed] = _seed_runs(per_seed, runner, store, ks, hidden, desc=desc)
        return seed_records

    records = seed_runs("dims", config, seeds, one_seed)
    full = by_seed(records, seeds, selection="all")
    full_point = point(full)

    table = []
    for selection in dict.fromkeys(r["selection"] for r in records):
        for k in sorted({r["k"] for r in records if r["selection"] == selection}):
            runs = by_seed(records, seeds, selection=selection, k=k)
            scores = [r["score"] for group in runs.values() for r in group]
            over_seeds = point(runs)
            # the point's 95% interval: over seeds; with one seed over its random subsets (the replicates it has)
            interval = over_seeds if len(seeds) > 1 else stats.summarize(scores)
            versus = None if selection == "all" else comparison(config.data.task, runs, full, "no_worse", config.tolerance)
            table.append({"selection": selection, "k": k, **summarise(scores), "seeds": over_seeds.n,
                          "low": interval.low, "high": interval.high, "full_score": full_point.mean,
                          **comparison_columns(versus, "vs_all")})
    comparisons = [{"selection": row["selection"], "k": row["k"], "versus": "all", "kind": "no_worse",
                    "tolerance": config.tolerance, "difference": {"mean": row["vs_all"], "low": row["vs_all_low"],
                                                                 "high": row["vs_all_high"]},
                    "verdict": row["vs_all_verdict"]} for row in table if row["selection"] != "all"]
    summary = {"full_score": full_point.mean, "full_score_interval": full_point.to_dict(), "hidden_size": hidden,
               "num_layers": depth, "ks": ks, "rank_by": config.rank_by, "ranking": rankings[seeds[0]],
               "metric": "GLUE task score (mean of official metrics)", "seeds": list(seeds),
               "tolerance": config.tolerance, "comparisons": comparisons}
    if len(seeds) > 1 and config.rank_by != "random":
        summary["rankings"] = {str(s): rankings[s] for s in seeds}

    def plot(ax: Any) -> None:
        for selection in dict.fromkeys(r["selection"] for r in table if r["selection"] != "all"):
            rows = [r for r in table if r["selection"] == selection]
            if len(seeds) > 1:
                ax.errorbar([r["k"] for r in rows], [r["mean"] for r in rows], yerr=error_bars(rows, "mean"),
                            marker="o" if selection == "random" else "s", capsize=3,
                            label=(f"random subsets ({config.samples} per K and seed)" if selection == "random"
                                   else f"top-K by {selection}") + f", mean, 95% interval over {len(seeds)} seeds")
            elif selection == "random":
                ax.errorbar([r["k"] for r in rows], [r["mean"] for r in rows], yerr=[r["std"] for r in rows],
                            marker="o", capsize=3, label=f"random subsets (mean ± std, n={config.samples})")
            else:
                ax.plot([r["k"] for r in rows], [r["mean"] for r in rows], marker="s", label=f"top-K by {selection}")
        ax.axhline(full_point.mean, color="gray", linestyle="--", label=f"all {hidden} dims")
        ax.plot([hidden], [full_point.mean], marker="D", color="gray")
        draw_reference(ax, config.data.task, records)
        ax.set_xscale("log")
        ticks = sorted({*ks, hidden})
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.minorticks_off()
        ax.set_xlabel("dimensions the head sees (K, log scale)")
        ax.set_ylabel(score_label(config.data.task))
        bars = (seed_note(config) if len(seeds) > 1
                else f"error bars: ±1 sample std over {config.samples} random subsets per K" if config.samples > 1
                else "one run per point, no error bars")
        ax.set_title(plot_title(config, "score vs number of dimensions", bars), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    return finish_study("dims", config, table, records, summary, plot=plot,
                        title=f"dims {config.data.task}: score vs K (full {full_point.mean:.4f}"
                              + (f", {len(seeds)} seeds)" if len(seeds) > 1 else ")"),
                        row_key=("selection", "k"))


def _seed_runs(config: DimsConfig, runner: HeadRunner, store: RunStore, ks: list[int], hidden: int,
               desc: str) -> tuple[list[dict[str, Any]], list[int] | None]:
    """One seed's runs of the K sweep (the full-dimension run first) and its ranking (None for random only)."""
    # The full-dimension run first: the reference, and the source of the weight ranking.
    full = execute([_full_spec(config, hidden)], runner, store, progress=False, reuse_siblings=True,
                   want_head=lambda s: config.rank_by == "weights",
                   on_head=lambda s, head: {"dim_importance": dim_importance(head)})[0]
    specs = [RunSpec(f"random k={k} s={s}", {"selection": "random", "k": k, "sample": s},
                     finetune_config(config, dims=_idx(random_subset(hidden, k, config.encoder.seed, s))))
             for k in ks if k < hidden for s in range(config.samples)]
    ranking: list[int] | None = None
    if config.rank_by == "weights":
        if "dim_importance" not in full:
            raise BertscopeError(f"{store.where(_full_spec(config, hidden))} has no dim_importance; rerun with "
                                 "--overwrite")
        ranking = sorted(range(hidden), key=lambda d: -full["dim_importance"][d])
    elif config.rank_by == "variance":
        vectors = runner.train_vectors(finetune_config(config, dims="all"))  # [N, n_layers, H], pretrained
        variance = vectors.double().var(dim=0).mean(dim=0).tolist()
        ranking = sorted(range(hidden), key=lambda d: -variance[d])
    if ranking is not None:
        specs += [RunSpec(f"{config.rank_by} k={k}", {"selection": config.rank_by, "k": k, "sample": 0},
                          finetune_config(config, dims=_idx(sorted(ranking[:k]))))
                  for k in ks if k < hidden]
    return [full, *execute(specs, runner, store, progress=progress_setting(config.output.progress, config.tracking.log),
                           desc=desc, reuse_siblings=True)], ranking


def _run_find_effective(config: DimsConfig) -> StudyResult:
    if config.seeds is not None:
        raise BertscopeError("--find-effective runs one seed (a search, not a point per seed); use --seed, not --seeds")
    _, hidden = model_shape(config)
    if config.start > hidden:
        raise BertscopeError(f"--start {config.start} exceeds the hidden size {hidden}")
    store = RunStore.of(config)
    runner = HeadRunner([config.selection.token], progress=progress_setting(config.output.progress, config.tracking.log))
    starts = [random_subset(hidden, config.start, config.encoder.seed, r, salt="effective") for r in range(config.start_subsets)]

    def spec(run_id: str, phase: str, dims: tuple[int, ...], **params: Any) -> RunSpec:
        return RunSpec(run_id, {"phase": phase, "k": len(dims), **params}, finetune_config(config, dims=_idx(dims)))

    phase1 = []
    for r, subset in enumerate(starts):
        phase1.append(spec(f"start {r}", "start", subset, start=r, removed=None))
        phase1 += [spec(f"start {r} without {d}", "remove", tuple(x for x in subset if x != d), start=r, removed=d)
                   for d in subset]
    # Two starts can share a subset (or a removal subset): run each dimension set once.
    by_dims: dict[tuple[int, ...], dict[str, Any]] = {}
    unique: dict[str, RunSpec] = {}
    for s in phase1:
        unique.setdefault(s.config.selection.dims, s)
    for record in execute(list(unique.values()), runner, store, progress=progress_setting(config.output.progress, config.tracking.log), desc="find-effective"):
        by_dims[tuple(record["dims"])] = record

    def score(dims: tuple[int, ...]) -> float:
        return float(by_dims[tuple(sorted(dims))]["score"])

    start_scores = [score(s) for s in starts]
    reference = sum(start_scores) / len(start_scores)
    marked_by_start: list[list[int]] = []
    for subset in starts:
        base = score(subset)
        marked_by_start.append([d for d in subset
                                if score(tuple(x for x in subset if x != d)) < base - config.hurt_threshold])
    marked = sorted({d for m in marked_by_start for d in m})
    pairs = list(itertools.combinations(marked, 2))
    random.Random(f"pairs|{config.encoder.seed}").shuffle(pairs)
    if config.max_pairs:
        pairs = pairs[:config.max_pairs]
    pairs = sorted(pairs)
    phase2 = [spec(f"pair {a},{b}", "pair", (a, b)) for a, b in pairs if (a, b) not in by_dims]
    for record in execute(phase2, runner, store, progress=progress_setting(config.output.progress, config.tracking.log), desc="verify pairs"):
        by_dims[tuple(record["dims"])] = record
    verified = [(a, b) for a, b in pairs if score((a, b)) >= reference - config.hurt_threshold]
    effective = sorted({d for pair in verified for d in pair})

    table = []
    for d in sorted({d for s in starts for d in s}):
        drawn = sum(d in s for s in starts)
        times_marked = sum(d in m for m in marked_by_start)
        table.append({"dim": d, "drawn": drawn, "marked": times_marked, "marked_rate": times_marked / drawn,
                      "pairs_tried": sum(d in p for p in pairs), "pairs_verified": sum(d in p for p in verified),
                      "effective": d in effective})
    table.sort(key=lambda row: (-row["pairs_verified"], -row["marked"], row["dim"]))
    removal_scores = [r["score"] for dims, r in by_dims.items() if len(dims) == config.start - 1
                      and any(set(dims) < set(s) for s in starts)]
    summary = {
        "task": config.data.task, "hidden_size": hidden, "start": config.start, "starts": [list(s) for s in starts],
        "start_scores": start_scores, "reference_score": reference,
        "removal_score_mean": sum(removal_scores) / len(removal_scores) if removal_scores else None,
        "marked_by_start": marked_by_start, "pairs": [list(p) for p in pairs],
        "pair_scores": {f"{a},{b}": score((a, b)) for a, b in pairs}, "verified_pairs": [list(p) for p in verified],
        "effective_dims": effective, "hurt_threshold": config.hurt_threshold,
    }
    records = list(by_dims.values())

    def plot(ax: Any) -> None:
        rows = sorted(table, key=lambda row: row["dim"])
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r["marked"] for r in rows], width=0.4, label="marked (removal hurts)")
        ax.bar([x + 0.2 for x in xs], [r["pairs_verified"] for r in rows], width=0.4, label="in verified pairs")
        ax.set_xticks(list(xs), [str(r["dim"]) for r in rows], rotation=90, fontsize=7)
        ax.set_xlabel("hidden dimension")
        ax.set_ylabel("count (of starts / verified pairs)")
        ax.set_title(plot_title(config, f"effective dimensions ({len(starts)} starts of {config.start})",
                                "counts, no error bars"), fontsize=9)
        ax.legend(fontsize=8)

    start_records = [by_dims[tuple(sorted(s))] for s in starts]
    summary["starts_learned"] = sum(r.get("learned") is not False for r in start_records)
    if start_records and not summary["starts_learned"]:  # nothing to remove from: no finding either way
        found = ("no starting subset learned (every start sits at the constant predictor); no finding about "
                 f"effective dimensions. Likely remedy: {REMEDY}")
    else:
        found = f"effective dims {effective or 'none found'}"
    summary["finding"] = found
    return finish_study("dims", config, table, records, summary, plot=plot,
                        title=f"find-effective {config.data.task}: {found}", row_key="dim")


def study_points(payload: Mapping[str, Any]) -> list[StudyPoint]:
    """One point per run of the K sweep: ``({"dims": "random:K" | "all", "sample": i}, score)``."""
    points: list[StudyPoint] = []
    for rec in payload.get("runs") or []:
        if "selection" in rec and "k" in rec and rec.get("score") is not None:
            dims = "all" if rec["selection"] == "all" else f"{rec['selection']}:{rec['k']}"
            axes = {"dims": dims, "sample": rec.get("sample", 0)}
            if (payload.get("config") or {}).get("seeds"):
                axes["seed"] = rec.get("seed")  # several seeds: the seed is a replicate axis too
            points.append((axes, float(rec["score"])))
    return points


#: In a report: score vs k per way of choosing dimensions, random subsets as the control, all dimensions as the
#: reference line (also for any sweep that varies ``dims``).
SECTION = ReportSection("dims", "subsets", "score vs number of dimensions", noun="dimension choice", stem="dims",
                        points=study_points)

COMMAND = CommandInfo("dims", DimsConfig, run_dims, StudyResult,
                      "paper 2 study: score vs number of hidden dimensions (random control, ranked), or "
                      "--find-effective", resumes_in_out=True, report=SECTION, not_identity=NOT_IDENTITY)
