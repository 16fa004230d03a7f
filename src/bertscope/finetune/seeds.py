"""``finetune --seeds 1,2,3``: one fine-tuning run per seed, and each metric's mean, std, n and 95% interval.

Each seed is a plain ``finetune`` run with ``--seed s`` written to ``OUT/seed-<s>/`` (results.json,
predictions.csv, model/ with --save-model, exactly as one run writes them); ``OUT/seeds.json`` holds every final
metric over the seeds (:func:`bertscope.core.stats.summarize`: Student t). Each seed is also a run of the study's
result store ``OUT/runs.db`` (:mod:`bertscope.runs.store`, named by :mod:`bertscope.runs.identity`: the id a sweep's
``finetune`` run with that seed has). A seed finished there with the same options is read back instead of trained
again, so adding a seed to the list only trains the new one (``--overwrite`` trains them all again); ``bertscope
status``/``report --store OUT/runs.db`` read it. In a sweep, the ``seed:`` axis does the same across runs.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertscope.core import stats
from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_seed_list
from bertscope.core.registry import CommandInfo
from bertscope.core.results import environment_info, to_jsonable, write_json_atomic
from bertscope.finetune.config import FinetuneConfig
from bertscope.finetune.tracking import default_run_name, parse_report_to
from bertscope.runs.identity import run_id, run_identity
from bertscope.runs.store import ResultStore, StoredRun, StoreLock, study_store

__all__ = ["SEEDS_FORMAT", "SeedsResult", "final_metrics", "run_finetune_seeds", "seed_folder"]

SEEDS_FORMAT = "bertscope-seeds/1"

#: The name of ``finetune --seeds`` in its store (the sweep and experiment its seeds belong to).
SEEDS_STUDY = "seeds"


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


def run_finetune_seeds(config: FinetuneConfig, run_finetune: Callable[[FinetuneConfig], Any],
                       info: CommandInfo) -> SeedsResult:
    """Run ``config`` once per seed of ``config.seeds`` (reusing seeds finished in ``OUT/runs.db``).

    ``run_finetune`` runs one seed and ``info`` is the ``finetune`` command (whose identity names each seed's run;
    handed in, so this module sits below the command that calls it)."""
    if config.seeds is None:
        raise BertscopeError("finetune --seeds needs a seed list, e.g. 1,2,3")
    seeds = parse_seed_list(config.seeds, option="--seeds")
    configs = {seed: _seed_config(config, seed) for seed in seeds}
    runs = {seed: _stored_run(info, one) for seed, one in configs.items()}
    folders: dict[int, str | None] = {}
    per_seed: dict[int, dict[str, float]] = {}
    reused: list[int] = []
    path = None if config.output.out is None else study_store(config.output.out)
    with contextlib.ExitStack() as stack:
        store = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(StoreLock(path))
            store = stack.enter_context(ResultStore(path))
            store.register(SEEDS_STUDY, to_jsonable(config.to_dict()), None, list(runs.values()))
            store.reset_interrupted()
        for seed in seeds:
            one, rid = configs[seed], runs[seed].id
            payload = None
            if store is not None and not config.output.overwrite and store.status_of([rid]).get(rid) == "done":
                payload = store.payload(rid)
            if payload is None:
                payload = _run_one(store, rid, run_finetune, one.replace(overwrite=config.output.overwrite))
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


def _stored_run(info: CommandInfo, one: FinetuneConfig) -> StoredRun:
    """One seed as a run of the store: ``finetune``'s identity and id, the seed as its axis."""
    identity = run_identity(info, one.to_dict())
    return StoredRun(id=run_id(info.name, identity), command=info.name, options=to_jsonable(one.to_dict()),
                     identity=identity, experiment=SEEDS_STUDY, axes={"seed": one.encoder.seed}, label=f"seed-{one.encoder.seed}")


def _run_one(store: ResultStore | None, rid: str, run: Callable[[FinetuneConfig], Any],
             one: FinetuneConfig) -> dict[str, Any]:
    """Train one seed (``run(one)``), committing its outcome to ``store`` (failed, with its error, or done with its
    payload)."""
    if store is not None:
        store.mark_running(rid)
    start = time.perf_counter()
    try:
        payload: dict[str, Any] = to_jsonable(run(one).to_dict())
    except Exception as exc:
        if store is not None:
            store.mark_failed(rid, error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                              traceback=traceback.format_exc(), duration=time.perf_counter() - start)
        raise
    if store is not None:
        store.mark_done(rid, metrics=final_metrics(payload), payload=payload, duration=time.perf_counter() - start,
                        worker=None, environment=payload.get("environment"))
    return payload
