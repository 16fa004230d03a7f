"""The fine-tuning loop, top to bottom: tokenise once, group by length, AdamW + linear warmup/decay, clip, evaluate.

How one step works::

    vectors = represent(batch)          # [B, n_layers, H]: the selected token vector of each layer read
    logits  = head(vectors)             # pooler? -> fixed dimension mask -> dropout -> linear / mlp2
    loss    = cross-entropy (or MSE for STS-B); backward; clip; AdamW step; scheduler step

Contracts other modules rely on (the cached fast path for frozen encoders in ``studies`` feeds pre-computed token
vectors through this *same* loop and must get the same numbers):

* The representation step is swappable: :func:`train_loop` takes any ``represent`` object with ``__call__(batch) ->
  [B, n_layers, H]`` and ``train(mode)``; :class:`EncoderRepresentation` is the live one. A cached one can index a
  tensor of pre-computed vectors with ``batch.example_index`` (positions in the split, carried by every batch).
* When the encoder is frozen entirely it runs in eval mode (no dropout) under ``torch.no_grad``: a fixed feature
  extractor, so cached vectors are identical to live ones.
* Token selection is pure (:func:`bertscope.finetune.selection.select_tokens`).
* Batch order depends only on ``seed``, the epoch and the example lengths (:func:`length_grouped_batches`, its own
  ``torch.Generator``); the head is initialised from its own generator and its dropout draws from its own generator
  (:class:`bertscope.finetune.head.SeededDropout`), so nothing in the head's path reads the global RNG.

Speed: examples are tokenised once; batches are padded to their longest member and grouped by length; the encoder
runs only up to the highest layer read (``runners.truncated``); and when the head reads one known position
(``cls``/``index:K``), the top layer read is computed at that position only (``runners.layer_at_positions``: keys
and values from every token, queries, attention output and feed-forward for one), which is exact and saves most of
one layer. ``fast_top=False`` turns that off. AdamW uses the fused kernel, as the Trainer does.

Mixed precision (``dtype`` bfloat16/float16) uses ``torch.autocast`` around the forward pass with float32 master
weights (float16 adds a gradient scaler). Data-parallel (``torchrun`` / ``accelerate launch``, see
:mod:`bertscope.finetune.distributed`): the encoder and head are wrapped in DDP by the pipeline; each process takes its part of
every global batch of ``batch_size x world`` examples of the same seeded order (each example once per epoch), and
evaluation runs the unwrapped modules on each process's share of the dev batches, then gathers the logits.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from bertscope.core.device import resolve_dtype
from bertscope.core.errors import BertscopeError
from bertscope.data import glue
from bertscope.finetune import distributed as dp
from bertscope.finetune.checkpoint import Checkpointer, LoopState, capture, restore
from bertscope.finetune.freezing import trainable_parameters
from bertscope.finetune.selection import select_layers, token_positions
from bertscope.models import families, runners
from bertscope.models.packing import pad_rows

__all__ = [
    "Batch",
    "EncodedSplit",
    "EncoderRepresentation",
    "EpochRecord",
    "Representation",
    "TrainCallback",
    "TrainHistory",
    "TrainOptions",
    "collate",
    "decay_exempt",
    "distributed_world_size",
    "encode_split",
    "evaluate",
    "evaluate_logits",
    "length_grouped_batches",
    "log_mode",
    "param_groups",
    "predictions_from_logits",
    "train_loop",
]


# ------------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class EncodedSplit:
    """A tokenised split: token ids per example (unpadded), special-token masks, labels and lengths."""

    task: str
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    special_masks: list[list[int]]
    labels: list[int | float | None]
    idx: list[int]
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def encode_split(tokenizer: Any, split: glue.GlueSplit, max_length: int) -> EncodedSplit:
    """Tokenise every example once (truncating pairs longest-first to ``max_length``), without padding."""
    columns = list(zip(*(ex.texts for ex in split.examples)))
    encoded = tokenizer(*columns[:2], truncation=True, max_length=max_length, padding=False,
                        return_special_tokens_mask=True, return_token_type_ids=True)
    types = encoded.get("token_type_ids")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return EncodedSplit(task=split.task, input_ids=encoded["input_ids"], token_type_ids=types,
                        special_masks=encoded["special_tokens_mask"], labels=split.labels,
                        idx=[ex.idx for ex in split.examples], pad_id=int(pad))


@dataclass
class Batch:
    """Padded tensors of a few examples; ``example_index`` are their positions in the split."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    special_mask: torch.Tensor
    labels: torch.Tensor | None
    example_index: torch.Tensor

    def __len__(self) -> int:
        return int(self.example_index.shape[0])


def collate(data: EncodedSplit, indices: Sequence[int], *, regression: bool,
            device: torch.device | str = "cpu") -> Batch:
    """Pad ``indices``' examples to the longest of them (dynamic padding)."""
    ids, mask = pad_rows([data.input_ids[i] for i in indices], data.pad_id)
    special, _ = pad_rows([data.special_masks[i] for i in indices], 0)
    types = None if data.token_type_ids is None else pad_rows([data.token_type_ids[i] for i in indices], 0)[0]
    labels = None
    if all(data.labels[i] is not None for i in indices):
        labels = torch.tensor([data.labels[i] for i in indices], dtype=torch.float32 if regression else torch.long)
    to = torch.device(device)
    return Batch(input_ids=ids.to(to), attention_mask=mask.to(to), token_type_ids=None if types is None else types.to(to),
                 special_mask=special.to(to), labels=None if labels is None else labels.to(to),
                 example_index=torch.tensor(list(indices), dtype=torch.long))


def length_grouped_batches(lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int = 0,
                           shuffle: bool = True, group_by_length: bool = True,
                           group_batches: int = 50) -> list[list[int]]:
    """Batches of example positions; the order depends only on ``seed``, ``epoch`` and ``lengths``.

    Training (``shuffle``): a seeded permutation is cut into mega-batches of ``group_batches`` batches, each sorted
    by length (longest first) and cut into batches, whose order is then shuffled again, so batches hold similar
    lengths (little padding) yet stay random. Evaluation (no shuffle): sorted by length, longest first.
    """
    n = len(lengths)
    if not shuffle:
        order = sorted(range(n), key=lambda i: -lengths[i]) if group_by_length else list(range(n))
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    order = torch.randperm(n, generator=generator).tolist()
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    mega = batch_size * max(1, group_batches)
    batches: list[list[int]] = []
    for start in range(0, n, mega):
        chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


# ------------------------------------------------------------------------------------------ representation


class Representation(Protocol):
    """The swappable representation step: a batch -> selected token vectors ``[B, n_layers, H]``."""

    def __call__(self, batch: Any) -> torch.Tensor: ...  # a batch of the collate function it is paired with

    def train(self, mode: bool = True) -> Any: ...


class EncoderRepresentation:
    """Run the encoder up to the highest layer read (layers above are not computed) and select token vectors."""

    def __init__(self, model: nn.Module, layers: Sequence[int], token: tuple[str, int | None], *,
                 include_special: bool = False, frozen: bool = False, forward: nn.Module | None = None,
                 fast_top: bool = True) -> None:
        self.model = model
        self.forward_module = forward if forward is not None else model  # a DDP wrapper under accelerate
        self.layers = tuple(layers)
        self.method, self.index = token
        self.include_special = include_special
        self.frozen = frozen
        self.depth = max(self.layers)
        self.token_types = families.uses_token_type_ids(model)
        # cls / index:K read the top layer at one known position: compute that layer there only (same numbers).
        self.fast_top = (fast_top and self.forward_module is model and self.depth >= 1
                         and self.method in ("cls", "index"))

    def train(self, mode: bool = True) -> EncoderRepresentation:
        self.forward_module.train(mode and not self.frozen)  # a frozen encoder is a fixed feature extractor
        return self

    def _states(self, kwargs: dict[str, Any], depth: int, forward: nn.Module | None = None) -> tuple[torch.Tensor, ...]:
        """Hidden states 0..depth; depth 0 = the embedding output alone."""
        if depth == 0:
            return (runners.embed(self.model, kwargs["input_ids"], kwargs["attention_mask"],
                                   kwargs.get("token_type_ids")),)
        with runners.truncated(self.model, depth):
            out = (forward or self.model)(**kwargs, output_hidden_states=True, return_dict=True)
        return tuple(out.hidden_states)

    def __call__(self, batch: Batch) -> torch.Tensor:
        kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if self.token_types and batch.token_type_ids is not None:
            kwargs["token_type_ids"] = batch.token_type_ids
        grad = contextlib.nullcontext() if not self.frozen and torch.is_grad_enabled() else torch.no_grad()
        if self.fast_top:
            with grad:
                states = self._states(kwargs, self.depth - 1)
                positions = token_positions(batch.attention_mask, self.method, index=self.index)
                top = runners.layer_at_positions(self.model, self.depth - 1, states[-1], batch.attention_mask,
                                                  positions)  # type: ignore[arg-type]
            if top is not None:
                rows = torch.arange(len(batch), device=top.device)
                return torch.stack([top if layer == self.depth else states[layer][rows, positions]
                                    for layer in self.layers], dim=1)
            self.fast_top = False  # this family has no position-wise layer: run whole layers from now on
        with grad:
            states = self._states(kwargs, self.depth, self.forward_module)
        return select_layers(states, self.layers, batch.attention_mask, batch.special_mask, self.method,
                             index=self.index, include_special=self.include_special)


# ------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    learning_rate: float
    train_seconds: float
    train_examples: int
    eval: dict[str, dict[str, float]]
    eval_seconds: float


@dataclass(frozen=True)
class TrainHistory:
    epochs: tuple[EpochRecord, ...]
    train_seconds: float
    eval_seconds: float
    train_examples: int
    steps: int
    predictions: dict[str, list[float]] = field(default_factory=dict)
    logits: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # of the last evaluation
    resumed_from_epoch: int = 0  # epochs the checkpoint it continued from had finished (0: a fresh run)
    resumed_from_step: int = 0  # optimizer steps that checkpoint had taken

    @property
    def train_examples_per_second(self) -> float:
        return self.train_examples / self.train_seconds if self.train_seconds > 0 else float("nan")


class TrainCallback(Protocol):
    """What :func:`train_loop` reports while it runs (an experiment tracker, :mod:`bertscope.finetune.tracking`).

    ``on_step`` every ``TrainOptions.log_every`` optimizer steps with the mean loss of those steps (the only device
    sync it adds) and the learning rate after the step; ``on_epoch`` after each epoch's evaluation with the epoch's
    record and the number of steps so far."""

    def on_step(self, step: int, loss: float, learning_rate: float) -> None: ...

    def on_epoch(self, record: EpochRecord, step: int) -> None: ...


# ---------------------------------------------------------------------------------- progress and divergence


def log_mode(log: str, stream: Any = None) -> str:
    """What ``--log`` means here: ``auto`` is tqdm bars when ``stream`` (default stdout) is a terminal and plain
    timestamped lines otherwise (a batch job's log file gets no ``\\r``-joined bars); ``bar``, ``plain`` and ``off``
    (print nothing, as each run inside a study) are taken as they are."""
    if log != "auto":
        return log
    isatty = getattr(sys.stdout if stream is None else stream, "isatty", None)
    try:
        return "bar" if callable(isatty) and isatty() else "plain"
    except (OSError, ValueError):  # a closed or detached stream is no terminal
        return "plain"


def _clock(seconds: float) -> str:
    whole = max(0, round(seconds)) if math.isfinite(seconds) else 0
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class _ProgressLog:
    """What :func:`train_loop` prints while it trains, on the main process only.

    ``bar``: a tqdm bar per epoch (loss, examples/s) and the epoch lines through ``tqdm.write``; ``plain``: a
    timestamped line at most every ``log_seconds`` (step, loss, examples/s, ETA of the training left) and a
    timestamped epoch line, on stdout; ``off``: nothing. ``progress=False`` (``--no-progress``) drops the bars and
    step lines but keeps the epoch lines. Step lines are shown where the loop reads the loss anyway (every
    ``log_every`` steps; also after the first step, a sign of life), so they add no device sync."""

    def __init__(self, options: TrainOptions, rank: int, total_steps: int) -> None:
        self.mode = log_mode(options.log)
        self.epochs = options.epochs
        self.lines = rank == 0 and self.mode != "off"
        self.bars = self.lines and options.progress and self.mode == "bar"
        self.plain_steps = self.lines and options.progress and self.mode == "plain"
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


class _DivergenceWatch:
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
        where = f"loss is {value_name} at epoch {self.epoch}, step {step}"
        if self.stop:
            raise BertscopeError(f"training diverged: {where} (lower --lr, or --on-divergence continue)")
        self.warned = True
        if _rank() == 0:
            print(f"bertscope: warning: training diverged: {where}; continuing (--on-divergence continue)",
                  file=sys.stderr, flush=True)


def _distributed() -> bool:
    return dp.is_active()


def _rank() -> int:
    return dp.rank()


def _agreed_minimum(value: float, device: torch.device) -> float:
    """The minimum of ``value`` over all processes of a ``torch.distributed`` run (``value`` itself otherwise)."""
    if not _distributed():
        return value
    where = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    agreed = torch.tensor([value], dtype=torch.float64, device=where)
    torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN)
    return float(agreed)


# ------------------------------------------------------------------------------------------------ the loop


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    if regression:
        return nn.functional.mse_loss(logits.float().squeeze(-1), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)


@torch.no_grad()
def evaluate_logits(represent: Representation, head: nn.Module, data: EncodedSplit, *, batch_size: int,
                    device: torch.device, dtype: torch.dtype = torch.float32, accelerator: Any = None,
                    collate_fn: Callable[..., Any] | None = None) -> torch.Tensor:
    """The head's float32 logits ``[N, num_labels]`` for every example of ``data``, in split order, on the CPU.

    Data-parallel (a ``torch.distributed`` group is running; ``accelerator`` is not needed and ignored), each process
    scores every n-th batch of the same length-sorted batches with the *unwrapped* modules (no collective in the
    forward, so a process with no batch cannot stall the others), then one gather collects every row: the logits
    are those a single process computes with the same weights and batch size."""
    regression = glue.get_task(data.task).is_regression
    represent.train(False)
    head.eval()
    head = dp.unwrap(head)
    forward = getattr(represent, "forward_module", None)
    if forward is not None and dp.unwrap(forward) is not forward:  # evaluate the encoder itself, not its DDP wrapper
        represent = copy.copy(represent)
        represent.forward_module = dp.unwrap(forward)  # type: ignore[attr-defined]
    batches = length_grouped_batches(data.lengths, batch_size, seed=0, shuffle=False)
    batches = batches[dp.rank()::dp.world_size()] if dp.is_active() else batches
    positions, values = [], []
    for indices in batches:
        batch = (collate_fn or collate)(data, indices, regression=regression, device=device)
        with _autocast(device, dtype):
            logits = head(represent(batch)).float()
        positions.append(batch.example_index.cpu())
        values.append(logits.cpu())
    width = int(values[0].shape[-1]) if values else glue.get_task(data.task).num_labels
    pos = dp.gather_rows(torch.cat(positions) if positions else torch.empty(0, dtype=torch.long))
    val = dp.gather_rows(torch.cat(values) if values else torch.empty(0, width))
    out = torch.full((len(data), width), float("nan"), dtype=torch.float32)
    out[pos.long()] = val
    return out


def predictions_from_logits(logits: torch.Tensor, regression: bool) -> list[float]:
    """Class ids (argmax), or the single output for regression, as floats: what :func:`evaluate` returns."""
    pred = logits.squeeze(-1) if regression else logits.argmax(dim=-1)
    return pred.double().tolist()


def evaluate(represent: Representation, head: nn.Module, data: EncodedSplit, *, batch_size: int,
             device: torch.device, dtype: torch.dtype = torch.float32, accelerator: Any = None,
             collate_fn: Callable[..., Any] | None = None) -> list[float]:
    """Predictions for every example of ``data`` in split order: class ids, or real values for regression."""
    logits = evaluate_logits(represent, head, data, batch_size=batch_size, device=device, dtype=dtype,
                             accelerator=accelerator, collate_fn=collate_fn)
    return predictions_from_logits(logits, glue.get_task(data.task).is_regression)


def _score(task: str, predictions: list[float], labels: Sequence[Any]) -> dict[str, float]:
    info = glue.get_task(task)
    preds = predictions if info.is_regression else [int(p) for p in predictions]
    return glue.compute_metrics(info, preds, list(labels))


@dataclass(frozen=True)
class TrainOptions:
    """Everything :func:`train_loop` needs to know about *how* to train, in one frozen object.

    Built from a fine-tuning config by :meth:`from_config` (the pipeline resolves ``head_lr`` first: see
    :func:`bertscope.finetune.pipeline.head_learning_rate`), so one place maps options to the loop.
    """

    epochs: int
    batch_size: int
    lr: float
    head_lr: float
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    dtype: str = "float32"
    group_by_length: bool = True
    eval_batch_size: int | None = None
    progress: bool = True
    log_every: int = 10
    log: str = "auto"  # auto | bar | plain | off (see log_mode)
    log_seconds: float = 30.0  # plain logs: at most one step line per this many seconds
    on_divergence: str = "stop"  # stop | continue: what a NaN or infinite training loss does
    checkpoint_every: int = 0  # with a Checkpointer: also checkpoint every this many optimizer steps (0: epochs only)

    @classmethod
    def from_config(cls, config: Any, *, head_lr: float, progress: bool | None = None) -> TrainOptions:
        """The options of a :class:`~bertscope.finetune.config.FinetuneConfig` (or any config with the same fields)."""
        return cls(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, head_lr=head_lr,
                   weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio, grad_clip=config.grad_clip,
                   seed=config.seed, dtype=config.dtype, group_by_length=config.group_by_length,
                   eval_batch_size=config.eval_batch_size,
                   progress=config.progress if progress is None else progress,
                   log_every=getattr(config, "log_every", cls.log_every), log=getattr(config, "log", cls.log),
                   log_seconds=getattr(config, "log_seconds", cls.log_seconds),
                   on_divergence=getattr(config, "on_divergence", cls.on_divergence),
                   checkpoint_every=getattr(config, "checkpoint_every", cls.checkpoint_every))


def decay_exempt(name: str) -> bool:
    """Parameters that get no weight decay (as in BERT): biases and normalisation weights."""
    return name.endswith("bias") or "norm" in name.lower()


def param_groups(encoder_params: Sequence[tuple[str, nn.Parameter]], head: nn.Module,
                 options: TrainOptions) -> list[dict[str, Any]]:
    """AdamW groups: encoder and head, each split into decayed and exempt parameters; empty groups dropped."""
    head_named = [(n, p) for n, p in head.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in encoder_params if not decay_exempt(n)], "weight_decay": options.weight_decay,
         "lr": options.lr},
        {"params": [p for n, p in encoder_params if decay_exempt(n)], "weight_decay": 0.0, "lr": options.lr},
        {"params": [p for n, p in head_named if not decay_exempt(n)], "weight_decay": options.weight_decay,
         "lr": options.head_lr},
        {"params": [p for n, p in head_named if decay_exempt(n)], "weight_decay": 0.0, "lr": options.head_lr},
    ]
    return [g for g in groups if g["params"]]


def train_loop(
    represent: Representation,
    head: nn.Module,
    train_data: Any,
    eval_data: Mapping[str, Any],
    options: TrainOptions,
    *,
    encoder_params: Sequence[tuple[str, nn.Parameter]] = (),
    device: torch.device,
    accelerator: Any = None,
    collate_fn: Callable[..., Any] | None = None,
    callback: TrainCallback | None = None,
    checkpoints: Checkpointer | None = None,
) -> TrainHistory:
    """Fine-tune ``head`` (and the trainable, named ``encoder_params``) on ``train_data``; evaluate every epoch.

    ``train_data`` / ``eval_data`` are :class:`EncodedSplit` s (or what ``collate_fn`` turns into batches).
    ``callback`` (optional) is told the loss every ``options.log_every`` steps and every epoch's record.
    A NaN or infinite training loss raises :class:`BertscopeError` naming epoch and step (checked every
    ``log_every`` steps and at each epoch's end), unless ``options.on_divergence`` is ``continue``.
    ``checkpoints`` (optional): continue from its checkpoint when it has one, write one at the end of every epoch
    (and every ``options.checkpoint_every`` steps), and, when a stop was requested while training
    (:meth:`Checkpointer.deferring_interrupts`), write one at the next step boundary and stop.
    """
    from transformers import get_linear_schedule_with_warmup

    regression = glue.get_task(train_data.task).is_regression
    dtype = resolve_dtype(options.dtype)
    eval_batch_size = options.eval_batch_size or options.batch_size
    collate_batch = collate_fn or collate

    # Optimizer: AdamW (fused kernel, as the Trainer's default) over trainable parameters only.
    groups = param_groups(encoder_params, head, options)
    fused = all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    optimizer = torch.optim.AdamW(groups, lr=options.lr, betas=(0.9, 0.999), eps=1e-8, fused=fused or None)

    # Schedule: linear warmup over warmup_ratio of all steps, then linear decay to zero.
    # Data-parallel: global batches of batch_size x world examples, each cut into one part per process (each
    # example once per epoch, every process the same number of steps; bertscope.finetune.distributed.shard_batches).
    rank, world = (dp.rank(), dp.world_size()) if dp.is_active() else (0, 1)
    steps_per_epoch = len(dp.shard_batches(length_grouped_batches(train_data.lengths, options.batch_size * world,
                                                                  seed=options.seed), rank, world))
    total_steps = max(1, steps_per_epoch * options.epochs)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(options.warmup_ratio * total_steps),
                                                total_steps)
    # float16 on CUDA scales the loss; every other case backpropagates the loss as it is (scale 1, disabled scaler).
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")
    backward = accelerator.backward if accelerator is not None else torch.Tensor.backward
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
                        epoch_seconds: float = 0.0) -> None:
        """Checkpoint the run with ``done`` batches of ``epoch`` trained (the main process writes it)."""
        if checkpoints is None or rank != 0:
            return
        loop = LoopState(epoch=epoch, batch=done, steps=steps, seen=seen, train_seconds=train_seconds,
                         eval_seconds=eval_seconds, loss_sum=loss_sum, loss_count=loss_count, epoch_seen=epoch_seen,
                         epoch_seconds=epoch_seconds, interval_loss=interval_loss, interval_steps=interval_steps,
                         records=[asdict(r) for r in records], predictions=predictions,
                         logits=final_logits)
        checkpoints.save(capture(loop, head=head, encoder_params=encoder_params, optimizer=optimizer,
                                 scheduler=scheduler, scaler=scaler))

    log = _ProgressLog(options, rank, total_steps)
    watch = _DivergenceWatch(options.on_divergence != "continue", device)
    for epoch in range(at.epoch, options.epochs + 1):
        # ---- train one epoch (a resumed one from the batch it stopped at)
        batches = length_grouped_batches(train_data.lengths, options.batch_size * world, seed=options.seed,
                                         epoch=epoch, group_by_length=options.group_by_length)
        epoch_examples = sum(map(len, batches))  # over all processes
        batches = dp.shard_batches(batches, rank, world)
        represent.train(True)
        head.train()
        done = at.batch if epoch == at.epoch else 0
        loss_sum: Any = _on(at.loss_sum, device) if done else 0.0
        loss_count, epoch_seen = (at.loss_count, at.epoch_seen) if done else (0, 0)
        bar = log.bar(batches[done:], epoch)
        watch.start_epoch(epoch, len(batches), steps - done, done)
        start = time.perf_counter() - (at.epoch_seconds if done else 0.0)
        for indices in bar:
            batch = collate_batch(train_data, indices, regression=regression, device=device)
            with _autocast(device, dtype):
                logits = head(represent(batch))
            if batch.labels is None:
                raise ValueError(f"{train_data.task}: a training example has no label")
            loss = _loss(logits, batch.labels, regression)
            optimizer.zero_grad(set_to_none=True)
            backward(scaler.scale(loss))
            scaler.unscale_(optimizer)
            if options.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params_to_clip, options.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            steps += 1
            watch.record(loss)
            loss_sum = loss_sum + loss.detach().float() * len(batch)  # a tensor: no device sync per step
            loss_count += len(batch)
            epoch_seen += len(batch)
            checkpoint = steps % max(1, options.log_every) == 0  # one device sync per log_every steps
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
            due = options.checkpoint_every > 0 and steps % options.checkpoint_every == 0 and done < len(batches)
            if checkpoints is not None and (due or checkpoints.stop_requested):
                if due:
                    watch.check()  # every process at the same steps; a diverged state is never saved
                save_checkpoint(epoch, done, loss_sum, loss_count, epoch_seen, time.perf_counter() - start)
                checkpoints.stop_if_requested()
        bar.close()
        watch.check(epoch_end=True)  # before the dev sets: a diverged run is not evaluated
        loss_sum = float(loss_sum)  # waits for the device, so the time below is the real one
        loss_sum, loss_count = dp.sum_across(loss_sum, loss_count)  # data-parallel: over every process
        epoch_train = time.perf_counter() - start
        train_seconds += epoch_train
        seen += epoch_examples

        # ---- evaluate on every dev split
        start = time.perf_counter()
        scores: dict[str, dict[str, float]] = {}
        for name, data in eval_data.items():
            final_logits[name] = evaluate_logits(represent, head, data, batch_size=eval_batch_size, device=device,
                                                 dtype=dtype, accelerator=accelerator, collate_fn=collate_fn)
            preds = predictions[name] = predictions_from_logits(final_logits[name], regression)
            scores[name] = _score(data.task, preds, data.labels)
        epoch_eval = time.perf_counter() - start
        eval_seconds += epoch_eval
        records.append(EpochRecord(epoch=epoch, train_loss=loss_sum / max(loss_count, 1),
                                   learning_rate=float(scheduler.get_last_lr()[0]), train_seconds=epoch_train,
                                   train_examples=epoch_examples, eval=scores, eval_seconds=epoch_eval))
        if callback is not None:
            callback.on_epoch(records[-1], steps)
        summary = "  ".join(f"{n}: " + ", ".join(f"{k}={v:.4f}" for k, v in s.items()) for n, s in scores.items())
        log.line(f"epoch {epoch}/{options.epochs}: loss {records[-1].train_loss:.4f}  "
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
    """Processes of the data-parallel run (``torchrun`` / ``accelerate launch``; 1 when run directly)."""
    return dp.world_size()
