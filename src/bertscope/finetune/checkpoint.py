"""Training checkpoints: all a fine-tuning run needs to continue exactly where it stopped.

A checkpoint is one folder, ``last/`` in the run's checkpoint folder (``OUT/checkpoints`` for ``finetune``,
``OUT/runs/<run>.ckpt`` for a study run), built beside its target and renamed into place whole
(:func:`bertscope.core.publish.building`), so a crash at any moment leaves the previous checkpoint or the new one:

* ``state.pt``: the trainable encoder parameters (by name; frozen ones are reloaded from the model as before), the
  head's state, the optimizer, scheduler and gradient-scaler states, every RNG stream (Python ``random``, NumPy,
  torch CPU and CUDA, and the generators of the head's :class:`~bertscope.finetune.head.SeededDropout` modules), the position
  in the seeded batch order (:class:`LoopState`: epoch in progress, batches of it trained, optimizer steps) and the
  loop's running totals (loss sums, examples seen, finished epoch records, times, the last dev predictions);
* ``meta.json``: the position, the run's identity (its result-affecting options, :func:`identity`), readable
  without loading any tensor, so a changed option is refused in a second, and the SHA-256 of ``state.pt``.

A checkpoint is deleted only when it is proven damaged: ``state.pt`` no longer matches its checksum
(:class:`DamagedCheckpoint`, one line; the checkpoint is removed). Any other failure to read it (too little memory,
an I/O error, a file of another torch version) or to write the next one (a full disk) is one line too
(:class:`CheckpointKept`), and the checkpoint stays where it is for a later ``--resume``.

Batch order depends only on the seed and the epoch, so a run restored at a step boundary draws the same batches,
dropout masks and updates as one that never stopped: same losses and metrics (the same floats on the CPU).

:class:`Checkpointer` also turns Ctrl-C and SIGTERM into a stop at the next step boundary while training
(:meth:`Checkpointer.deferring_interrupts`), so a preempted run writes a checkpoint there before it stops; a second
signal stops at once. This module imports ``errors``, ``publish``, ``results`` and ``head`` of bertscope.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn

from bertscope.core import publish
from bertscope.core.errors import BertscopeError, Terminated
from bertscope.core.results import file_sha256, write_json_atomic
from bertscope.finetune.head import SeededDropout

__all__ = ["CHECKPOINT_FORMAT", "CheckpointKept", "Checkpointer", "DamagedCheckpoint", "LoopState", "TrainingState",
           "capture", "identity", "restore"]

CHECKPOINT_FORMAT = "bertscope-checkpoint/1"
_NAME = "last"


class CheckpointKept(BertscopeError):
    """A checkpoint could not be read or written for a reason that does not prove it damaged: the run stops in one
    line and the checkpoint is kept (the run that stops must not delete it)."""


class DamagedCheckpoint(BertscopeError):
    """The checkpoint's ``state.pt`` does not match the checksum written with it: proven damaged (and removed)."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def identity(config: Any, not_identity: frozenset[str] | set[str]) -> dict[str, Any]:
    """The options of ``config`` that change a run's numbers (every field not in ``not_identity``), as JSON values."""
    values = {k: v for k, v in config.to_dict().items() if k not in not_identity}
    normalised: dict[str, Any] = json.loads(json.dumps(values, sort_keys=True, default=str))
    return normalised


@dataclass(frozen=True)
class LoopState:
    """Where :func:`bertscope.finetune.train.train_loop` stands at a step boundary, and its running totals.

    ``epoch`` is the epoch in progress (1-based; ``epochs + 1`` once all are done) and ``batch`` the number of its
    batches already trained (0 at its start); ``loss_sum`` / ``loss_count`` / ``epoch_seen`` / ``epoch_seconds`` are
    that epoch's totals so far (``late_sum`` / ``late_count``: over its second half of batches), ``records`` the
    finished epochs (as dicts)."""

    epoch: int
    batch: int
    steps: int
    seen: int
    train_seconds: float
    eval_seconds: float
    loss_sum: Any = 0.0  # a float, or the loop's float32 tensor (kept as a tensor: the same sums after resuming)
    loss_count: int = 0
    late_sum: Any = 0.0
    late_count: int = 0
    epoch_seen: int = 0
    epoch_seconds: float = 0.0
    interval_loss: Any = 0.0
    interval_steps: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    predictions: dict[str, list[float]] = field(default_factory=dict)
    logits: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def epochs_done(self) -> int:
        return len(self.records)


@dataclass(frozen=True)
class TrainingState:
    """A whole checkpoint: the loop's position and totals, the module/optimizer states and the RNG streams."""

    loop: LoopState
    encoder: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    rng: dict[str, Any]


def _cpu(value: Any) -> Any:
    return value.detach().cpu() if isinstance(value, torch.Tensor) else value


def _unwrapped(head: nn.Module) -> nn.Module:
    inner: nn.Module = getattr(head, "module", head)  # a DDP wrapper under torchrun
    return inner


def _rng_state(head: nn.Module) -> dict[str, Any]:
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {"python": random.getstate(),
                             "numpy": (kind, np.asarray(keys).tolist(), pos, has_gauss, gauss),  # no ndarray in .pt
                             "torch": torch.get_rng_state(), "cuda": None, "head": {}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    for name, module in _unwrapped(head).named_modules():
        if isinstance(module, SeededDropout):
            generator = module._generator  # its own stream, created on first use (None: not drawn from yet)
            state["head"][name] = None if generator is None else (str(generator.device), generator.get_state())
    return state


def _set_rng_state(state: Mapping[str, Any], head: nn.Module) -> None:
    import numpy as np

    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, module in _unwrapped(head).named_modules():
        if isinstance(module, SeededDropout) and name in state["head"]:
            saved = state["head"][name]
            generator = None
            if saved is not None:
                generator = torch.Generator(device=saved[0])
                generator.set_state(saved[1])
            module._generator = generator


def capture(loop: LoopState, *, head: nn.Module, encoder_params: Sequence[tuple[str, nn.Parameter]],
            optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any) -> TrainingState:
    """The full state of a training run at a step boundary (tensors copied to the CPU when written)."""
    loop = replace(loop, loss_sum=_cpu(loop.loss_sum), late_sum=_cpu(loop.late_sum),
                   interval_loss=_cpu(loop.interval_loss))
    return TrainingState(loop=loop, encoder={n: p.detach() for n, p in encoder_params},
                         head=_unwrapped(head).state_dict(), optimizer=optimizer.state_dict(),
                         scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), rng=_rng_state(head))


def restore(state: TrainingState, *, head: nn.Module, encoder_params: Sequence[tuple[str, nn.Parameter]],
            optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any) -> LoopState:
    """Put ``state`` back into the run's modules, optimizer, schedule, scaler and RNG streams; return its loop
    state. Refuses (one line) a checkpoint whose parameters do not fit this run's."""
    names = [n for n, _ in encoder_params]
    if sorted(names) != sorted(state.encoder):
        raise BertscopeError("the checkpoint's trainable encoder parameters differ from this run's (another "
                             "--freeze or model?); start over with --overwrite")
    with torch.no_grad():
        for name, param in encoder_params:
            param.copy_(state.encoder[name])
    try:
        _unwrapped(head).load_state_dict(state.head)
        optimizer.load_state_dict(state.optimizer)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise BertscopeError(f"the checkpoint does not fit this run's head or optimizer "
                             f"({str(exc).splitlines()[0]}); start over with --overwrite") from None
    scheduler.load_state_dict(state.scheduler)
    if state.scaler:
        scaler.load_state_dict(state.scaler)
    _set_rng_state(state.rng, head)
    return state.loop


class Checkpointer:
    """One run's checkpoint folder, the run's identity, and the interrupt handling while it trains.

    ``folder`` holds at most one checkpoint (``last/``), replaced whole at every save."""

    def __init__(self, folder: str | os.PathLike[str], run_identity: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.identity = dict(run_identity)
        self.pending: int | None = None  # a signal received while training, acted on at the next step boundary

    @property
    def path(self) -> Path:
        return self.folder / _NAME

    def meta(self) -> dict[str, Any] | None:
        """The checkpoint's ``meta.json`` (position, identity), or None when there is none. Leftovers of a save that
        crashed are cleared first (a checkpoint set aside for one that never arrived is put back)."""
        if not self.folder.is_dir():
            return None
        publish.remove_stale(self.folder, _NAME)
        try:
            meta: dict[str, Any] = json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointKept(f"cannot read checkpoint {self.path} ({_one_line(exc)}); it is kept: fix the cause "
                                 "and --resume, or start over with --overwrite") from None
        if not isinstance(meta, dict):
            raise CheckpointKept(f"cannot read checkpoint {self.path} (its meta.json is not an object); it is kept: "
                                 "start over with --overwrite")
        return meta

    def changed(self) -> list[str]:
        """Result-affecting options whose value differs from the checkpoint's (empty when none, or no checkpoint)."""
        meta = self.meta()
        if meta is None:
            return []
        saved = meta.get("identity") or {}
        return [k for k in sorted(set(saved) | set(self.identity)) if saved.get(k) != self.identity.get(k)]

    def refuse_changes(self) -> None:
        """Raise a one-line :class:`BertscopeError` naming the first result-affecting option that changed."""
        changed = self.changed()
        if not changed:
            return
        name = changed[0]
        saved = (self.meta() or {}).get("identity", {}).get(name)
        raise BertscopeError(f"--resume: --{name.replace('_', '-')} is {self.identity.get(name)!r} but the "
                             f"checkpoint in {self.folder} was written with {saved!r}; resume with the same options, "
                             "or start over with --overwrite")

    def describe(self) -> str:
        """Where the checkpoint stands, in words ("epoch 2 of the run, step 7", "after epoch 1")."""
        meta = self.meta() or {}
        if meta.get("batch"):
            return f"epoch {meta.get('epoch')}, batch {meta.get('batch')} (step {meta.get('steps')})"
        return f"after epoch {meta.get('epochs_done')} (step {meta.get('steps')})"

    def save(self, state: TrainingState) -> None:
        """Write ``state`` as the checkpoint, replacing the previous one whole; a write that fails (a full disk)
        leaves the previous one and stops the run in one line (:class:`CheckpointKept`)."""
        loop = state.loop
        meta = {"format": CHECKPOINT_FORMAT, "epoch": loop.epoch, "batch": loop.batch, "steps": loop.steps,
                "epochs_done": loop.epochs_done, "identity": self.identity}
        payload = {"loop": asdict(loop), "encoder": state.encoder, "head": state.head, "optimizer": state.optimizer,
                   "scheduler": state.scheduler, "scaler": state.scaler, "rng": state.rng}
        try:
            with publish.building(self.path) as tmp:
                with open(tmp / "state.pt", "wb") as handle:
                    torch.save(payload, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                write_json_atomic(tmp / "meta.json", {**meta, "sha256": {"state.pt": file_sha256(tmp / "state.pt")}})
        except OSError as exc:
            kept = "the previous checkpoint is kept" if self.path.is_dir() else "no checkpoint was written"
            raise CheckpointKept(f"cannot write checkpoint {self.path} ({_one_line(exc)}); {kept}") from None

    def load(self) -> TrainingState | None:
        """The checkpoint's full state (tensors on the CPU), or None when there is none.

        ``state.pt`` is checked against the checksum in ``meta.json`` first (checkpoints written before checksums
        are read unchecked): a mismatch proves it damaged, and it is removed (:class:`DamagedCheckpoint`). Any other
        failure to read it raises :class:`CheckpointKept` and leaves it in place."""
        meta = self.meta()
        if meta is None:
            return None
        state_file = self.path / "state.pt"
        try:
            expected = (meta.get("sha256") or {}).get("state.pt")
            if expected is not None and file_sha256(state_file) != expected:
                self.remove()
                raise DamagedCheckpoint(f"checkpoint {self.path} is damaged (state.pt does not match its checksum) "
                                        "and was removed; run again to start over")
            payload = torch.load(state_file, map_location="cpu", weights_only=True)
            loop = LoopState(**payload["loop"])
            return TrainingState(loop=loop, **{k: payload[k] for k in ("encoder", "head", "optimizer", "scheduler",
                                                                        "scaler", "rng")})
        except FileNotFoundError:
            return None
        except BertscopeError:
            raise
        except Exception as exc:  # too little memory, an I/O error, a format torch cannot read: not proof of damage
            raise CheckpointKept(f"cannot load checkpoint {self.path} ({_one_line(exc)}); it is kept: fix the cause "
                                 "and --resume, or start over with --overwrite") from None

    def remove(self) -> None:
        """Delete the checkpoint folder (the run is complete)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    # ---- interrupts

    @contextlib.contextmanager
    def deferring_interrupts(self) -> Iterator[Checkpointer]:
        """While the block runs, Ctrl-C (SIGINT) and SIGTERM only set :attr:`pending`; the training loop writes a
        checkpoint at its next step boundary and calls :meth:`stop_if_requested`. A second signal stops at once.
        A signal the process ignores (a sweep worker's SIGINT) stays ignored; off the main thread nothing changes."""
        self.pending = None
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    previous[signum] = signal.signal(signum, self._defer)
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        self.stop_if_requested()  # a signal that came after the last boundary

    def _defer(self, signum: int, frame: FrameType | None) -> None:
        if self.pending is not None:
            self._stop(signum)
        self.pending = int(signum)

    @property
    def stop_requested(self) -> bool:
        return self.pending is not None

    def stop_if_requested(self) -> None:
        """Raise what the pending signal means (``Terminated`` for SIGTERM, ``KeyboardInterrupt`` for Ctrl-C)."""
        signum = self.pending
        if signum is not None:
            self.pending = None
            self._stop(signum)

    @staticmethod
    def _stop(signum: int) -> None:
        if signum == signal.SIGTERM:
            raise Terminated(f"received {signal.Signals(signum).name}")
        raise KeyboardInterrupt
