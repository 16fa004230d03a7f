"""``bertscope layers``: the same head configuration read from each hidden layer 0..L in turn (paper 2).

Every run differs from the others only in ``--layer``; dimensions given as ``random:K`` are drawn once from
``--seed`` and so are the same at every layer. With ``--freeze encoder`` (and the default ``--cache-features``) the
encoder runs once for the whole scan and every layer's head trains on cached vectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bertscope import glue
from bertscope.configs import LayersConfig
from bertscope.finetune import NOT_IDENTITY
from bertscope.options import parse_hidden_states
from bertscope.registry import CommandInfo, StudyPoint
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

__all__ = ["run_layers"]


def run_layers(config: LayersConfig) -> StudyResult:
    depth, hidden = model_shape(config)
    layers = list(parse_hidden_states(config.layers, depth, option="--layers", default_all=True))
    store = RunStore(config.out, fresh=config.overwrite)
    runner = HeadRunner([config.token], progress=config.progress)
    specs = [RunSpec(f"layer {layer}", {"layer": layer}, finetune_config(config, layer=str(layer)))
             for layer in layers]
    records = execute(specs, runner, store, progress=config.progress, desc="layers")
    table = [{"layer": r["layer"], "score": r["score"],
              **{f"{split}.{name}": value for split, values in r["final"].items() for name, value in values.items()
                 if glue.canonical_metric_name(name) != glue.COMBINED}} for r in records]
    best = max(table, key=lambda row: row["score"])
    summary = {"best_layer": best["layer"], "best_score": best["score"], "num_layers": depth, "hidden_size": hidden,
               "dims": records[0]["dims"], "token": config.token}

    def plot(ax: Any) -> None:
        ax.plot([r["layer"] for r in table], [r["score"] for r in table], marker="o", label="head on this layer")
        draw_reference(ax, config.task, records)
        ax.set_xticks([r["layer"] for r in table])
        ax.set_xlabel("hidden layer read (0 = embeddings)")
        ax.set_ylabel(score_label(config.task))
        ax.set_title(plot_title(config, f"score per layer (token {config.token}, dims {config.dims})",
                                f"one run per layer (seed {config.seed}), no error bars"), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    return finish_study("layers", config, table, records, summary, plot=plot,
                        title=f"layers {config.task}: token {config.token}, dims {config.dims}", row_key="layer")


def study_points(payload: Mapping[str, Any]) -> list[StudyPoint]:
    """One point per layer read: ``({"layer": L}, score)``."""
    return [({"layer": row["layer"]}, float(row["score"])) for row in payload.get("table") or []
            if "layer" in row and row.get("score") is not None]


COMMAND = CommandInfo("layers", LayersConfig, run_layers, StudyResult,
                      "paper 2 study: the same head read from every hidden layer",
                      resumes_in_out=True, study_points=study_points, not_identity=NOT_IDENTITY)
