"""The process group of a data-parallel run (``torchrun`` / ``accelerate launch``): start it, ask it, end it.

A launcher starts ``WORLD_SIZE`` copies of ``bertscope finetune`` and sets ``RANK`` / ``LOCAL_RANK`` /
``MASTER_ADDR`` / ``MASTER_PORT``; it does not create the process group. Without one, every copy would run the
whole job on its own (what the first version did on CPU hosts, where accelerate leaves it uninitialised). So
:func:`setup` creates it when nobody did: NCCL with device ``cuda:LOCAL_RANK`` on GPUs, gloo on the CPU. A group
that someone else created (accelerate, a user's script) is used as it is and left to its owner; :func:`destroy`
ends only the one bertscope made.

Why plain :class:`torch.nn.parallel.DistributedDataParallel` rather than accelerate: the loop does its own autocast,
gradient scaling and clipping, so accelerate's only job would be the DDP wrapper and the process group, and its
group set-up depends on launcher and environment variables (none on a CPU host under torchrun). One
``DistributedDataParallel`` call per module, on a group made here, is explicit and behaves the same under both
launchers.

The training split is cut into *global* batches of ``--batch-size x world`` examples (the same seeded, length-grouped
order a single process uses with that batch size), each cut into one contiguous part per process
(:func:`shard_batches`): every training example is seen exactly once per epoch and every process takes the same
number of steps, so DDP's all-reduces always pair up. Evaluation runs without collectives in the forward (the
unwrapped modules) and ends in one gather (:func:`gather_rows`), so it cannot deadlock whatever the number of dev
batches of each process (none included).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from bertscope.core.errors import BertscopeError

__all__ = [
    "any_failed",
    "barrier",
    "data_parallel",
    "destroy",
    "gather_rows",
    "is_active",
    "is_main",
    "launched",
    "launched_world_size",
    "main_writes",
    "raise_if_any_failed",
    "rank",
    "refuse_data_parallel",
    "setup",
    "shard_batches",
    "sum_across",
    "unwrap",
    "world_size",
]

T = TypeVar("T")

_OWNED = False  # whether bertscope created the process group (and so destroys it)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def launched_world_size() -> int:
    """Processes started by the launcher (``WORLD_SIZE``; 1 when run directly), whether or not the group exists."""
    return max(1, _env_int("WORLD_SIZE", 1))


def is_active() -> bool:
    """Whether a process group of more than one process is running."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Processes of the running group (the launcher's count before :func:`setup`; 1 when run directly)."""
    return torch.distributed.get_world_size() if is_active() else launched_world_size()


def rank() -> int:
    """This process's rank (the launcher's ``RANK`` before :func:`setup`; 0 when run directly)."""
    if is_active():
        return torch.distributed.get_rank()
    return _env_int("RANK", 0) if launched_world_size() > 1 else 0


def is_main() -> bool:
    """Rank 0: the one process that writes files and prints the table."""
    return rank() == 0


def refuse_data_parallel(command: str) -> None:
    """One line (exit 2) for a command that does not run data-parallel, when started by a launcher."""
    if launched_world_size() > 1:
        raise BertscopeError(f"{command} does not run data-parallel: run it without torchrun / accelerate launch "
                             "(bertscope sweep runs many fine-tuning runs in parallel)")


def setup(device: torch.device) -> torch.device:
    """Join (or create) the process group of a launched run and return the device this process trains on.

    Run directly, ``device`` is returned as it is. Launched: a CUDA ``device`` becomes ``cuda:LOCAL_RANK`` (NCCL),
    the CPU stays the CPU (gloo); other devices cannot run data-parallel (one line).
    """
    global _OWNED
    if launched_world_size() <= 1 and not is_active():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", _env_int("LOCAL_RANK", 0))
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise BertscopeError(f"--device {device.type} cannot run data-parallel; use --device cuda or --device cpu")
    dist = torch.distributed
    if not dist.is_available():
        raise BertscopeError("this torch build has no torch.distributed; run without torchrun")
    if not dist.is_initialized():
        for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise BertscopeError(f"WORLD_SIZE is set but {name} is not: start data-parallel runs with torchrun "
                                     "or accelerate launch")
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        _OWNED = True
    return device


def destroy() -> None:
    """End the process group if bertscope created it (a group made by someone else is theirs to end)."""
    global _OWNED
    if _OWNED and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _OWNED = False


@contextlib.contextmanager
def launched() -> Iterator[None]:
    """Around a command that may run data-parallel: the group :func:`setup` creates inside is destroyed at the end,
    also when the command fails."""
    try:
        yield
    finally:
        destroy()


def barrier() -> None:
    """Wait for every process (nothing when run alone)."""
    if is_active():
        torch.distributed.barrier()


def _comm_device() -> torch.device:
    """Where collectives' tensors must live: the current GPU for NCCL, the CPU for gloo."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_failed(failed: bool) -> bool:
    """Whether any process reports a failure (every process must call it at the same point; run alone: ``failed``)."""
    if not is_active():
        return failed
    flag = torch.tensor([int(failed)], dtype=torch.int64, device=_comm_device())
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def sum_across(total: float, count: int) -> tuple[float, int]:
    """A sum and a count added up over every process (an epoch's training loss of the whole run); run alone: as
    given. Every process must call it at the same point."""
    if not is_active():
        return total, count
    both = torch.tensor([total, float(count)], dtype=torch.float64, device=_comm_device())
    torch.distributed.all_reduce(both)
    return float(both[0]), round(float(both[1]))


def raise_if_any_failed(failure: BaseException | None, message: str,
                        error: type[BertscopeError] = BertscopeError) -> None:
    """Re-raise this process's ``failure``, or raise ``message`` as one line (an ``error``) where another process
    failed, so every process of the run ends with the same exit code. Every process must call it at the same point:
    only where all of them are known to arrive (not inside training, where a failed process would wait here while
    the others wait in a gradient all-reduce)."""
    if any_failed(failure is not None):
        if failure is not None:
            raise failure
        raise error(message)


def main_writes(write: Callable[[], T], message: str, *, together: bool = True,
                error: type[BertscopeError] = BertscopeError) -> T | None:
    """Run ``write`` on the main process only (rank 0 writes every file of a data-parallel run) and return what it
    returns there (None elsewhere). ``together``: every process calls this at the same point, so a failure of the
    write is told to all of them (:func:`raise_if_any_failed`, ``message`` / ``error`` on the others) and every
    process stops, instead of the others waiting for rank 0 in their next collective until the group's timeout.
    Without ``together`` (a point only some processes reach, e.g. a stop one of them was asked for) rank 0's
    failure is raised on rank 0 alone."""
    failure: BaseException | None = None
    value: T | None = None
    if is_main():
        try:
            value = write()
        except BaseException as exc:  # told to the others first, re-raised below
            failure = exc
    if together:
        raise_if_any_failed(failure, message, error)
    elif failure is not None:
        raise failure
    return value


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` concatenated along dim 0 in rank order, on the CPU; their lengths may differ (0
    included), the other dimensions and the dtype must agree. Run alone: ``tensor`` itself (on the CPU)."""
    if not is_active():
        return tensor.cpu()
    where = _comm_device()
    local = tensor.to(where).contiguous()
    count = torch.tensor([local.shape[0]], dtype=torch.int64, device=where)
    counts = [torch.zeros_like(count) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=where)
    padded[:local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]).cpu()


def shard_batches(batches: Sequence[Sequence[T]], rank: int, world: int) -> list[list[T]]:
    """This process's part of every global batch: each is cut into ``world`` contiguous parts whose sizes differ by
    at most one, so each example is taken by exactly one process and every process takes one part per batch.

    A global batch smaller than ``world`` (only the last, short batch can be) is first merged into the batch before
    it, so no process gets an empty part (DDP needs every process to step). Run alone: the batches as they are.
    Needs at least ``world`` examples in all (else one line).
    """
    if world <= 1:
        return [list(b) for b in batches]
    merged: list[list[T]] = []
    for batch in batches:
        if len(batch) < world and merged:
            merged[-1].extend(batch)
        else:
            merged.append(list(batch))
    if merged and len(merged[0]) < world:  # the first batch was the short one
        if len(merged) == 1:
            raise BertscopeError(f"{len(merged[0])} training examples cannot feed {world} processes; train on at "
                                 f"least {world} examples or start fewer processes")
        merged[1] = merged[0] + merged[1]
        merged.pop(0)
    out = []
    for batch in merged:
        share, extra = divmod(len(batch), world)
        start = rank * share + min(rank, extra)
        out.append(batch[start:start + share + (1 if rank < extra else 0)])
    return out


def data_parallel(module: nn.Module, device: torch.device, *, static_graph: bool = False) -> Any:
    """``module`` wrapped in DDP: gradients are averaged over the processes at every backward pass, and rank 0's
    weights and buffers are broadcast first (every process starts from the same weights, whatever each loaded).

    ``static_graph``: the same parameters take part in every step (true of the encoder here); DDP then learns on
    the first step which ones never get a gradient (layers above the highest one read, a pooler) instead of
    failing on them or searching the graph at every step (``find_unused_parameters``).

    Typed ``Any``: the wrapper stands where the module's own type is expected (``PreparedRun.head``); code that needs
    the module itself calls :func:`unwrap`."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, static_graph=static_graph)


def unwrap(module: Any) -> Any:
    """The module inside a DDP wrapper (the module itself otherwise)."""
    from torch.nn.parallel import DistributedDataParallel

    return module.module if isinstance(module, DistributedDataParallel) else module
