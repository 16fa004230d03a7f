"""The one fine-tuning pipeline: prepare a run, train it, turn it into a result.

Every command that fine-tunes goes through here -- ``finetune``, every run of the ``dims`` / ``layers`` / ``tokens``
studies (live or on cached features) and every stage (and retrained probe) of ``cross`` -- so a change of the
fine-tuning set-up is made once::

    run = prepare(config)              # data, tokenisation, model, selection, freezing, head, representation
    history = run.train()              # bertscope.finetune.train.train_loop, the only call of it in the package
    result = run.result(history)       # an immutable FinetuneResult

:func:`prepare` loads what it is not given: a study passes the model, data and cached feature sets it shares across
runs (:class:`Shared`), ``cross`` passes the encoder as left by the previous stage. The order of the steps that touch
the global RNG is fixed (seed, load the model, build the head, train: the encoder's dropout draws from the global
RNG while training). A run whose pieces are handed in gives the numbers of one that loads them, with one exception
kept from bertscope 0.1.0 so that no result changes: loading a checkpoint that lacks some weights (e.g. a masked-LM
checkpoint without a pooler) initialises them from the global RNG, and a handed-in model skips those draws, so the
dropout stream of live fine-tuning differs (cached-feature runs have no encoder dropout and are unaffected).

Choices made once for every caller (where the three earlier copies disagreed):

* ``head_lr`` default: ``--lr``, or 1e-3 when the encoder is entirely frozen (:func:`head_learning_rate`);
* ``selection.layers_computed``: the highest hidden layer the head reads (what the run needs; a feature cache
  computes every layer once for all runs, recorded under ``features``);
* ``selection.top_layer_at_one_position`` is recorded by every run (False on cached features);
* training on cached features runs with one CPU thread (the head's matrices are tiny; more threads only add
  synchronisation).

Length: the one pipeline all fine-tuning callers share; its steps (data, selection, head, features) are small
functions beside the :class:`PreparedRun` that orders them, so the order of the RNG draws reads in one file.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bertscope._version import __version__
from bertscope.core.device import resolve_device, resolve_dtype
from bertscope.core.errors import BertscopeError
from bertscope.core.options import (
    HIDDEN_STATE,
    canonical_token,
    parse_dims,
    parse_hidden_states,
    parse_name_list,
    parse_token,
)
from bertscope.core.precision import precision_info
from bertscope.core.progress import Progress, progress_setting
from bertscope.core.results import run_environment
from bertscope.data import glue
from bertscope.finetune import distributed as dp
from bertscope.finetune.batching import EncodedSplit, encode_split
from bertscope.finetune.checkpoint import Checkpointer
from bertscope.finetune.config import FinetuneConfig
from bertscope.finetune.converged import fit_converged, resolve_fit
from bertscope.finetune.evaluation import evaluate
from bertscope.finetune.export import classifier_blocker
from bertscope.finetune.features import (
    DEFAULT_TOKENS,
    CachedRepresentation,
    FeatureCollate,
    FeatureSet,
    FeatureStore,
)
from bertscope.finetune.freezing import apply_freezing
from bertscope.finetune.head import HeadSpec, SelectingHead
from bertscope.finetune.learning import constant_loss, constant_score, did_not_learn
from bertscope.finetune.normalize import fit_standardizer
from bertscope.finetune.records import EpochRecord, TrainHistory
from bertscope.finetune.representation import EncoderRepresentation, Representation
from bertscope.finetune.result import FinetuneResult
from bertscope.finetune.tracking import (
    NullTracker,
    Tracker,
    default_run_name,
    epoch_metrics,
    make_tracker,
    parse_report_to,
)
from bertscope.finetune.train import distributed_world_size, train_loop
from bertscope.models import families, loading

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "PreparedRun",
    "Selection",
    "Shared",
    "TaskData",
    "build_head",
    "check_lengths",
    "compute_features",
    "data_key",
    "head_learning_rate",
    "is_cached",
    "load_task_data",
    "prepare",
    "resolve_eval_splits",
    "resolve_selection",
    "seed_everything",
]

_log = logging.getLogger("bertscope")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and all GPUs)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------ data


def resolve_eval_splits(task: glue.GlueTask, spec: str) -> tuple[str, ...]:
    """The dev split(s) of ``--eval-split``: auto (the task's own), or a split name / comma list."""
    if spec.strip().lower() == "auto":
        return task.eval_splits
    return tuple(dict.fromkeys(task.resolve_split(s) for s in parse_name_list(spec, option="--eval-split")))


@dataclass(frozen=True)
class TaskData:
    """A task's labelled train subset and dev split(s), raw and tokenised once."""

    task: glue.GlueTask
    train_split: glue.GlueSplit
    eval_sets: dict[str, glue.GlueSplit]
    train_data: EncodedSplit
    eval_data: dict[str, EncodedSplit]
    tokenize_seconds: float

    def provenance(self, max_length: int) -> dict[str, Any]:
        return {"train": self.train_split.provenance(),
                "eval": {k: v.provenance() for k, v in self.eval_sets.items()}, "max_length": max_length}

    def splits(self) -> list[tuple[str, EncodedSplit]]:
        """("train", train) then every dev split: the order feature sets are computed and stored in."""
        return [("train", self.train_data), *self.eval_data.items()]


def data_key(config: FinetuneConfig) -> tuple[Any, ...]:
    """The options that determine a run's :class:`TaskData` (two configs with the same key share it)."""
    return (config.encoder.model, config.data.task, config.data.data_dir, config.data.max_train, config.data.max_eval, config.encoder.seed,
            config.encoder.max_length, config.data.eval_split, config.data.bad_rows)


def load_task_data(config: FinetuneConfig, tokenizer: Any) -> TaskData:
    """Load the train subset and dev split(s) of ``config.data.task`` and tokenise them once (no padding)."""
    task = glue.get_task(config.data.task or "")
    eval_splits = resolve_eval_splits(task, config.data.eval_split)
    train_split = glue.load_split(task, "train", config.data.data_dir, config.data.max_train, config.encoder.seed,
                                  bad_rows=config.data.bad_rows)
    eval_sets = {s: glue.load_split(task, s, config.data.data_dir, config.data.max_eval, config.encoder.seed, bad_rows=config.data.bad_rows)
                 for s in eval_splits}
    for split in (train_split, *eval_sets.values()):
        if not split.is_labelled:
            raise BertscopeError(f"GLUE {task.name} {split.split} has no labels (test splits cannot be trained on "
                                 "or scored); use train and a validation split")
    start = time.perf_counter()
    train_data = encode_split(tokenizer, train_split, config.encoder.max_length)
    eval_data = {name: encode_split(tokenizer, split, config.encoder.max_length) for name, split in eval_sets.items()}
    return TaskData(task, train_split, eval_sets, train_data, eval_data, time.perf_counter() - start)


# ------------------------------------------------------------------------------------------- selection + head


@dataclass(frozen=True)
class Selection:
    """What the head reads: one token strategy, hidden layers (0 = embeddings) and hidden dimensions."""

    token: str
    token_method: str
    token_index: int | None
    layers: tuple[int, ...]
    dims: tuple[int, ...]
    num_layers: int
    hidden_size: int

    @property
    def token_spec(self) -> tuple[str, int | None]:
        return self.token_method, self.token_index


def resolve_selection(config: FinetuneConfig, model: nn.Module) -> Selection:
    """Parse ``--token``, ``--layer`` and ``--dims`` against the model's depth and width."""
    depth, hidden = families.num_layers(model), families.hidden_size(model)
    method, index = parse_token(config.selection.token)
    return Selection(token=config.selection.token, token_method=method, token_index=index,
                     layers=parse_hidden_states(config.selection.layer, depth, option="--layer", keep_order=True),
                     dims=parse_dims(config.selection.dims, hidden, config.encoder.seed),
                     num_layers=depth, hidden_size=hidden)


def check_lengths(config: FinetuneConfig, model_config: Any) -> None:
    """Refuse a ``--max-length`` beyond the model's position embeddings (a long input would crash deep inside the
    forward) and an ``--token index:K`` that no input truncated to ``--max-length`` has."""
    families.check_max_length(config.encoder.max_length, model_config)
    method, index = parse_token(config.selection.token)
    if method == "index" and index is not None and not -config.encoder.max_length <= index < config.encoder.max_length:
        raise BertscopeError(f"--token {config.selection.token} reads a position no input has: inputs are truncated to "
                             f"--max-length {config.encoder.max_length} tokens (positions 0..{config.encoder.max_length - 1})")


def head_learning_rate(config: FinetuneConfig, encoder_fully_frozen: bool) -> float:
    """``--head-lr``, else ``--lr``, else 1e-3 when the encoder is entirely frozen (a head alone learns faster)."""
    if config.optim.head_lr is not None:
        return float(config.optim.head_lr)
    return 1e-3 if encoder_fully_frozen else float(config.optim.lr)


def build_head(config: FinetuneConfig, task: glue.GlueTask, selection: Selection, loaded: Any,
               device: torch.device) -> SelectingHead:
    """The selecting head of ``config`` on ``loaded``'s model. With ``--pooler`` its pooler is the family's own
    classification head's (:func:`bertscope.models.families.pooler_style`), starting from the checkpoint's
    pretrained pooler where it has one. With ``--save-model``, a head the family's standard classifier cannot hold
    is said in one line now, before training."""
    model = loaded.model
    style = families.pooler_style(model)
    if config.selection.pooler and style is None:
        raise BertscopeError(f"--pooler: {loaded.family.name} models have no classification head bertscope "
                             "can reproduce; drop --pooler")
    pooled: dict[str, Any] = {} if style is None or not config.selection.pooler else {
        "pooler_activation": style.activation, "pooler_norm_eps": style.norm_eps,
        "pooler_norm_bias": style.norm_bias, "pooler_dropout_before": style.dropout_before}
    spec = HeadSpec(num_labels=task.num_labels, hidden_size=selection.hidden_size, layers=selection.layers,
                    dims=selection.dims, token=config.selection.token, include_special=config.selection.include_special,
                    head=config.selection.head, head_hidden=config.selection.head_hidden, dropout=config.selection.dropout, pooler=config.selection.pooler,
                    task=task.name, label_names=task.label_names, feature_norm=config.selection.resolved_feature_norm,
                    **pooled)
    if config.output.save_model:
        blocker = classifier_blocker(spec, model)
        if blocker is not None:
            _log.warning("--save-model: the saved folder will need bertscope to load its head, not plain "
                         "transformers: %s", blocker)
    pooler = families.pooler_parts(model) if config.selection.pooler else None
    return SelectingHead(spec, seed=config.encoder.seed, pooler=pooler).to(device)


# ------------------------------------------------------------------------------------------- cached features


def is_cached(config: FinetuneConfig) -> bool:
    """Whether a run trains its head on cached token vectors (``--cache-features`` with ``--freeze encoder``)."""
    return bool(config.cache.cache_features) and config.selection.freeze.strip().lower() == "encoder"


def compute_features(config: FinetuneConfig, model: nn.Module, data: TaskData, *, tokens: list[str] | None = None,
                     store: FeatureStore | None = None, source: str = "",
                     progress: Progress | None = None) -> dict[str, FeatureSet]:
    """Token vectors of every layer for every split (from the feature cache, or computed and stored now).

    ``tokens``: the strategies to keep from the one encoder pass (default: ``config.selection.token`` plus the usual ones).
    """
    wanted = tokens or list(dict.fromkeys([canonical_token(config.selection.token), *DEFAULT_TOKENS]))
    store = store or FeatureStore(config.cache.cache_dir)
    device = resolve_device(config.encoder.device)
    return {name: store.get(model, split, wanted, include_special=config.selection.include_special,
                            batch_size=config.optim.eval_batch_size or config.encoder.batch_size, device=device, dtype=config.encoder.dtype,
                            progress=progress_setting(config.output.progress, config.tracking.log) if progress is None else progress,
                            provenance={"task": data.task.name, "split": name, "model_source": source,
                                        "max_length": config.encoder.max_length, "max_train": config.data.max_train,
                                        "max_eval": config.data.max_eval, "seed": config.encoder.seed})
            for name, split in data.splits()}


@contextlib.contextmanager
def _head_threads(device: torch.device, cached: bool) -> Iterator[None]:
    """Train a head on cached vectors with one CPU thread: its matrices are tiny, so more threads only add
    synchronisation (several times slower on a busy machine)."""
    if not cached or device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ trackers


@dataclass(frozen=True)
class _Reporter:
    """train_loop's callback: hands the loss and every epoch's dev metrics to the run's tracker(s)."""

    tracker: Tracker

    def on_step(self, step: int, loss: float, learning_rate: float) -> None:
        self.tracker.log_step(step, loss, learning_rate)

    def on_epoch(self, record: EpochRecord, step: int) -> None:
        self.tracker.log_epoch(record.epoch, epoch_metrics(record.eval, record.train_loss), step=step)


# ------------------------------------------------------------------------------------------------ prepare


@dataclass
class Shared:
    """Pieces a caller already holds and hands to :func:`prepare` instead of loading them again.

    ``loaded``: a :class:`loading.LoadedModel` (its model is trained in place unless the run is frozen);
    ``features``: cached feature sets of ``loaded``'s (frozen, pretrained) encoder for ``data``'s splits;
    ``feature_root``: where those came from (recorded in the result).
    """

    tokenizer: Any = None
    loaded: Any = None
    data: TaskData | None = None
    features: Mapping[str, FeatureSet] | None = None
    feature_root: str | None = None


@dataclass
class PreparedRun:
    """A fine-tuning run ready to train: every piece resolved, nothing trained yet (stateful: model and head)."""

    config: FinetuneConfig
    data: TaskData
    loaded: Any
    tokenizer: Any
    selection: Selection
    freezing: dict[str, Any]
    head: SelectingHead
    head_lr: float
    represent: Representation
    encoder_params: list[tuple[str, nn.Parameter]]
    device: torch.device
    collate_fn: Any = None
    features: dict[str, Any] | None = None
    history: TrainHistory | None = field(default=None, repr=False)
    checkpoints: Checkpointer | None = None  # set by the caller: resume from it, checkpoint into it while training
    fit: dict[str, Any] | None = field(default=None, repr=False)  # how the head was fitted (--fit), after train()
    feature_stats: dict[str, Any] | None = None  # --feature-norm standardize: what its statistics were fitted on

    @property
    def model(self) -> PreTrainedModel:
        model: PreTrainedModel = self.loaded.model
        return model

    @property
    def cached(self) -> bool:
        return self.collate_fn is not None

    @property
    def trained_head(self) -> SelectingHead:
        """The head itself (unwrapped from its data-parallel wrapper under ``torchrun``)."""
        head: SelectingHead = dp.unwrap(self.head)
        return head

    @property
    def is_main_process(self) -> bool:
        """Rank 0 of a data-parallel run (always, run alone): the process that writes files and reports."""
        return dp.is_main()

    def hyperparameters(self) -> dict[str, Any]:
        """What the trackers record as the run's hyper-parameters: its options and what they resolved to."""
        sel = self.selection
        return {**self.config.to_dict(), "resolved.task": self.data.task.name, "resolved.model": self.loaded.source,
                "resolved.head_lr": self.head_lr, "resolved.layers": list(sel.layers), "resolved.dims": len(sel.dims),
                "resolved.feature_norm": self.trained_head.spec.feature_norm,
                "resolved.cached": self.cached, "resolved.encoder_trainable": sum(p.numel() for _, p in
                                                                                  self.encoder_params),
                "bertscope_version": __version__}

    def _tracker(self) -> Tracker:
        """The started tracker(s) of ``--report-to`` (none on the other processes of a multi-GPU run)."""
        config = self.config
        if not self.is_main_process or not parse_report_to(config.tracking.report_to):
            return NullTracker()
        tracker = make_tracker(config.tracking.report_to, root=config.tracking.report_dir or config.output.out)
        tracker.start(self.hyperparameters(), config.tracking.run_name or default_run_name(config))
        return tracker

    def train(self) -> TrainHistory:
        """Train the head (and the trainable encoder parameters), evaluating on every dev split each epoch; the
        trackers of ``--report-to`` get one run for it, finished also when training fails.

        With :attr:`checkpoints` set, training continues from its checkpoint when it has one, writes one every epoch
        (and every ``--checkpoint-every`` steps), and Ctrl-C / SIGTERM stop it at the next step boundary after a
        checkpoint there (:mod:`bertscope.finetune.checkpoint`)."""
        config = self.config
        tracker = self._tracker()
        reporter = None if isinstance(tracker, NullTracker) else _Reporter(tracker)
        interrupts = (self.checkpoints.deferring_interrupts() if self.checkpoints is not None
                      else contextlib.nullcontext())
        status = "failed"
        try:
            with _head_threads(self.device, self.cached), interrupts:
                if resolve_fit(config, bool(self.freezing["encoder_fully_frozen"])) == "converged":
                    self.history, self.fit = fit_converged(self, reporter)  # a probe solved on the frozen features
                else:
                    self.fit = {"method": "sgd"}
                    self.history = train_loop(
                        self.represent, self.head, self.data.train_data, self.data.eval_data,
                        config.optim.replace(head_lr=self.head_lr), batch_size=config.encoder.batch_size,
                        seed=config.encoder.seed, dtype=config.encoder.dtype, tracking=config.tracking,
                        progress=config.output.progress, checkpoint_every=config.checkpoints.checkpoint_every,
                        encoder_params=self.encoder_params, device=self.device, collate_fn=self.collate_fn,
                        callback=reporter, checkpoints=self.checkpoints)
            status = "finished"
        except KeyboardInterrupt:
            status = "killed"
            raise
        finally:
            if status == "finished":
                tracker.finish(status)
            else:  # never hide the training error behind a tracker's
                with contextlib.suppress(Exception):
                    tracker.finish(status)
        return self.history

    def predict(self, data: EncodedSplit) -> list[float]:
        """Predictions (class ids, or STS-B scores) of the trained run for any tokenised split, labelled or not.

        A run on cached features predicts through the live frozen encoder, which computes the very same vectors."""
        represent = self.represent
        if self.cached:
            represent = EncoderRepresentation(self.model, self.selection.layers, self.selection.token_spec,
                                              include_special=self.config.selection.include_special, frozen=True,
                                              fast_top=False)
        config = self.config
        return evaluate(represent, self.head, data,
                        batch_size=config.optim.eval_batch_size or config.encoder.batch_size,
                        device=self.device, dtype=resolve_dtype(config.encoder.dtype))

    def result(self, history: TrainHistory | None = None, *, saved_model: str | None = None,
               test_predictions: dict[str, str] | None = None) -> FinetuneResult:
        """The immutable record of the trained run."""
        history = history or self.history
        if history is None:
            raise RuntimeError("PreparedRun.result() before train()")
        config, sel = self.config, self.selection
        final = dict(history.epochs[-1].eval)
        head = self.trained_head
        return FinetuneResult(
            config=config,
            task=self.data.task.name,
            model_source=self.loaded.source,
            head={**head.spec.to_dict(), "seed": config.encoder.seed, "head_lr": self.head_lr,
                  "fit": {"requested": config.selection.fit, **(self.fit or {"method": "sgd"})},
                  "feature_norm_requested": config.selection.feature_norm, "feature_stats": self.feature_stats},
            selection={"token": sel.token, "token_method": sel.token_method, "token_index": sel.token_index,
                       "include_special": config.selection.include_special, "layers": list(sel.layers),
                       "layer_numbering": HIDDEN_STATE,
                       "num_layers": sel.num_layers, "dims_spec": config.selection.dims, "dims": list(sel.dims),
                       "hidden_size": sel.hidden_size, "pooler": config.selection.pooler, "layers_computed": max(sel.layers),
                       "top_layer_at_one_position": bool(getattr(self.represent, "fast_top", False))},
            freezing=self.freezing,
            data=self.data.provenance(config.encoder.max_length),
            epochs=tuple({"epoch": r.epoch, "train_loss": r.train_loss, "late_train_loss": r.late_train_loss,
                          "learning_rate": r.learning_rate,
                          "train_seconds": r.train_seconds, "train_examples": r.train_examples,
                          "eval_seconds": r.eval_seconds, "eval": r.eval} for r in history.epochs),
            final=final,
            final_score=sum(s[glue.COMBINED] for s in final.values()) / len(final),
            timing={"tokenize_seconds": self.data.tokenize_seconds, "train_seconds": history.train_seconds,
                    "eval_seconds": history.eval_seconds, "train_examples": history.train_examples,
                    "train_examples_per_second": history.train_examples_per_second, "steps": history.steps,
                    "device": str(self.device), "dtype": config.encoder.dtype, "attention": self.loaded.attention,
                    "precision": precision_info(config.encoder.dtype, self.device), "world_size": distributed_world_size(),
                    "per_process_batch_size": config.encoder.batch_size,
                    "global_batch_size": config.encoder.batch_size * distributed_world_size()},
            parameters={"encoder_trainable": sum(p.numel() for _, p in self.encoder_params),
                        "encoder_total": self.freezing["encoder_params"],
                        "head_trainable": sum(p.numel() for p in head.parameters() if p.requires_grad)},
            environment=run_environment(),
            saved_model=saved_model,
            test_predictions=dict(test_predictions or {}),
            predictions=history.predictions,
            features=self.features,
            resumed_from_epoch=history.resumed_from_epoch,
            resumed_from_step=history.resumed_from_step,
            learning=self.learning_check(history),
        )

    def learning_check(self, history: TrainHistory) -> dict[str, Any]:
        """Did the head learn (:func:`bertscope.finetune.learning.did_not_learn`): the training loss where training
        ended (the final epoch's second half of batches) against the constant predictor's on the training labels,
        and the dev predictions. Public for studies that train a run without making its result (cross's stages)."""
        regression = self.data.task.is_regression
        labels = [v for v in self.data.train_data.labels if v is not None]
        constant = constant_loss(labels, regression=regression) if labels else None
        dev_labels = {k: list(v.labels) for k, v in self.data.eval_data.items()}
        solved = (self.fit or {}).get("method") == "converged"  # a probe has no learning rate to change
        options = {"feature_norm": self.trained_head.spec.feature_norm, "token": self.config.selection.token,
                   "lr": None if solved else self.config.optim.lr, "head_lr": None if solved else self.head_lr}
        check = did_not_learn(history.epochs[-1].ended_loss, constant, history.predictions, dev_labels,
                              regression=regression, options=options)
        return check.to_dict()


def prepare(config: FinetuneConfig, shared: Shared | None = None) -> PreparedRun:
    """Resolve every piece of one fine-tuning run, loading what ``shared`` does not hold.

    Order (fixed, because loading a model may draw from the global RNG, e.g. a missing pooler's initialisation, and
    the encoder's dropout draws from it while training): seed everything, load data, load the model, freeze,
    build the head, choose the representation (live encoder or cached vectors).
    """
    shared = shared or Shared()
    model_config = shared.loaded.model.config if shared.loaded is not None else loading.load_config(config.encoder.model)
    check_lengths(config, model_config)  # a bad --token or --max-length fails before anything heavy is loaded
    families.attention_implementation(model_config, config.encoder.attention)  # and so does --attention the family lacks
    if config.cache.cache_features and dp.launched_world_size() > 1:
        raise BertscopeError("--cache-features does not run data-parallel: drop it under torchrun (the live frozen "
                             "encoder gives the same numbers)")
    device = dp.setup(resolve_device(config.encoder.device))  # data-parallel: the process group, cuda:LOCAL_RANK
    seed_everything(config.encoder.seed)

    # ---- data and model
    tokenizer = shared.tokenizer if shared.tokenizer is not None else loading.load_tokenizer(config.encoder.model)
    data = shared.data if shared.data is not None else load_task_data(config, tokenizer)
    if data.task.name != glue.get_task(config.data.task or "").name:
        raise ValueError(f"prepare: data of {data.task.name} handed in for a {config.data.task} run")
    loaded = shared.loaded if shared.loaded is not None else loading.load_model(
        config.encoder.model, "base", device=device, dtype="float32", attention=config.encoder.attention)
    model = loaded.model

    # ---- selection, freezing, head
    selection = resolve_selection(config, model)
    freezing = apply_freezing(model, config.selection.freeze, read_layers=selection.layers)
    frozen_entirely = bool(freezing["encoder_fully_frozen"])
    resolve_fit(config, frozen_entirely)  # --fit converged on a trainable encoder fails before anything trains
    head_lr = head_learning_rate(config, frozen_entirely)
    head = build_head(config, data.task, selection, loaded, device)
    if data.task.is_regression and (scores := [v for v in data.train_data.labels if v is not None]):
        head.start_at(constant_score(scores))  # the constant predictor: the head only has to learn the rest
    encoder_params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    # ---- representation: cached vectors of a frozen encoder, or the live encoder
    if config.cache.cache_features:
        if not frozen_entirely:
            raise BertscopeError(f"--cache-features needs a fully frozen encoder; --freeze {config.selection.freeze} "
                                 "leaves parameters trainable (use --freeze encoder)")
        store = None if shared.features is not None else FeatureStore(config.cache.cache_dir)
        features = shared.features if shared.features is not None else compute_features(
            config, model, data, store=store, source=loaded.source)
        collate_fn = FeatureCollate([(split, features[name].select(config.selection.token, selection.layers))
                                     for name, split in data.splits()])
        root = shared.feature_root if store is None else str(store.root)
        return _fit_feature_norm(PreparedRun(config, data, loaded, tokenizer, selection, freezing, head, head_lr,
                                             CachedRepresentation(), [], device, collate_fn=collate_fn,
                                             features={"root": root,
                                                       "splits": {k: v.info() for k, v in features.items()}}))

    # ---- data-parallel under torchrun / accelerate launch (bertscope.finetune.distributed): DDP averages the gradients and
    # starts every process from rank 0's weights. The encoder may hold parameters the head never reaches (layers
    # above the highest one read): its graph is static, so DDP finds them on the first step.
    forward: nn.Module = model
    if dp.is_active():
        if encoder_params:
            forward = dp.data_parallel(model, device, static_graph=True)
        head = dp.data_parallel(head, device)
    # A frozen encoder computes whole layers, so live vectors are bit-identical to the feature cache's.
    represent = EncoderRepresentation(model, selection.layers, selection.token_spec,
                                      include_special=config.selection.include_special, frozen=frozen_entirely,
                                      forward=forward, fast_top=not frozen_entirely)
    return _fit_feature_norm(PreparedRun(config, data, loaded, tokenizer, selection, freezing, head, head_lr,
                                         represent, encoder_params, device))


def _fit_feature_norm(run: PreparedRun) -> PreparedRun:
    """``--feature-norm standardize``: fix the head's statistics from the training split before training (the
    encoder as it is now: pretrained, or as handed in), through the run's own representation."""
    head = run.trained_head
    if head.spec.feature_norm == "standardize":
        run.feature_stats = fit_standardizer(head, run.represent, run.data.train_data,
                                             batch_size=run.config.optim.eval_batch_size or run.config.encoder.batch_size,
                                             device=run.device, collate_fn=run.collate_fn)
    return run
