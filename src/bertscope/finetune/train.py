"""The fine-tuning loop, top to bottom: AdamW + linear warmup/decay over seeded, length-grouped batches, clip,
evaluate every epoch, checkpoint, stop on a diverging loss.

How one step works::

    vectors = represent(batch)          # [B, n_layers, H]: the selected token vector of each layer read
    logits  = head(vectors)             # pooler? -> fixed dimension mask -> dropout -> linear / mlp2
    loss    = cross-entropy (or MSE for STS-B); backward; clip; AdamW step; scheduler step

The loop takes the optimisation options as they are declared (:class:`bertscope.finetune.optim.OptimOptions`) and
the logging ones (:class:`bertscope.finetune.tracking.TrackingOptions`). Its parts live beside it: encoding and
batching (:mod:`~bertscope.finetune.batching`: the batch order depends only on ``seed``, the epoch and the lengths),
the swappable representation step (:mod:`~bertscope.finetune.representation`: the cached fast path for frozen
encoders feeds pre-computed vectors through this *same* loop and gets the same numbers), records
(:mod:`~bertscope.finetune.records`), progress and divergence (:mod:`~bertscope.finetune.progress`) and evaluation
(:mod:`~bertscope.finetune.evaluation`). The head is initialised from its own generator and its dropout draws from
its own generator (:class:`bertscope.finetune.head.SeededDropout`), so nothing in the head's path reads the global
RNG. AdamW uses the fused kernel, as the Trainer does.

Mixed precision (``dtype`` bfloat16/float16) uses ``torch.autocast`` around the forward pass with float32 master
weights (float16 adds a gradient scaler). Data-parallel (``torchrun``, see :mod:`bertscope.finetune.distributed`):
the encoder and head are wrapped in DDP by the pipeline; each process takes its part of every global batch of
``batch_size x world`` examples of the same seeded order (each example once per epoch), and evaluation runs the
unwrapped modules on each process's share of the dev batches, then gathers the logits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from bertscope.core.device import resolve_dtype
from bertscope.data import glue
from bertscope.finetune import distributed as dp
from bertscope.finetune.batching import collate, length_grouped_batches
from bertscope.finetune.checkpoint import Checkpointer, CheckpointKept, LoopState, capture, restore
from bertscope.finetune.evaluation import autocast, evaluate_logits, predictions_from_logits, score
from bertscope.finetune.freezing import trainable_parameters
from bertscope.finetune.learning import constant_loss
from bertscope.finetune.optim import OptimOptions, param_groups
from bertscope.finetune.progress import DivergenceWatch, ProgressLog
from bertscope.finetune.records import EpochRecord, TrainCallback, TrainHistory
from bertscope.finetune.representation import Representation
from bertscope.finetune.tracking import TrackingOptions

__all__ = ["distributed_world_size", "train_loop"]


def train_loop(
    represent: Representation,
    head: nn.Module,
    train_data: Any,
    eval_data: Mapping[str, Any],
    optim: OptimOptions,
    *,
    batch_size: int,
    seed: int = 0,
    dtype: str = "float32",
    tracking: TrackingOptions | None = None,
    progress: bool = True,
    checkpoint_every: int = 0,
    encoder_params: Sequence[tuple[str, nn.Parameter]] = (),
    device: torch.device,
    collate_fn: Callable[..., Any] | None = None,
    callback: TrainCallback | None = None,
    checkpoints: Checkpointer | None = None,
) -> TrainHistory:
    """Fine-tune ``head`` (and the trainable, named ``encoder_params``) on ``train_data``; evaluate every epoch.

    ``train_data`` / ``eval_data`` are :class:`EncodedSplit` s (or what ``collate_fn`` turns into batches).
    ``optim.head_lr`` must be resolved (None means ``optim.lr``; the pipeline resolves it:
    :func:`bertscope.finetune.pipeline.head_learning_rate`). ``batch_size``, ``seed`` and ``dtype`` are the model
    options' (:class:`bertscope.models.options.ModelOptions`).
    ``callback`` (optional) is told the loss every ``tracking.log_every`` steps and every epoch's record.
    A NaN or infinite training loss raises :class:`BertscopeError` naming epoch and step (checked every
    ``log_every`` steps and at each epoch's end), and so does an epoch's mean loss far above the constant
    predictor's and the first epoch's (:meth:`DivergenceWatch.check_epoch_loss`), unless
    ``tracking.on_divergence`` is ``continue``.
    ``checkpoints`` (optional): continue from its checkpoint when it has one, write one at the end of every epoch
    (and every ``checkpoint_every`` steps), and, when a stop was requested while training
    (:meth:`Checkpointer.deferring_interrupts`), write one at the next step boundary and stop.
    """
    from transformers import get_linear_schedule_with_warmup

    regression = glue.get_task(train_data.task).is_regression
    tracking = tracking if tracking is not None else TrackingOptions()
    amp_dtype = resolve_dtype(dtype)
    eval_batch_size = optim.eval_batch_size or batch_size
    collate_batch = collate_fn or collate

    # Optimizer: AdamW (fused kernel, as the Trainer's default) over trainable parameters only.
    groups = param_groups(encoder_params, head, optim)
    fused = all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=(0.9, 0.999), eps=1e-8, fused=fused or None)

    # Schedule: linear warmup over warmup_ratio of all steps, then linear decay to zero.
    # Data-parallel: global batches of batch_size x world examples, each cut into one part per process (each
    # example once per epoch, every process the same number of steps; bertscope.finetune.distributed.shard_batches).
    rank, world = (dp.rank(), dp.world_size()) if dp.is_active() else (0, 1)
    steps_per_epoch = len(dp.shard_batches(length_grouped_batches(train_data.lengths, batch_size * world,
                                                                  seed=seed), rank, world))
    total_steps = max(1, steps_per_epoch * optim.epochs)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(optim.warmup_ratio * total_steps),
                                                total_steps)
    # float16 on CUDA scales the loss; every other case backpropagates the loss as it is (scale 1, disabled scaler).
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16 and device.type == "cuda")
    params_to_clip = trainable_parameters(head) + [p for _, p in encoder_params]

    records: list[EpochRecord] = []
    predictions: dict[str, list[float]] = {}
    final_logits: dict[str, torch.Tensor] = {}
    train_seconds = eval_seconds = 0.0
    seen = steps = 0
    interval_loss: Any = 0.0  # the callback's: loss summed over the steps since it was last told (a tensor)
    interval_steps = 0

    # ---- resume: the checkpoint's weights, optimizer, schedule, RNG streams, position in the batch order, totals
    resumed = checkpoints.load() if checkpoints is not None else None
    at = LoopState(epoch=1, batch=0, steps=0, seen=0, train_seconds=0.0, eval_seconds=0.0)
    if resumed is not None:
        at = restore(resumed, head=head, encoder_params=encoder_params, optimizer=optimizer, scheduler=scheduler,
                     scaler=scaler)
        records = [EpochRecord(**r) for r in at.records]
        predictions, final_logits = dict(at.predictions), dict(at.logits)
        steps, seen, train_seconds, eval_seconds = at.steps, at.seen, at.train_seconds, at.eval_seconds
        interval_loss, interval_steps = _on(at.interval_loss, device), at.interval_steps

    def save_checkpoint(epoch: int, done: int, loss_sum: Any = 0.0, loss_count: int = 0, epoch_seen: int = 0,
                        epoch_seconds: float = 0.0, late: tuple[Any, int] = (0.0, 0), *,
                        together: bool = True) -> None:
        """Checkpoint the run with ``done`` batches of ``epoch`` trained (the main process writes it; ``together``:
        every process is here, so a failed write stops every process, not rank 0 alone)."""
        if checkpoints is not None:
            dp.main_writes(lambda: write_checkpoint(epoch, done, loss_sum, loss_count, epoch_seen, epoch_seconds,
                                                    late),
                           "the main process (rank 0) failed to write the checkpoint; its error is above",
                           together=together, error=CheckpointKept)

    def write_checkpoint(epoch: int, done: int, loss_sum: Any, loss_count: int, epoch_seen: int,
                         epoch_seconds: float, late: tuple[Any, int]) -> None:
        assert checkpoints is not None
        loop = LoopState(epoch=epoch, batch=done, steps=steps, seen=seen, train_seconds=train_seconds,
                         eval_seconds=eval_seconds, loss_sum=loss_sum, loss_count=loss_count, late_sum=late[0],
                         late_count=late[1], epoch_seen=epoch_seen,
                         epoch_seconds=epoch_seconds, interval_loss=interval_loss, interval_steps=interval_steps,
                         records=[asdict(r) for r in records], predictions=predictions,
                         logits=final_logits)
        checkpoints.save(capture(loop, head=head, encoder_params=encoder_params, optimizer=optimizer,
                                 scheduler=scheduler, scaler=scaler))

    log = ProgressLog(tracking, progress=progress, epochs=optim.epochs, rank=rank, total_steps=total_steps)
    watch = DivergenceWatch(tracking.on_divergence != "continue", device)
    labels = [v for v in getattr(train_data, "labels", ()) if v is not None]
    constant = constant_loss(labels, regression=regression) if labels else None
    for epoch in range(at.epoch, optim.epochs + 1):
        # ---- train one epoch (a resumed one from the batch it stopped at)
        batches = length_grouped_batches(train_data.lengths, batch_size * world, seed=seed,
                                         epoch=epoch, group_by_length=optim.group_by_length)
        epoch_examples = sum(map(len, batches))  # over all processes
        batches = dp.shard_batches(batches, rank, world)
        represent.train(True)
        head.train()
        done = at.batch if epoch == at.epoch else 0
        loss_sum: Any = _on(at.loss_sum, device) if done else 0.0
        loss_count, epoch_seen = (at.loss_count, at.epoch_seen) if done else (0, 0)
        # the second half of the epoch's batches: the loss where the head ended (the learning check reads it)
        late_sum: Any = _on(at.late_sum, device) if done else 0.0
        late_count = at.late_count if done else 0
        late_from = len(batches) // 2
        bar = log.bar(batches[done:], epoch)
        watch.start_epoch(epoch, len(batches), steps - done, done)
        start = time.perf_counter() - (at.epoch_seconds if done else 0.0)
        for indices in bar:
            batch = collate_batch(train_data, indices, regression=regression, device=device)
            with autocast(device, amp_dtype):
                logits = head(represent(batch))
            if batch.labels is None:
                raise ValueError(f"{train_data.task}: a training example has no label")
            loss = _loss(logits, batch.labels, regression)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params_to_clip, optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            steps += 1
            watch.record(loss)
            loss_sum = loss_sum + loss.detach().float() * len(batch)  # a tensor: no device sync per step
            loss_count += len(batch)
            if done >= late_from:
                late_sum = late_sum + loss.detach().float() * len(batch)
                late_count += len(batch)
            epoch_seen += len(batch)
            checkpoint = steps % max(1, tracking.log_every) == 0  # one device sync per log_every steps
            if checkpoint:
                watch.check()
            if callback is not None:
                interval_loss = interval_loss + loss.detach().float()
                interval_steps += 1
                if checkpoint:
                    callback.on_step(steps, float(interval_loss) / interval_steps, float(scheduler.get_last_lr()[0]))
                    interval_loss, interval_steps = 0.0, 0
            elapsed = time.perf_counter() - start
            log.step(bar, epoch, steps, checkpoint, (loss_sum, loss_count),
                     epoch_seen * world / max(elapsed, 1e-9), train_seconds + elapsed)
            done += 1
            due = checkpoint_every > 0 and steps % checkpoint_every == 0 and done < len(batches)
            if checkpoints is not None and (due or checkpoints.stop_requested):
                if due:
                    watch.check()  # every process at the same steps; a diverged state is never saved
                save_checkpoint(epoch, done, loss_sum, loss_count, epoch_seen, time.perf_counter() - start,
                                (late_sum, late_count),
                                together=due)  # a stop is asked of each process alone
                checkpoints.stop_if_requested()
        bar.close()
        watch.check(epoch_end=True)  # before the dev sets: a diverged run is not evaluated
        loss_sum = float(loss_sum)  # waits for the device, so the time below is the real one
        loss_sum, loss_count = dp.sum_across(loss_sum, loss_count)  # data-parallel: over every process
        late_sum, late_count = dp.sum_across(float(late_sum), late_count)
        watch.check_epoch_loss(epoch, loss_sum / max(loss_count, 1), records[0].train_loss if records else None,
                               constant)
        epoch_train = time.perf_counter() - start
        train_seconds += epoch_train
        seen += epoch_examples

        # ---- evaluate on every dev split
        start = time.perf_counter()
        scores: dict[str, dict[str, float]] = {}
        for name, data in eval_data.items():
            final_logits[name] = evaluate_logits(represent, head, data, batch_size=eval_batch_size, device=device,
                                                 dtype=amp_dtype, collate_fn=collate_fn)
            preds = predictions[name] = predictions_from_logits(final_logits[name], regression)
            scores[name] = score(data.task, preds, data.labels)
        epoch_eval = time.perf_counter() - start
        eval_seconds += epoch_eval
        records.append(EpochRecord(epoch=epoch, train_loss=loss_sum / max(loss_count, 1),
                                   late_train_loss=late_sum / late_count if late_count else None,
                                   learning_rate=float(scheduler.get_last_lr()[0]), train_seconds=epoch_train,
                                   train_examples=epoch_examples, eval=scores, eval_seconds=epoch_eval))
        if callback is not None:
            callback.on_epoch(records[-1], steps)
        summary = "  ".join(f"{n}: " + ", ".join(f"{k}={v:.4f}" for k, v in s.items()) for n, s in scores.items())
        log.line(f"epoch {epoch}/{optim.epochs}: loss {records[-1].train_loss:.4f}  "
                 f"{epoch_seen * world / max(epoch_train, 1e-9):.1f} ex/s  {summary}")
        if checkpoints is not None:
            save_checkpoint(epoch + 1, 0)
            checkpoints.stop_if_requested()
    return TrainHistory(epochs=tuple(records), train_seconds=train_seconds, eval_seconds=eval_seconds,
                        train_examples=seen, steps=steps, predictions=predictions, logits=final_logits,
                        resumed_from_epoch=at.epochs_done if resumed is not None else 0,
                        resumed_from_step=at.steps if resumed is not None else 0)


def _on(value: Any, device: torch.device) -> Any:
    """A checkpointed running total back on the training device (a float stays a float)."""
    return value.to(device) if isinstance(value, torch.Tensor) else value


def distributed_world_size() -> int:
    """Processes of the data-parallel run (``torchrun``; 1 when run directly)."""
    return dp.world_size()


def _loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    if regression:
        return nn.functional.mse_loss(logits.float().squeeze(-1), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)
