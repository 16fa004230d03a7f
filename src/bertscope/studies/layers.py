"""``bertscope layers``: the same head configuration read from each hidden layer 0..L in turn (paper 2).

Every run differs from the others only in ``--layer``; dimensions given as ``random:K`` are drawn once from
``--seed`` and so are the same at every layer. With ``--freeze encoder`` (and the default ``--cache-features``) the
encoder runs once for the whole scan and every layer's head trains on cached vectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bertscope.core import stats
from bertscope.core.options import parse_hidden_states
from bertscope.core.registry import CommandInfo, StudyPoint
from bertscope.finetune.command import NOT_IDENTITY
from bertscope.studies.common import (
    HeadRunner,
    RunSpec,
    RunStore,
    StudyResult,
    draw_reference,
    execute,
    finetune_config,
    finish_study,
    model_shape,
    plot_title,
    score_label,
)
from bertscope.studies.config import LayersConfig
from bertscope.studies.seed_points import (
    by_seed,
    comparison,
    comparison_columns,
    error_bars,
    metric_means,
    point,
    run_seeds,
    score_columns,
    seed_config,
    seed_note,
)

__all__ = ["run_layers"]


def run_layers(config: LayersConfig) -> StudyResult:
    depth, hidden = model_shape(config)
    layers = list(parse_hidden_states(config.layers, depth, option="--layers", default_all=True))
    store = RunStore(config.output.out, fresh=config.output.overwrite)
    runner = HeadRunner([config.selection.token], progress=config.output.progress)
    seeds = run_seeds(config)
    records: list[dict[str, Any]] = []
    for seed in seeds:  # a seed's runs are the single-seed study's (same ids and hashes)
        per_seed = seed_config(config, seed)
        specs = [RunSpec(f"layer {layer}", {"layer": layer}, finetune_config(per_seed, layer=str(layer)))
                 for layer in layers]
        records += execute(specs, runner, store, progress=config.output.progress,
                           desc="layers" if len(seeds) == 1 else f"layers, seed {seed}")
    last = by_seed(records, seeds, layer=layers[-1])
    table, comparisons = [], []
    for layer in layers:
        runs = by_seed(records, seeds, layer=layer)
        versus = None if layer == layers[-1] else comparison(config.data.task, runs, last, "as_good", config.tolerance)
        if versus is not None:
            worse = stats.verdict(stats.Interval(**versus["difference"]), "worse")
            comparisons.append({"layer": layer, "versus": layers[-1], **versus, "verdict_worse": worse})
        table.append({"layer": layer, **score_columns(point(runs)),
                      **metric_means([r for group in runs.values() for r in group]),
                      **comparison_columns(versus, "vs_last"),
                      "vs_last_worse": None if versus is None else comparisons[-1]["verdict_worse"]})
    best = max(table, key=lambda row: row["score"])
    summary = {"best_layer": best["layer"], "best_score": best["score"], "num_layers": depth, "hidden_size": hidden,
               "dims": records[0]["dims"], "token": config.selection.token, "seeds": list(seeds),
               "tolerance": config.tolerance, "comparisons": comparisons}

    def plot(ax: Any) -> None:
        xs, ys = [r["layer"] for r in table], [r["score"] for r in table]
        bars = error_bars(table)
        if bars is None:
            ax.plot(xs, ys, marker="o", label="head on this layer")
        else:
            ax.errorbar(xs, ys, yerr=bars, marker="o", capsize=3, label="head on this layer (mean, 95% interval)")
        draw_reference(ax, config.data.task, records)
        ax.set_xticks(xs)
        ax.set_xlabel("hidden layer read (0 = embeddings)")
        ax.set_ylabel(score_label(config.data.task))
        ax.set_title(plot_title(config, f"score per layer (token {config.selection.token}, dims {config.selection.dims})",
                                seed_note(config, "layer")), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    return finish_study("layers", config, table, records, summary, plot=plot,
                        title=f"layers {config.data.task}: token {config.selection.token}, dims {config.selection.dims}"
                              + (f", {len(seeds)} seeds" if len(seeds) > 1 else ""), row_key="layer")


def study_points(payload: Mapping[str, Any]) -> list[StudyPoint]:
    """One point per layer read: ``({"layer": L}, score)``."""
    if (payload.get("config") or {}).get("seeds"):  # several seeds: one point per run, seed as the replicate
        return [({"layer": r["layer"], "seed": r.get("seed")}, float(r["score"])) for r in payload.get("runs") or []
                if "layer" in r and r.get("score") is not None]
    return [({"layer": row["layer"]}, float(row["score"])) for row in payload.get("table") or []
            if "layer" in row and row.get("score") is not None]


COMMAND = CommandInfo("layers", LayersConfig, run_layers, StudyResult,
                      "paper 2 study: the same head read from every hidden layer",
                      resumes_in_out=True, study_points=study_points, not_identity=NOT_IDENTITY)
