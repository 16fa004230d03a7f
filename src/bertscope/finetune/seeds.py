"""``finetune --seeds 1,2,3``: one fine-tuning run per seed, and each metric's mean, std, n and 95% interval.

Each seed is a plain ``finetune`` run with ``--seed s`` written to ``OUT/seed-<s>/`` (results.json,
predictions.csv, model/ with --save-model, exactly as one run writes them); ``OUT/seeds.json`` holds every final
metric over the seeds (:func:`bertscope.core.stats.summarize`: Student t). A seed whose ``results.json`` is already there
with the same options is read back instead of trained again, so adding a seed to the list only trains the new one
(``--overwrite`` trains them all again). In a sweep, the ``seed:`` axis does the same across runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertscope.core import stats
from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_seed_list
from bertscope.core.results import environment_info, write_json_atomic
from bertscope.finetune.config import FinetuneConfig
from bertscope.finetune.tracking import default_run_name, parse_report_to

__all__ = ["SEEDS_FORMAT", "SeedsResult", "final_metrics", "run_finetune_seeds", "seed_folder"]

SEEDS_FORMAT = "bertscope-seeds/1"


def seed_folder(out: str | Path, seed: int) -> Path:
    """Where seed ``seed`` of ``finetune --seeds`` writes: ``OUT/seed-<s>``."""
    return Path(out) / f"seed-{seed}"


def final_metrics(payload: dict[str, Any]) -> dict[str, float]:
    """The final dev metrics of a results.json payload: ``final.score`` (the GLUE score, mean over dev splits) and
    ``final.<split>.<metric>``."""
    out = {"final.score": float(payload["final_score"])}
    for split, values in (payload.get("final") or {}).items():
        out.update({f"final.{split}.{name}": float(value) for name, value in values.items() if value is not None})
    return out


@dataclass(frozen=True)
class SeedsResult:
    """Several seeds of one fine-tuning run: per seed its folder and final metrics; per metric its interval."""

    config: FinetuneConfig
    seeds: tuple[int, ...]
    folders: dict[int, str | None]
    per_seed: dict[int, dict[str, float]]
    intervals: dict[str, stats.Interval]
    reused: tuple[int, ...] = ()
    environment: dict[str, Any] = field(default_factory=environment_info)

    def to_dict(self) -> dict[str, Any]:
        return {"format": SEEDS_FORMAT, "command": "finetune", "complete": True, "config": self.config.to_dict(),
                "seeds": list(self.seeds), "folders": {str(s): f for s, f in self.folders.items()},
                "per_seed": {str(s): m for s, m in self.per_seed.items()},
                "metrics": {name: iv.to_dict() for name, iv in self.intervals.items()},
                "reused": list(self.reused), "environment": self.environment}

    def metrics(self) -> dict[str, float]:
        """Each metric's mean under its own name (what a sweep reads), and its ``.std``/``.n``/``.low``/``.high``."""
        out: dict[str, float] = {}
        for name, iv in self.intervals.items():
            out[name] = iv.mean
            out.update({f"{name}.{k}": float(v) for k, v in (("std", iv.std), ("n", iv.n), ("low", iv.low),
                                                               ("high", iv.high)) if v is not None})
        return out

    def render(self) -> Any:
        from rich.table import Table

        table = Table(title=f"finetune {self.config.data.task}: {len(self.seeds)} seeds ({','.join(map(str, self.seeds))})")
        for column in ("metric", *(f"seed {s}" for s in self.seeds), "mean ± std", "95% interval", "n"):
            table.add_column(column, justify="right")
        for name, iv in self.intervals.items():
            shown = [f"{self.per_seed[s][name]:.4f}" if name in self.per_seed[s] else "-" for s in self.seeds]
            spread = f"{iv.mean:.4f}" + (f" ± {iv.std:.4f}" if iv.std is not None else "")
            interval = f"[{iv.low:.4f}, {iv.high:.4f}]" if iv.low is not None and iv.high is not None else "-"
            table.add_row(name, *shown, spread, interval, str(iv.n))
        where = next((f for f in self.folders.values() if f), None)
        table.caption = (f"{len(self.reused)} seed(s) read back from earlier" if self.reused else "") + (
            f"{'; ' if self.reused else ''}runs in {Path(where).parent}/seed-*" if where else "")
        return table


def _seed_config(config: FinetuneConfig, seed: int) -> FinetuneConfig:
    changes: dict[str, Any] = {"seed": seed, "seeds": None,
                               "out": None if config.output.out is None else str(seed_folder(config.output.out, seed))}
    if parse_report_to(config.tracking.report_to):
        changes["run_name"] = f"{config.tracking.run_name or default_run_name(config)}/seed-{seed}"
    return config.replace(**changes)


def _finished(config: FinetuneConfig, identity: Callable[[Mapping[str, Any]], dict[str, Any]]
              ) -> dict[str, Any] | None:
    """The seed's results.json when it is complete and was run with the same options (else None, or an error)."""
    if config.output.out is None or config.output.overwrite:
        return None
    path = Path(config.output.out) / "results.json"
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # unreadable: run it again (finetune moves it aside with --overwrite semantics below)
    if not payload.get("complete"):
        return None
    stored = identity({k: v for k, v in (payload.get("config") or {}).items() if k != "seeds"})
    wanted = identity({k: v for k, v in config.to_dict().items() if k != "seeds"})
    if stored != wanted:
        raise BertscopeError(f"{path} was written with other options; choose another --out or pass --overwrite")
    return payload


def run_finetune_seeds(config: FinetuneConfig, run_finetune: Callable[[FinetuneConfig], Any],
                       identity: Callable[[Mapping[str, Any]], dict[str, Any]]) -> SeedsResult:
    """Run ``config`` once per seed of ``config.seeds`` (reusing finished seeds in ``OUT/seed-<s>``).

    ``run_finetune`` runs one seed and ``identity`` says which options a stored seed must share (the ``finetune``
    command's; handed in, so this module sits below the command that calls it)."""
    if config.seeds is None:
        raise BertscopeError("finetune --seeds needs a seed list, e.g. 1,2,3")
    seeds = parse_seed_list(config.seeds, option="--seeds")
    folders: dict[int, str | None] = {}
    per_seed: dict[int, dict[str, float]] = {}
    reused: list[int] = []
    for seed in seeds:
        one = _seed_config(config, seed)
        payload = _finished(one, identity)
        if payload is None:
            payload = run_finetune(one.replace(overwrite=config.output.overwrite)).to_dict()
        else:
            reused.append(seed)
        folders[seed] = one.output.out
        per_seed[seed] = final_metrics(payload)
    names = list(dict.fromkeys(name for seed in seeds for name in per_seed[seed]))
    intervals = {name: stats.summarize([per_seed[s].get(name) for s in seeds]) for name in names}
    result = SeedsResult(config=config, seeds=seeds, folders=folders, per_seed=per_seed, intervals=intervals,
                         reused=tuple(reused))
    if config.output.out is not None:
        write_json_atomic(Path(config.output.out) / "seeds.json", result.to_dict())
    return result
