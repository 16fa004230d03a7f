"""What the training loop prints while it trains, and its watch for a diverging loss.

Both read the logging options (:class:`bertscope.finetune.tracking.TrackingOptions`: ``log``, ``log_every``,
``log_seconds``, ``on_divergence``) and add no device sync per step: the loss is read only where the loop reads it
anyway (every ``log_every`` steps and at each epoch's end)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from bertscope.core.errors import BertscopeError
from bertscope.core.progress import log_mode
from bertscope.finetune import distributed as dp
from bertscope.finetune.tracking import TrackingOptions

__all__ = ["EXPLODED_FACTOR", "DivergenceWatch", "ProgressLog"]

#: An epoch (the second or later) whose mean training loss is above this many times the larger of the constant
#: predictor's loss and the first epoch's mean loss has diverged, though every step's loss is finite. A head that is
#: learning stays near or below both (a fresh head starts within a few times the constant predictor's loss, and the
#: first epoch's mean already includes that start); ``--lr 1e3`` reaches 1e8 times it in its second epoch.
EXPLODED_FACTOR = 10.0


def _clock(seconds: float) -> str:
    whole = max(0, round(seconds)) if math.isfinite(seconds) else 0
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class ProgressLog:
    """What :func:`train_loop` prints while it trains, on the main process only.

    ``bar``: a tqdm bar per epoch (loss, examples/s) and the epoch lines through ``tqdm.write``; ``plain``: a
    timestamped line at most every ``log_seconds`` (step, loss, examples/s, ETA of the training left) and a
    timestamped epoch line, on stdout; ``off``: nothing. ``progress=False`` (``--no-progress``) drops the bars and
    step lines but keeps the epoch lines. Step lines are shown where the loop reads the loss anyway (every
    ``log_every`` steps; also after the first step, a sign of life), so they add no device sync."""

    def __init__(self, options: TrackingOptions, *, progress: bool, epochs: int, rank: int, total_steps: int) -> None:
        self.mode = log_mode(options.log)
        self.epochs = epochs
        self.lines = rank == 0 and self.mode != "off"
        self.bars = self.lines and progress and self.mode == "bar"
        self.plain_steps = self.lines and progress and self.mode == "plain"
        self.seconds = max(0.0, options.log_seconds)
        self.total_steps = total_steps
        self.last_line = -math.inf

    def bar(self, batches: Sequence[Any], epoch: int) -> Any:
        from tqdm.auto import tqdm

        return tqdm(batches, desc=f"epoch {epoch}/{self.epochs}", unit="batch", disable=not self.bars, leave=False,
                    dynamic_ncols=True)

    def step(self, bar: Any, epoch: int, steps: int, checkpoint: bool, loss: tuple[Any, int],
             examples_per_second: float, train_seconds: float) -> None:
        """After optimizer step ``steps`` (``checkpoint``: the loop reads the loss at this step anyway). ``loss``:
        the epoch's loss sum (a device tensor: reading it syncs, so it is read only when a postfix or line is shown)
        and example count; ``train_seconds``: the run's training time so far (for the ETA)."""
        if self.bars and (steps % 10 == 0 or steps == 1):  # as often as the bar always did
            bar.set_postfix(loss=f"{float(loss[0]) / loss[1]:.4f}", ex_s=f"{examples_per_second:.1f}")
        if (self.plain_steps and (checkpoint or steps == 1)
                and time.monotonic() - self.last_line >= self.seconds):
            eta = train_seconds / steps * (self.total_steps - steps)
            self.line(f"epoch {epoch}/{self.epochs} step {steps}/{self.total_steps} loss {float(loss[0]) / loss[1]:.4f} "
                      f"{examples_per_second:.1f} ex/s eta {_clock(eta)}")

    def line(self, text: str) -> None:
        if not self.lines:
            return
        self.last_line = time.monotonic()
        if self.mode == "bar":
            from tqdm.auto import tqdm

            tqdm.write(text)
        else:
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", file=sys.stdout, flush=True)


class DivergenceWatch:
    """Stops a run whose training loss turns NaN or infinite, without a device sync per step.

    Each step's loss is copied into a small device buffer (one copy, no sync); :meth:`check` reads the steps since
    the last check where the loop syncs anyway (every ``log_every`` steps and at the end of an epoch) and names the
    first bad step. Under ``torch.distributed`` every process checks at the same steps and the first bad step of any
    process is agreed on (one all-reduce), so all stop together instead of one waiting in a collective."""

    def __init__(self, stop: bool, device: torch.device) -> None:
        self.stop = stop
        self.device = device
        self.warned = False

    def start_epoch(self, epoch: int, steps: int, first_step: int, done: int = 0) -> None:
        """``done``: steps of this epoch trained before a resume (checked before their checkpoint was written)."""
        self.epoch, self.first_step = epoch, first_step
        self.losses = torch.zeros(max(1, steps), device=self.device)
        self.done = self.checked = done

    def record(self, loss: torch.Tensor) -> None:
        self.losses[self.done] = loss.detach().float()
        self.done += 1

    def check(self, *, epoch_end: bool = False) -> None:
        """Raise :class:`BertscopeError` (``stop``) or warn once (``continue``, checked at epoch ends only)."""
        if not self.stop and (self.warned or not epoch_end):
            return
        window = self.losses[self.checked:self.done]
        bad = (~torch.isfinite(window)).nonzero().flatten()
        first = math.inf
        if bad.numel():
            value = float(window[int(bad[0])])
            code = 0 if math.isnan(value) else (1 if value > 0 else 2)
            first = (self.first_step + self.checked + int(bad[0]) + 1) * 4 + code
        self.checked = self.done
        first = _agreed_minimum(first, self.device)
        if first == math.inf:
            return
        step, value_name = int(first) // 4, ("nan", "inf", "-inf")[int(first) % 4]
        self._diverged(f"loss is {value_name} at epoch {self.epoch}, step {step}")

    def check_epoch_loss(self, epoch: int, loss: float, first_epoch_loss: float | None,
                         constant: float | None) -> None:
        """Stop (or warn once) when epoch ``epoch`` (2 or later) ended with a finite mean training ``loss`` above
        :data:`EXPLODED_FACTOR` times the larger of ``constant`` (the constant predictor's loss on the training
        labels) and ``first_epoch_loss``. ``loss`` is the mean over every process, so all processes agree."""
        if epoch < 2 or first_epoch_loss is None or not math.isfinite(loss) or (not self.stop and self.warned):
            return
        reference = max(constant or 0.0, first_epoch_loss)
        if not math.isfinite(reference) or reference <= 0 or loss <= EXPLODED_FACTOR * reference:
            return
        self._diverged(f"epoch {epoch}'s mean loss {loss:.4g} is over {EXPLODED_FACTOR:g} times {reference:.4g} "
                       f"(the larger of the constant predictor's loss and epoch 1's)")

    def _diverged(self, where: str) -> None:
        if self.stop:
            raise BertscopeError(f"training diverged: {where} (lower --lr, or --on-divergence continue)")
        self.warned = True
        if dp.rank() == 0:
            print(f"bertscope: warning: training diverged: {where}; continuing (--on-divergence continue)",
                  file=sys.stderr, flush=True)


def _agreed_minimum(value: float, device: torch.device) -> float:
    """The minimum of ``value`` over all processes of a ``torch.distributed`` run (``value`` itself otherwise)."""
    if not dp.is_active():
        return value
    where = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    agreed = torch.tensor([value], dtype=torch.float64, device=where)
    torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN)
    return float(agreed)

