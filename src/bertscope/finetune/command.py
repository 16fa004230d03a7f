"""``bertscope finetune``: GLUE fine-tuning with a representation-selecting head (paper 2), start to finish.

:func:`run_finetune` prepares the run (data, model, selection, freezing, head: :func:`bertscope.finetune.pipeline.prepare`),
trains it and returns a :class:`~bertscope.finetune.result.FinetuneResult`. With ``out``
it writes ``results.json`` atomically at the very end (an interrupted run leaves ``status.json`` saying so and no
``results.json``, and its last checkpoint in ``OUT/checkpoints``, which ``--resume`` continues from:
:mod:`bertscope.finetune.checkpoint`), ``predictions.csv`` with the final dev predictions (label names and the probability of every
label), and with ``save_model`` a folder ``model/`` (:func:`bertscope.finetune.export.save_finetuned`): the family's plain
``*ForSequenceClassification`` when the head is one, else the encoder, with ``head_config.json`` +
``head.safetensors`` and a model card beside it; :func:`load_finetuned` reloads any of them.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertscope.core import publish
from bertscope.core.device import resolve_device
from bertscope.core.errors import BertscopeError
from bertscope.core.progress import Progress, log_mode, progress_bar
from bertscope.core.registry import LOCATION_OPTIONS, CommandInfo, ReportSection
from bertscope.core.results import environment_info, write_csv_atomic, write_json_atomic
from bertscope.data import glue
from bertscope.finetune import distributed as dp
from bertscope.finetune import leaderboard
from bertscope.finetune.batching import Batch, encode_split
from bertscope.finetune.checkpoint import Checkpointer, CheckpointKept, identity
from bertscope.finetune.config import FinetuneConfig
from bertscope.finetune.export import (
    check_saved_together,
    label_names,
    prediction_rows,
    save_finetuned,
)
from bertscope.finetune.head import HeadSpec, SelectingHead
from bertscope.finetune.pipeline import PreparedRun, prepare
from bertscope.finetune.records import TrainHistory
from bertscope.finetune.representation import EncoderRepresentation
from bertscope.finetune.result import FinetuneResult
from bertscope.finetune.tracking import TRACKING_OPTIONS
from bertscope.models import families, loading

__all__ = ["COMMAND", "FREEZE_SECTION", "NOT_IDENTITY", "RUN_FILES", "FinetunedModel", "load_finetuned", "run_command",
           "run_finetune", "save_finetuned"]


def _check_out(config: FinetuneConfig) -> Path | None:
    if config.output.out is None:
        return None
    out = Path(config.output.out)
    publish.check_writable(out)  # a bad --out fails now, not after the training
    if (out / "results.json").exists() and not config.output.overwrite:
        raise BertscopeError(f"{out / 'results.json'} already exists; choose another --out or pass --overwrite")
    return out


#: What a finished run leaves in ``OUT``, the file that makes it look complete first: ``--overwrite`` sets all of it
#: aside (``results.previous.json``, ``model.previous``, ...) before the new run starts and deletes it once the new
#: one is complete, so an interrupted new run never sits beside the previous run's files under their current names.
RUN_FILES = ("results.json", "predictions.csv", "model", "glue_submission")


def _retire_old_results(out: Path | None) -> None:
    """With --overwrite, move the previous run's files aside (:data:`RUN_FILES`, :func:`bertscope.core.publish.retire`)."""
    if out is not None and dp.is_main():
        publish.retire(out, RUN_FILES)


def _checkpoints(config: FinetuneConfig, out: Path | None) -> Checkpointer | None:
    """The run's checkpoint folder ``OUT/checkpoints`` (none without ``--out``), checked before anything heavy:
    ``--resume`` continues its checkpoint (refused, naming the option, when a result-affecting option changed) or
    says in one line that there is none and starts fresh; without ``--resume`` a checkpoint there is discarded
    only with ``--overwrite`` (an interrupted run's work is never thrown away silently)."""
    if out is None:
        if config.checkpoints.resume:
            raise BertscopeError("--resume needs --out DIR (the folder of the run to continue)")
        return None
    checkpoints = Checkpointer(out / "checkpoints", identity(config, NOT_IDENTITY))
    if config.output.overwrite and not config.checkpoints.resume:
        checkpoints.remove()  # unread: even a checkpoint that cannot be read is discarded when asked to
        return checkpoints
    if checkpoints.meta() is None:
        if config.checkpoints.resume and int(os.environ.get("RANK", "0")) == 0:
            print(f"bertscope finetune: --resume: no checkpoint in {checkpoints.folder}; starting fresh",
                  file=sys.stderr, flush=True)
    elif config.checkpoints.resume:
        checkpoints.refuse_changes()
    else:
        raise BertscopeError(f"{checkpoints.folder} holds the checkpoint of an interrupted run "
                             f"({checkpoints.describe()}); pass --resume to continue it, or --overwrite to start over")
    return checkpoints


def _status(out: Path | None, state: str, **extra: Any) -> None:
    if out is not None and dp.is_main():  # data-parallel: rank 0 writes
        write_json_atomic(out / "status.json", {"command": "finetune", "state": state, **extra})


def _final_status(out: Path | None, exc: BaseException, checkpoints: Checkpointer | None) -> None:
    """``status.json`` of a run that stopped on ``exc``: ``interrupted`` (Ctrl-C, SIGTERM) or ``failed``, with the
    checkpoint it keeps. Never left ``running``: when even this small write fails (a full disk), the old status
    is deleted instead."""
    try:
        kept = {} if checkpoints is None or checkpoints.meta() is None else {
            "checkpoint": str(checkpoints.path), "checkpoint_at": checkpoints.describe()}
    except BertscopeError:
        kept = {}
    try:
        _status(out, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", error=type(exc).__name__,
                **kept)
    except OSError:
        if out is not None and dp.is_main():
            (out / "status.json").unlink(missing_ok=True)


def _write_error(exc: OSError, out: Path) -> BertscopeError:
    """A failed write of the results (a full disk, a quota, a read-only folder) in one line."""
    where = f" {exc.filename}" if exc.filename else ""
    full = " (free some space and --resume: the last checkpoint is kept)" if exc.errno in (
        errno.ENOSPC, errno.EDQUOT) else ""
    return BertscopeError(f"cannot write the results in {out}:{where} {exc.strerror or exc}{full}")


def run_finetune(config: FinetuneConfig) -> FinetuneResult:
    """Run one fine-tuning job as described by ``config`` (prepare, train, result: :mod:`bertscope.finetune.pipeline`).

    Under ``torchrun`` / ``accelerate launch`` the processes form one data-parallel run (:mod:`bertscope.finetune.distributed`):
    only rank 0 writes files; if it fails to, every process fails (the same exit code everywhere)."""
    if config.seeds is not None:  # several runs: the command (or bertscope.finetune.seeds.run_finetune_seeds) runs them
        raise BertscopeError("--seeds runs one fine-tuning run per seed: use bertscope.api.finetune_seeds")
    with dp.launched():  # the process group prepare() may create is destroyed at the end
        return _run_finetune(config)


def _run_finetune(config: FinetuneConfig) -> FinetuneResult:
    out = _check_out(config)
    checkpoints = _checkpoints(config, out)
    run = prepare(config)
    run.checkpoints = checkpoints
    if out is not None:
        dp.main_writes(lambda: _start(out), _MAIN_FAILED)
    try:
        history = run.train()
    except BaseException as exc:
        if checkpoints is not None and isinstance(exc, BertscopeError) and not isinstance(exc, CheckpointKept):
            checkpoints.remove()  # e.g. diverged: the same options fail the same way again (kept after a crash)
        _final_status(out, exc, checkpoints)
        raise
    saved = str(Path(out) / "model") if (out is not None and config.output.save_model) else None
    submission: dict[str, str] = {}
    if out is not None and config.output.predict_test:
        try:
            submission = _predict_test(run, Path(out) / "glue_submission")
        except OSError as exc:
            error = _write_error(exc, out)
            _final_status(out, error, checkpoints)
            raise error from None
    result = run.result(history, saved_model=saved, test_predictions=submission)
    if out is not None:
        dp.main_writes(lambda: _write_results(run, history, result, out, checkpoints), _MAIN_FAILED)
    return result


#: What every other process of a data-parallel run says when rank 0 (the one that writes) failed to write.
_MAIN_FAILED = "the main process (rank 0) failed to write the results; its error is above"


def _start(out: Path) -> None:
    """Rank 0's writes before training: the previous run set aside (--overwrite), ``status.json`` "running"."""
    try:
        _retire_old_results(out)
        _status(out, "running", started_utc=environment_info()["created_utc"])
    except OSError as exc:
        raise _write_error(exc, out) from None


def _write_results(run: PreparedRun, history: TrainHistory, result: FinetuneResult, out: Path,
                   checkpoints: Checkpointer | None) -> None:
    """Rank 0's writes of a finished run, ``results.json`` (what makes it look complete) last; a failure leaves
    status "failed" (:func:`_final_status`) and is raised in one line."""
    config = run.config
    try:
        if config.output.save_model:
            save_finetuned(Path(out) / "model", run.model, run.trained_head, run.tokenizer, seed=config.encoder.seed,
                           max_length=config.encoder.max_length, result=result)
        write_csv_atomic(Path(out) / "predictions.csv", _prediction_rows(run, history))
        write_json_atomic(Path(out) / "results.json", result.to_dict())
        publish.drop_retired(out, RUN_FILES)
        if checkpoints is not None and not config.checkpoints.keep_checkpoints:
            checkpoints.remove()  # the run is complete: results.json holds what the checkpoint would give
        _status(out, "complete", finished_utc=environment_info()["created_utc"])
    except BaseException as exc:
        failure = _write_error(exc, out) if isinstance(exc, OSError) else exc
        _final_status(out, failure, checkpoints)
        raise failure from None


def _predict_test(run: PreparedRun, folder: Path) -> dict[str, str]:
    """Predict every test split of the run's task and write the GLUE server's submission files (split -> path).

    Predicting a large test split takes minutes, so each split is announced and timed in a line (as the training
    loop's lines: timestamped on stdout, nothing with ``--log off``)."""
    task, config = run.data.task, run.config
    say = run.is_main_process and log_mode(config.tracking.log) != "off"
    written: dict[str, str] = {}
    for split in leaderboard.test_splits(task):
        start = time.perf_counter()
        data = glue.load_split(task, split, config.data.data_dir, None, config.encoder.seed, bad_rows=config.data.bad_rows)
        if say:
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} predicting {task.name} {split}: {len(data)} examples",
                  flush=True)
        predictions = run.predict(encode_split(run.tokenizer, data, config.encoder.max_length))
        ids = [ex.idx for ex in data.examples]
        path = dp.main_writes(functools.partial(leaderboard.write_submission, folder, task, split, ids, predictions),
                              _MAIN_FAILED)
        if path is not None:
            written[split] = str(path)
            if say:
                print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} predicted {task.name} {split} in "
                      f"{time.perf_counter() - start:.1f} s -> {path}", flush=True)
    return written


def _prediction_rows(run: PreparedRun, history: TrainHistory) -> list[dict[str, Any]]:
    """predictions.csv: per dev example its split, idx, gold label (and name), prediction (and name) and the
    probability of every label (softmax of the final logits); for STS-B the prediction is the predicted score."""
    task = run.data.task
    names = label_names(run.trained_head.spec)
    rows: list[dict[str, Any]] = []
    for split, preds in history.predictions.items():
        examples = run.data.eval_sets[split].examples
        logits = history.logits.get(split)
        if logits is None:  # a history without logits (e.g. built by hand): ids or scores only
            columns = [{"label": ex.label, "prediction": p} for ex, p in zip(examples, preds)]
        else:
            columns = prediction_rows(logits, names, regression=task.is_regression,
                                      labels=[ex.label for ex in examples])
        rows += [{"split": split, "idx": ex.idx, **c} for ex, c in zip(examples, columns)]
    return rows


# ----------------------------------------------------------------------------------------- saved model


@dataclass
class FinetunedModel:
    """A reloaded fine-tuned model: encoder + selecting head + tokenizer, ready to predict."""

    encoder: nn.Module
    head: SelectingHead
    tokenizer: Any

    @property
    def spec(self) -> HeadSpec:
        return self.head.spec

    @property
    def attention(self) -> str:
        """The attention implementation the encoder runs (what predict records)."""
        return families.attention_in_use(self.encoder)

    @property
    def label_names(self) -> tuple[str, ...]:
        """One name per output (the task's labels; ``score`` for STS-B)."""
        return label_names(self.spec)

    @property
    def task(self) -> glue.GlueTask | None:
        """The GLUE task the head was trained on (None when the head does not record one)."""
        return glue.get_task(self.spec.task) if self.spec.task else None

    @torch.no_grad()
    def logits(self, texts: Sequence[str] | Sequence[tuple[str, ...]], *, max_length: int = 128,
               batch_size: int = 32, progress: Progress = False) -> torch.Tensor:
        """Logits ``[N, num_labels]`` for single sentences or sentence pairs, in the order given (the head's
        selection applied as in training; examples are batched by length, truncated longest-first)."""
        items = [t if isinstance(t, tuple) else (t,) for t in texts]
        if len({len(t) for t in items}) > 1:
            raise BertscopeError("give all examples as single texts or all as pairs, not a mix")
        self.encoder.eval()
        self.head.eval()
        device = next(self.encoder.parameters()).device
        represent = EncoderRepresentation(self.encoder, self.spec.layers, self.spec.token_method,
                                          include_special=self.spec.include_special, frozen=True)
        order = sorted(range(len(items)), key=lambda i: -sum(len(t) for t in items[i]))  # little padding
        out = torch.empty(len(items), self.spec.num_labels)
        starts = range(0, len(order), batch_size)
        for start in progress_bar(starts, progress=progress, desc="predict", unit="batch"):
            chunk = order[start:start + batch_size]
            columns = [list(column) for column in zip(*(items[i] for i in chunk))]
            enc = self.tokenizer(*columns[:2], truncation=True, max_length=max_length, padding=True,
                                 return_special_tokens_mask=True, return_token_type_ids=True, return_tensors="pt")
            batch = Batch(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                          token_type_ids=enc["token_type_ids"].to(device),
                          special_mask=enc["special_tokens_mask"].to(device), labels=None,
                          example_index=torch.arange(len(chunk)))
            out[torch.tensor(chunk, dtype=torch.long)] = self.head(represent(batch)).float().cpu()
        return out


def load_finetuned(folder: str | os.PathLike[str], *, device: str = "cpu",
                   attention: str = "auto") -> FinetunedModel:
    """Reload a folder written by ``finetune --save-model`` (``OUT/model``, or ``OUT`` itself): the encoder (also out
    of a saved ``*ForSequenceClassification``; ``attention`` as for :func:`bertscope.models.loading.load_model`), the
    selecting head and the tokenizer."""
    path = Path(folder)
    if (path / "model" / "head_config.json").is_file():
        path = path / "model"
    check_saved_together(path)  # a head beside an encoder of another save would load without complaint
    head = SelectingHead.load(path, map_location="cpu")
    loaded = loading.load_model(str(path), "base", device=device, attention=attention)
    tokenizer = loading.load_tokenizer(str(path))
    return FinetunedModel(encoder=loaded.model, head=head.to(resolve_device(device)), tokenizer=tokenizer)


#: Options of fine-tuning runs that never change their numbers: locations, the trackers (--report-to, --run-name,
#: --log-every), the feature cache (the cached path equals the live one by design), the extra test-split
#: predictions, what training prints (--log, --log-seconds), --on-divergence (a run that finishes has the same
#: numbers either way) and the checkpoints (--resume, --keep-checkpoints, --checkpoint-every: a resumed run has the
#: numbers of one that never stopped). The studies run fine-tuning runs, so they share this list.
NOT_IDENTITY = LOCATION_OPTIONS | TRACKING_OPTIONS | {"cache_features", "predict_test", "log", "log_seconds",
                                                      "on_divergence", "resume", "keep_checkpoints",
                                                      "checkpoint_every"}

def run_command(config: FinetuneConfig) -> Any:
    """The command: one run, or with ``--seeds`` one per seed (:mod:`bertscope.finetune.seeds`)."""
    if config.seeds is not None:
        from bertscope.finetune.seeds import run_finetune_seeds

        return run_finetune_seeds(config, run_finetune, COMMAND)
    return run_finetune(config)


#: In a report, a sweep that varies ``--freeze``: frozen vs fine-tuned (the studies declare ``layer``, ``token``,
#: ``dims``, which a sweep of finetune gets too).
FREEZE_SECTION = ReportSection("freeze", "bars", "frozen vs fine-tuned",
                               text="`none` fine-tunes the whole encoder; other values freeze the named parts and "
                                    "train only the head (and what is left).")

COMMAND = CommandInfo("finetune", FinetuneConfig, run_command, FinetuneResult,
                      "GLUE fine-tuning with a head reading a chosen token, layer and dimensions (paper 2)",
                      model_subdir="model", not_identity=NOT_IDENTITY, report=FREEZE_SECTION)
