"""``bertscope cross``: cross-fine-tuning (paper 2): one encoder fine-tuned on task A, then B, then C...

Each task has its own selecting head and its own hidden dimensions (``--dims-per-task``, disjoint across tasks by
default; ``--dims-mode shared`` gives every task the same set). Stage *s* fine-tunes the encoder (as left by stage
*s-1*) together with task *s*'s new head, exactly as ``finetune`` would (same loop, options and seed). After every
stage every task seen so far is evaluated on its dev split(s) with its own head and dimensions, giving the stage x
task matrix: the diagonal is each task learnt in sequence, the cells below it show forgetting (or gains) of earlier
tasks. Beside it, ``--single-task`` fine-tunes each task alone from the pretrained encoder (the reference).

Summary numbers: ``forgetting[t]`` = score of *t* right after its own stage minus after the last stage (positive =
forgotten); ``transfer[t]`` = score of *t* learnt in sequence minus learnt alone (the effect of the earlier stages);
``backward_transfer`` = mean over all tasks but the last of (last stage - own stage), as in continual learning.

``--earlier-heads retrain`` adds a second matrix where each earlier task is scored with a head retrained on the
current encoder, frozen (one cached encoder pass per task and stage): it separates "the information is gone" from
"the old head no longer fits". Assumption (paper silent): earlier heads are never updated by later stages.

Resuming: every stage's evaluation is committed as it finishes to the study's store ``OUT/runs.db`` (a stage is a
run of its own, named by the options and the tasks up to it), and with ``--keep-checkpoint`` the encoder
and heads after the latest stage in ``OUT/checkpoint``; a re-run continues after the last finished stage (without a
checkpoint it trains the stages again, deterministically).
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bertscope.core import stats
from bertscope.core.device import resolve_device, resolve_dtype
from bertscope.core.errors import BertscopeError
from bertscope.core.options import canonical_token, dims_form, parse_dims, parse_name_list
from bertscope.core.progress import progress_setting
from bertscope.core.registry import CommandInfo, ReportSection, StudyPoint
from bertscope.core.results import write_json_atomic
from bertscope.data import glue
from bertscope.data.baselines import dev_provenances, task_baseline
from bertscope.data.labels import model_name, task_name
from bertscope.finetune.command import NOT_IDENTITY
from bertscope.finetune.config import FinetuneConfig
from bertscope.finetune.evaluation import evaluate
from bertscope.finetune.features import FeatureStore
from bertscope.finetune.head import SelectingHead
from bertscope.finetune.pipeline import (
    PreparedRun,
    Shared,
    TaskData,
    compute_features,
    load_task_data,
    prepare,
)
from bertscope.finetune.representation import EncoderRepresentation
from bertscope.models import loading
from bertscope.runs.identity import run_id, run_identity
from bertscope.studies.common import (
    HeadRunner,
    StudyResult,
    execute,
    finetune_config,
    finish_study,
    model_shape,
    tracked,
)
from bertscope.studies.config import CrossConfig
from bertscope.studies.seed_points import comparison, point, run_seeds, seed_config
from bertscope.studies.store import RunSpec, RunStore, run_checkpoints

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["SECTION", "assign_dims", "run_cross"]


def assign_dims(spec: str, mode: str, n_tasks: int, hidden: int, seed: int) -> list[tuple[int, ...]]:
    """Each task's dimensions: ``random:K`` / ``first:K`` / ``all``; disjoint across tasks or one shared set."""
    kind, k = dims_form(spec, option="--dims-per-task")
    if mode == "shared" or kind == "all":
        if kind == "all" and mode == "disjoint":
            raise BertscopeError("--dims-per-task all cannot be disjoint; use --dims-mode shared")
        dims = parse_dims(spec, hidden, seed, option="--dims-per-task")
        return [dims] * n_tasks
    if k is None:
        raise BertscopeError(f"--dims-per-task {spec!r}: use random:K, first:K or all")
    if k * n_tasks > hidden:
        raise BertscopeError(f"--dims-per-task {spec!r}: {n_tasks} disjoint sets of {k} need K >= 1 and "
                             f"K x tasks <= {hidden} (the hidden size)")
    pool = list(range(hidden))
    if kind == "random":
        random.Random(f"cross|{seed}").shuffle(pool)
    return [tuple(sorted(pool[i * k:(i + 1) * k])) for i in range(n_tasks)]


@dataclass(frozen=True)
class _Task:
    """One task of the sequence: its data (loaded once) and its own hidden dimensions."""

    data: TaskData
    dims: tuple[int, ...]

    @property
    def info(self) -> glue.GlueTask:
        return self.data.task


def _task_config(config: CrossConfig, task: str, dims: tuple[int, ...], **changes: Any) -> FinetuneConfig:
    """The fine-tuning options of one task of the sequence (its dims; the study's other options)."""
    return finetune_config(config, task=task, dims="idx:" + ",".join(map(str, dims)),
                           **{"cache_features": False, **changes})


#: The multi-seed options: never set on one seed's stages, so never part of a stage's identity.
_SEED_DRIVER = frozenset({"seeds", "tolerance"})


def _stage_identity(config: CrossConfig, stage: int) -> dict[str, Any]:
    """What determines stages 1..``stage``: every option of ``cross`` that changes results, and the tasks so far."""
    values = {k: v for k, v in run_identity(COMMAND, config.to_dict()).items()
              if k not in {"single_task", "tasks"} | _SEED_DRIVER}
    values["tasks_so_far"] = list(parse_name_list(config.tasks, option="--tasks"))[:stage]
    return values


def _stage_id(config: CrossConfig, stage: int) -> str:
    """The run id of stage ``stage`` (the one run identity, :mod:`bertscope.runs.identity`)."""
    return run_id(COMMAND.name, _stage_identity(config, stage))


def _scores(task: _Task, represent: Any, head: SelectingHead, config: CrossConfig, device: torch.device,
            keep: dict[str, Any] | None = None) -> dict[str, Any]:
    """``task``'s dev metrics (per split, plus their mean ``score``) with ``head`` on the current encoder; ``keep``
    receives the labels and predictions per split (compact, as study run records keep them: the bootstrap)."""
    out: dict[str, Any] = {}
    for name, data in task.data.eval_data.items():
        preds = evaluate(represent, head, data, batch_size=config.optim.eval_batch_size or config.encoder.batch_size,
                         device=device, dtype=resolve_dtype(config.encoder.dtype))
        labels = [ex.label for ex in task.data.eval_sets[name].examples]
        preds = [round(float(p), 5) for p in preds] if task.info.is_regression else [int(p) for p in preds]
        if keep is not None:
            keep.setdefault("labels", {})[name] = labels
            keep.setdefault("predictions", {})[name] = preds
        out[name] = glue.compute_metrics(task.info, preds, labels)
    out["score"] = sum(v[glue.COMBINED] for v in out.values()) / len(task.data.eval_data)  # over dev splits
    return out


def _probe(config: CrossConfig, task: _Task, run: PreparedRun, run_id: str) -> PreparedRun:
    """A fresh head for an earlier ``task`` on the current encoder, frozen (``--earlier-heads retrain``): trained on
    that encoder's token vectors, computed in memory (the encoder changes every stage: nothing worth caching)."""
    probe_config = tracked(_task_config(config, task.info.name, task.dims, freeze="encoder", cache_features=True),
                           run_id)
    features = compute_features(probe_config, run.model, task.data, tokens=[canonical_token(config.selection.token)],
                                store=FeatureStore(use_cache=False), source=run.loaded.source, progress=False)
    probe = prepare(probe_config, Shared(tokenizer=run.tokenizer, loaded=run.loaded, data=task.data,
                                         features=features, feature_root="(in memory)"))
    probe.train()
    return probe


def run_cross(config: CrossConfig) -> StudyResult:
    names = [glue.get_task(t).name for t in parse_name_list(config.tasks, option="--tasks", at_least=2)]
    if len(set(names)) != len(names):
        raise BertscopeError(f"--tasks lists a task twice: {','.join(names)}")
    depth, hidden = model_shape(config)
    store = RunStore.of(config)
    out = None if config.output.out is None else Path(config.output.out)
    checkpoint = None if out is None else out / "checkpoint"
    if config.output.overwrite and checkpoint is not None and checkpoint.exists():
        shutil.rmtree(checkpoint)
    seeds = run_seeds(config)
    per_seed: dict[int, tuple[list[tuple[int, ...]], dict[str, dict[str, Any]], dict[int, dict[str, Any]]]] = {}
    for seed in seeds:  # one whole sequence per seed (its stages are the single-seed study's: same hashes)
        per_seed[seed] = _one_seed(seed_config(config, seed), names, hidden, store, checkpoint)
    return _matrix(config, names, seeds, per_seed, depth, hidden)


def _one_seed(config: CrossConfig, names: list[str], hidden: int, store: RunStore, checkpoint: Path | None
              ) -> tuple[list[tuple[int, ...]], dict[str, dict[str, Any]], dict[int, dict[str, Any]]]:
    """One seed's sequence: each task's dims, the single-task references and the stage records (resumable)."""
    dims = assign_dims(config.dims_per_task, config.dims_mode, len(names), hidden, config.encoder.seed)

    # ---- single-task references (independent runs; resumable one by one)
    single: dict[str, dict[str, Any]] = {}
    if config.single_task:
        specs = [RunSpec(f"single {name}", {"kind": "single", "task": name}, _task_config(config, name, d))
                 for name, d in zip(names, dims)]
        for record in execute(specs, HeadRunner(progress=False), store,
                              progress=progress_setting(config.output.progress, config.tracking.log),
                              desc="single-task"):
            single[record["task"]] = record

    # ---- the stages
    stage_specs = [RunSpec(f"stage {s} {names[s - 1]}", {"kind": "stage", "stage": s, "task": names[s - 1]},
                           _task_config(config, names[s - 1], dims[s - 1]), command=COMMAND.name,
                           identity=_stage_identity(config, s)) for s in range(1, len(names) + 1)]
    store.register(stage_specs)
    with store.held():
        return dims, single, _stages(config, names, dims, store, checkpoint, stage_specs)


def _stages(config: CrossConfig, names: list[str], dims: list[tuple[int, ...]], store: RunStore,
            checkpoint: Path | None, stage_specs: list[RunSpec]) -> dict[int, dict[str, Any]]:
    """The stage records of one seed: loaded where finished, trained from the last checkpoint (or stage 1) on."""
    device = resolve_device(config.encoder.device)
    stage_records: dict[int, dict[str, Any]] = {}
    for s, spec in enumerate(stage_specs, start=1):
        loaded_record = _load_stage(store, spec)
        if loaded_record is None:
            break
        stage_records[s] = loaded_record
    resume_at = _resume_point(checkpoint, config, len(stage_records))
    stage_records = {s: r for s, r in stage_records.items() if s < resume_at}

    tasks: dict[str, _Task] = {}
    tokenizer = loading.load_tokenizer(config.encoder.model)

    def task_data(i: int) -> _Task:
        name = names[i]
        if name not in tasks:
            tasks[name] = _Task(load_task_data(_task_config(config, name, dims[i]), tokenizer), dims[i])
        return tasks[name]

    if resume_at <= len(names):
        # The first stage trained here loads its encoder (the pretrained one, or the checkpoint's); later stages
        # carry on with the encoder as the previous stage left it. Each stage runs through the one pipeline.
        source = str(checkpoint / "encoder") if (checkpoint is not None and resume_at > 1) else config.encoder.model
        loaded = None
        heads: dict[str, SelectingHead] = {}
        for i in range(resume_at - 1):
            assert checkpoint is not None
            heads[names[i]] = SelectingHead.load(checkpoint / "heads" / names[i], map_location=device)
        for s in range(resume_at, len(names) + 1):
            start = time.perf_counter()
            task = task_data(s - 1)
            stage_config = tracked(_task_config(config, task.info.name, task.dims, progress=config.output.progress),
                                   stage_specs[s - 1].run_id)
            run = prepare(stage_config if loaded is not None else stage_config.replace(model=source),
                          Shared(tokenizer=tokenizer, loaded=loaded, data=task.data))
            run.checkpoints = run_checkpoints(store, stage_specs[s - 1], stage=_stage_id(config, s))
            with store.running(stage_specs[s - 1]):
                history = run.train()
            loaded = run.loaded
            heads[task.info.name] = run.trained_head
            layers = run.selection.layers
            represent = EncoderRepresentation(run.model, layers, run.selection.token_spec,
                                              include_special=config.selection.include_special, frozen=True)
            evals: dict[str, Any] = {}
            retrained: dict[str, Any] = {}
            dev: dict[str, dict[str, Any]] = {}
            for i in range(s):
                earlier = task_data(i)
                dev[earlier.info.name] = {}
                evals[earlier.info.name] = _scores(earlier, represent, heads[earlier.info.name], config, run.device,
                                                   keep=dev[earlier.info.name])
                if config.earlier_heads == "retrain" and i < s - 1:
                    probe = _probe(config, earlier, run, f"{stage_specs[s - 1].run_id} probe {earlier.info.name}")
                    retrained[earlier.info.name] = _scores(earlier, represent, probe.trained_head, config, run.device)
            learning = run.learning_check(history)  # the stage's own head, as a study run record flags it
            record = {"complete": True, "run_id": stage_specs[s - 1].run_id, "kind": "stage", "stage": s,
                      "task": task.info.name, "dims": list(task.dims), "layers": list(layers), "token": config.selection.token,
                      "score": evals[task.info.name]["score"], "evals": evals, "retrained": retrained,
                      "learned": learning["learned"], "learning": learning,
                      "train_loss": [r.train_loss for r in history.epochs], "seconds": time.perf_counter() - start,
                      "stage_id": _stage_id(config, s), "cached": False, "seed": config.encoder.seed, "dev": dev,
                      "attention": run.loaded.attention,
                      "data": {"train": task.data.train_split.provenance(),
                               "eval": {k: v.provenance() for k, v in task.data.eval_sets.items()}}}
            if checkpoint is not None and config.keep_checkpoint and s < len(names):
                _save_checkpoint(checkpoint, run.model, heads, s, _stage_id(config, s))
            store.save(stage_specs[s - 1], record)
            if run.checkpoints is not None and not config.checkpoints.keep_checkpoints:
                run.checkpoints.remove()
            record["resumed"] = False
            stage_records[s] = record
        if checkpoint is not None and checkpoint.exists():
            shutil.rmtree(checkpoint, ignore_errors=True)  # the study is complete: the matrix is on disk
    return stage_records


def _cell(record: dict[str, Any], name: str, evals: str = "evals") -> dict[str, Any] | None:
    """One matrix cell of a stage record as a study run (``score``, and ``dev`` for the bootstrap)."""
    values = record.get(evals, {}).get(name)
    if values is None:
        return None
    return {"score": values["score"], "dev": (record.get("dev") or {}).get(name) if evals == "evals" else None}


def _matrix(config: CrossConfig, names: list[str], seeds: tuple[int, ...],
            per_seed: dict[int, tuple[list[tuple[int, ...]], dict[str, dict[str, Any]], dict[int, dict[str, Any]]]],
            depth: int, hidden: int) -> StudyResult:
    """The stage x task matrix (each cell: the mean over seeds, with its interval in ``<task>_low/_high``), the
    forgetting comparisons (a task after each later stage vs after its own: paired over seeds) and the files."""
    def cells(get: Any) -> dict[int, list[dict[str, Any]]]:
        return {seed: [c] if (c := get(seed)) is not None else [] for seed in seeds}

    def columns(row: dict[str, Any], name: str, runs: dict[int, list[dict[str, Any]]]) -> None:
        interval = point(runs)
        row[name] = None if interval.n == 0 else interval.mean
        row.update({f"{name}_std": interval.std, f"{name}_n": interval.n, f"{name}_low": interval.low,
                    f"{name}_high": interval.high})
        cell_stats.append({"source": f"after {row['trained_on']}" if row["stage"] != "single-task" else "single-task",
                           "target": name, **interval.to_dict()})

    stage = {seed: per_seed[seed][2] for seed in seeds}
    single = {seed: per_seed[seed][1] for seed in seeds}
    has_single = all(single[s] for s in seeds)
    table: list[dict[str, Any]] = []
    retrained_table: list[dict[str, Any]] = []
    cell_stats: list[dict[str, Any]] = []
    for s in range(1, len(names) + 1):
        row: dict[str, Any] = {"stage": s, "trained_on": names[s - 1]}
        for name in names:
            columns(row, name, cells(lambda seed, n=name, s=s: _cell(stage[seed][s], n)))
        table.append(row)
        if config.earlier_heads == "retrain":
            retrained = {"stage": s, "trained_on": names[s - 1]}
            for name in names:
                values = [(stage[seed][s]["retrained"].get(name, stage[seed][s]["evals"].get(name, {}))).get("score")
                          for seed in seeds]
                retrained[name] = stats.summarize(values).mean if any(v is not None for v in values) else None
            retrained_table.append(retrained)
    if has_single:
        row = {"stage": "single-task", "trained_on": "each alone"}
        for name in names:
            columns(row, name, {seed: [single[seed][name]] for seed in seeds})
        table.append(row)
    own = {name: cells(lambda seed, i=i, n=name: _cell(stage[seed][i + 1], n)) for i, name in enumerate(names)}
    last = {name: cells(lambda seed, n=name: _cell(stage[seed][len(names)], n)) for name in names}
    comparisons = []
    for i, name in enumerate(names[:-1]):  # forgetting: the task after each later stage vs right after its own
        for s in range(i + 2, len(names) + 1):
            after = cells(lambda seed, n=name, s=s: _cell(stage[seed][s], n))
            comparisons.append({"task": name, "after": names[s - 1], "versus": f"after {name}",
                                **comparison(name, after, own[name], "no_worse", config.tolerance)})
    own_mean = {n: point(own[n]).mean for n in names}
    final_mean = {n: point(last[n]).mean for n in names}
    forgetting = {n: own_mean[n] - final_mean[n] for n in names}
    single_mean = {n: statistics.fmean(single[seed][n]["score"] for seed in seeds) for n in names} if has_single else {}
    summary: dict[str, Any] = {
        "tasks": names, "dims": {n: list(d) for n, d in zip(names, per_seed[seeds[0]][0])},
        "dims_mode": config.dims_mode, "earlier_heads": config.earlier_heads, "own_stage_score": own_mean,
        "final_score": final_mean, "forgetting": forgetting,
        "backward_transfer": sum(-forgetting[n] for n in names[:-1]) / (len(names) - 1),
        "single_task_score": single_mean, "transfer": {n: own_mean[n] - single_mean[n] for n in single_mean},
        "matrix_retrained_heads": retrained_table or None, "num_layers": depth, "hidden_size": hidden,
        "seeds": list(seeds), "tolerance": config.tolerance, "cells": cell_stats, "comparisons": comparisons,
    }
    if len(seeds) > 1:
        summary["dims_per_seed"] = {str(seed): [list(d) for d in per_seed[seed][0]] for seed in seeds}
    runs = [r for seed in seeds for r in (*single[seed].values(), *(stage[seed][s] for s in sorted(stage[seed])))]

    def plot(ax: Any) -> None:
        import numpy as np

        rows = [r for r in table if r["stage"] != "single-task"] + [r for r in table if r["stage"] == "single-task"]
        grid = np.array([[np.nan if r[n] is None else r[n] for n in names] for r in rows], dtype=float)
        image = ax.imshow(grid, cmap="viridis", aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                low, high = rows[i].get(f"{names[j]}_low"), rows[i].get(f"{names[j]}_high")
                text = f"{value:.3f}" + ("" if low is None or high is None else f"\n±{(high - low) / 2:.3f}")
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1.5})
        columns = []
        for name in names:  # each task's majority-class (or chance) score under its name
            reference = task_baseline(name, dev_provenances(runs, name))
            value = None if reference is None else reference.value("score")
            columns.append(task_name(name) + ("" if reference is None or value is None
                                              else f"\n{reference.label} {value:.3f}"))
        ax.set_xticks(range(len(names)), columns)
        ax.set_yticks(range(len(rows)), [f"after {task_name(r['trained_on'])}" if r["stage"] != "single-task"
                                         else "single-task" for r in rows])
        ax.set_xlabel("evaluated task (own head and dims); under each: its baseline")
        ax.set_ylabel("encoder fine-tuned on")
        note = (f"mean ± half 95% interval over {len(seeds)} seeds" if len(seeds) > 1
                else f"one run per cell (seed {seeds[0]}), no error bars")
        ax.set_title(f"Cross-fine-tuning {' -> '.join(task_name(n) for n in names)}: dev GLUE score after each "
                     f"stage\n{model_name(config.encoder.model)} · {note}", fontsize=9)
        ax.figure.colorbar(image, ax=ax, label="dev GLUE score")

    return finish_study("cross", config, table, runs, summary, plot=plot,
                        title=f"cross {' -> '.join(names)} (dims {config.dims_mode} {config.dims_per_task})"
                              + (f", {len(seeds)} seeds" if len(seeds) > 1 else ""), row_key="stage")


def _load_stage(store: RunStore, spec: RunSpec) -> dict[str, Any] | None:
    record = store.load(spec)  # found under the stage's id: the same options and tasks so far
    if record is not None:
        record["resumed"] = True
    return record


def _resume_point(checkpoint: Path | None, config: CrossConfig, done: int) -> int:
    """The stage to train next: after the finished stages when the checkpoint holds their encoder, else 1."""
    n = len(parse_name_list(config.tasks, option="--tasks"))
    if done >= n:
        return n + 1
    if done == 0 or checkpoint is None:
        return 1
    try:
        state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return 1
    if state.get("stage") == done and state.get("stage_id") == _stage_id(config, done):
        return done + 1
    return 1


def _save_checkpoint(folder: Path, model: PreTrainedModel, heads: dict[str, SelectingHead], stage: int,
                     stage_id: str) -> None:
    """Encoder + heads after ``stage``, written beside the old checkpoint and swapped in when complete."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp / "encoder")
    for name, head in heads.items():
        head.save(tmp / "heads" / name)
    write_json_atomic(tmp / "state.json", {"stage": stage, "stage_id": stage_id})
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def study_points(payload: Mapping[str, Any]) -> list[StudyPoint]:
    """One point per cell of the stage x task matrix: ``({"source": "after A" | "single-task", "target": T}, s)``
    (the cell's mean over the study's seeds; its ``<task>_low``, ``_std``... columns are not points)."""
    points: list[StudyPoint] = []
    tasks = (payload.get("summary") or {}).get("tasks")
    for row in payload.get("table") or []:
        source = "single-task" if row.get("stage") == "single-task" else f"after {row.get('trained_on')}"
        for task, value in row.items():
            if task in ("stage", "trained_on") or (tasks is not None and task not in tasks):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                points.append(({"source": source, "target": task}, float(value)))
    return points


#: In a report: the stage x task matrix (rows: what was fine-tuned first, columns: the task evaluated after it),
#: also for any sweep that varies ``source`` and ``target``.
SECTION = ReportSection("source", "matrix", "cross-fine-tuning matrix", noun="cross-fine-tuning", across="target",
                        stem="cross", points=study_points)

COMMAND = CommandInfo("cross", CrossConfig, run_cross, StudyResult,
                      "paper 2 study: cross-fine-tuning over a task sequence (stage x task matrix)",
                      resumes_in_out=True, report=SECTION,
                      not_identity=NOT_IDENTITY | {"keep_checkpoint"})
