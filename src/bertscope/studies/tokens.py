"""``bertscope tokens``: the same head configuration reading different token vectors (paper 2).

Strategies: ``cls`` (position 0), ``max-norm`` (the token with the largest L2 norm), ``mean`` and ``max``
(element-wise) over the tokens, and fixed positions ``index:K`` (negative from the end: ``index:-1`` is [SEP]); see
:func:`bertscope.finetune.selection.select_tokens` for the details (special tokens excluded from pooling unless
``--include-special``). Everything else is the same for every run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bertscope.core.options import parse_token_list
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
    plot_title,
    score_label,
)
from bertscope.studies.config import TokensConfig
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

__all__ = ["run_tokens"]


def run_tokens(config: TokensConfig) -> StudyResult:
    tokens = list(parse_token_list(config.tokens, option="--tokens"))
    store = RunStore(config.output.out, fresh=config.output.overwrite)
    runner = HeadRunner(tokens, progress=config.output.progress)
    seeds = run_seeds(config)
    records: list[dict[str, Any]] = []
    for seed in seeds:  # a seed's runs are the single-seed study's (same ids and hashes)
        per_seed = seed_config(config, seed)
        specs = [RunSpec(f"token {t}", {"token_strategy": t}, finetune_config(per_seed, token=t)) for t in tokens]
        records += execute(specs, runner, store, progress=config.output.progress,
                           desc="tokens" if len(seeds) == 1 else f"tokens, seed {seed}")
    reference = "cls" if "cls" in tokens else None  # the claim: other tokens are as good as [CLS]
    cls_runs = by_seed(records, seeds, token_strategy=reference) if reference else None
    table, comparisons = [], []
    for token in tokens:
        runs = by_seed(records, seeds, token_strategy=token)
        versus = (None if cls_runs is None or token == reference
                  else comparison(config.data.task, runs, cls_runs, "as_good", config.tolerance))
        if versus is not None:
            comparisons.append({"token_strategy": token, "versus": reference, **versus})
        table.append({"token_strategy": token, **score_columns(point(runs)),
                      **metric_means([r for group in runs.values() for r in group]),
                      **comparison_columns(versus, "vs_cls")})
    best = max(table, key=lambda row: row["score"])
    summary = {"best_token": best["token_strategy"], "best_score": best["score"], "layer": config.selection.layer,
               "dims": records[0]["dims"], "seeds": list(seeds), "tolerance": config.tolerance,
               "comparisons": comparisons}

    def plot(ax: Any) -> None:
        ax.bar(range(len(table)), [r["score"] for r in table], yerr=error_bars(table), capsize=3,
               label="head on this token vector" + (" (mean, 95% interval)" if error_bars(table) else ""))
        draw_reference(ax, config.data.task, records)
        ax.set_xticks(range(len(table)), [r["token_strategy"] for r in table], rotation=20)
        ax.set_xlabel("token vector the head reads")
        ax.set_ylabel(score_label(config.data.task))
        ax.set_title(plot_title(config, f"token strategies (layer {config.selection.layer}, dims {config.selection.dims})",
                                seed_note(config, "token")), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)

    return finish_study("tokens", config, table, records, summary, plot=plot,
                        title=f"tokens {config.data.task}: layer {config.selection.layer}, dims {config.selection.dims}"
                              + (f", {len(seeds)} seeds" if len(seeds) > 1 else ""), row_key="token_strategy")


def study_points(payload: Mapping[str, Any]) -> list[StudyPoint]:
    """One point per token strategy: ``({"token": T}, score)``."""
    if (payload.get("config") or {}).get("seeds"):  # several seeds: one point per run, seed as the replicate
        return [({"token": r["token_strategy"], "seed": r.get("seed")}, float(r["score"])) for r in payload.get("runs") or []
                if "token_strategy" in r and r.get("score") is not None]
    return [({"token": row["token_strategy"]}, float(row["score"])) for row in payload.get("table") or []
            if "token_strategy" in row and row.get("score") is not None]


COMMAND = CommandInfo("tokens", TokensConfig, run_tokens, StudyResult,
                      "paper 2 study: CLS vs max-norm vs mean vs max vs fixed token positions",
                      resumes_in_out=True, study_points=study_points, not_identity=NOT_IDENTITY)
