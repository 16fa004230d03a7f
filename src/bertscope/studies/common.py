"""What every paper-2 study shares: a list of runs, a resumable per-run store, a runner with the cached fast path,
and the result object / files (one JSON with every run, a CSV table, a PNG plot).

A study is a loop over :class:`RunSpec` s, each one fine-tuning configuration (a :class:`FinetuneConfig`). Each
finished run is written at once, atomically, to ``OUT/runs/<run id>-<config hash>.json``; running the same command
again loads finished runs instead of training them (the hash covers every option that changes the numbers, so a run
with other options is never mistaken for a finished one). ``--overwrite`` starts over.

:class:`HeadRunner` runs a configuration. With a fully frozen encoder (``--freeze encoder``) and ``--cache-features``
(the studies' default) it loads the model, the data and the cached token vectors (:mod:`bertscope.features`) once per
data setting and trains each head on them through the same :func:`bertscope.train.train_loop` as ``finetune`` (same
seed, same numbers); otherwise each run is an ordinary :func:`bertscope.finetune.run_finetune`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bertscope import families, glue, loading
from bertscope.configs import FinetuneConfig
from bertscope.errors import BertscopeError
from bertscope.features import DEFAULT_TOKENS, CachedRepresentation, FeatureCollate, FeatureSet, FeatureStore
from bertscope.finetune import FinetuneResult, resolve_eval_splits, run_finetune, seed_everything
from bertscope.results import environment_info, save_figure_atomic, write_csv_atomic, write_json_atomic
from bertscope.selection import HeadSpec, SelectingHead, apply_freezing, parse_dims, parse_layers, parse_token
from bertscope.train import encode_split, train_loop

__all__ = [
    "HeadRunner",
    "RunSpec",
    "RunStore",
    "StudyResult",
    "config_hash",
    "dim_importance",
    "execute",
    "finish_study",
    "model_shape",
    "summarise",
]

# Options that never change a run's numbers (the cached path equals the live one): left out of the run hash.
_NOT_HASHED = {"out", "progress", "overwrite", "device", "cache_features", "cache_dir", "save_model"}


_ENVIRONMENT: dict[str, Any] = {}


def run_environment() -> dict[str, Any]:
    """:func:`environment_info` for one run of a study: versions and git state are looked up once per process
    (the lookup takes most of a second, longer than a cached head's training); the timestamp is the run's own."""
    import datetime as _dt

    if not _ENVIRONMENT:
        _ENVIRONMENT.update(environment_info())
    return {**_ENVIRONMENT, "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def config_hash(config: FinetuneConfig) -> str:
    """Short hash of the fine-tuning options that determine a run's result."""
    values = {k: v for k, v in FinetuneConfig.to_dict(config).items() if k not in _NOT_HASHED}
    values = {k: values[k] for k in FinetuneConfig.field_names() if k in values}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def finetune_config(study: FinetuneConfig, **changes: Any) -> FinetuneConfig:
    """The plain :class:`FinetuneConfig` of one run: the study's fine-tuning options with ``changes``."""
    values = {k: getattr(study, k) for k in FinetuneConfig.field_names()}
    values.update(out=None, save_model=False, overwrite=False, progress=False)
    values.update(changes)
    if values["freeze"].strip().lower() != "encoder":
        values["cache_features"] = False
    return FinetuneConfig(**values)


def model_shape(config: FinetuneConfig) -> tuple[int, int]:
    """(number of layers L, hidden size H) of ``config.model`` from its config file (no weights loaded)."""
    import transformers

    source = loading.resolve_model_source(config.model)
    try:
        model_config = transformers.AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise BertscopeError(f"cannot read the model config of {source}: {str(exc).splitlines()[0]}") from None
    return families.num_layers(model_config), families.hidden_size(model_config)


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: a readable id (unique in the study), its table columns and its fine-tuning options."""

    run_id: str
    params: dict[str, Any]
    config: FinetuneConfig


class RunStore:
    """One JSON per finished run under ``OUT/runs``; nothing is stored when ``out`` is None."""

    def __init__(self, out: str | Path | None, *, fresh: bool = False) -> None:
        self.folder = None if out is None else Path(out) / "runs"
        if self.folder is not None:
            if self.folder.parent.exists() and not self.folder.parent.is_dir():
                raise BertscopeError(f"--out {self.folder.parent} exists and is not a folder")
            self.folder.mkdir(parents=True, exist_ok=True)
            if fresh:
                for path in self.folder.glob("*.json"):
                    path.unlink()

    def path(self, spec: RunSpec) -> Path | None:
        if self.folder is None:
            return None
        slug = re.sub(r"[^A-Za-z0-9=.,_-]+", "_", spec.run_id).strip("_")[:80]
        return self.folder / f"{slug}-{config_hash(spec.config)}.json"

    def load(self, spec: RunSpec) -> dict[str, Any] | None:
        path = self.path(spec)
        if path is None or not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # unreadable: run again (files are written atomically, so this is rare)
        return record if record.get("complete") else None

    def save(self, spec: RunSpec, record: dict[str, Any]) -> None:
        path = self.path(spec)
        if path is not None:
            write_json_atomic(path, record)


# ------------------------------------------------------------------------------------------------ running


@dataclass
class _Context:
    """Everything shared by the cached runs of one data setting: model, data, cached vectors."""

    task: glue.GlueTask
    loaded: Any
    train_split: glue.GlueSplit
    eval_sets: dict[str, glue.GlueSplit]
    train_data: Any
    eval_data: dict[str, Any]
    features: dict[str, FeatureSet]
    tokenize_seconds: float
    device: torch.device


def _context_key(config: FinetuneConfig) -> tuple:
    return (config.model, config.task, config.data_dir, config.max_train, config.max_eval, config.seed,
            config.max_length, config.eval_split, config.bad_rows, config.include_special, config.dtype,
            config.device, config.cache_dir)


class HeadRunner:
    """Runs fine-tuning configurations; frozen encoder + cache -> the shared fast path, else ``run_finetune``.

    ``tokens``: token strategies to cache in the one encoder pass (the union of what the study needs).
    """

    def __init__(self, tokens: Sequence[str] = DEFAULT_TOKENS, *, progress: bool = False) -> None:
        self.tokens = list(tokens)
        self.progress = progress
        self._contexts: dict[tuple, _Context] = {}

    @staticmethod
    def is_cached(config: FinetuneConfig) -> bool:
        return bool(config.cache_features) and config.freeze.strip().lower() == "encoder"

    def context(self, config: FinetuneConfig) -> _Context:
        key = _context_key(config)
        if key not in self._contexts:
            self._contexts.clear()  # one data setting at a time: keeps memory bounded
            self._contexts[key] = self._prepare(config)
        return self._contexts[key]

    def _prepare(self, config: FinetuneConfig) -> _Context:
        task = glue.get_task(config.task or "")
        device = loading.resolve_device(config.device)
        train_split = glue.load_split(task, "train", config.data_dir, config.max_train, config.seed,
                                      bad_rows=config.bad_rows)
        eval_sets = {s: glue.load_split(task, s, config.data_dir, config.max_eval, config.seed,
                                        bad_rows=config.bad_rows)
                     for s in resolve_eval_splits(task, config.eval_split)}
        for split in (train_split, *eval_sets.values()):
            if not split.is_labelled:
                raise BertscopeError(f"GLUE {task.name} {split.split} has no labels; use train and a validation split")
        tokenizer = loading.load_tokenizer(config.model)
        loaded = loading.load_model(config.model, "base", device=device, dtype="float32")
        apply_freezing(loaded.model, "encoder")
        start = time.perf_counter()
        train_data = encode_split(tokenizer, train_split, config.max_length)
        eval_data = {name: encode_split(tokenizer, split, config.max_length) for name, split in eval_sets.items()}
        tokenize_seconds = time.perf_counter() - start
        store = FeatureStore(config.cache_dir)
        features = {}
        for name, data in [("train", train_data), *eval_data.items()]:
            features[name] = store.get(
                loaded.model, data, self.tokens, include_special=config.include_special,
                batch_size=config.eval_batch_size or config.batch_size, device=device, dtype=config.dtype,
                progress=self.progress,
                provenance={"task": task.name, "split": name, "model_source": loaded.source,
                            "max_length": config.max_length, "max_train": config.max_train,
                            "max_eval": config.max_eval, "seed": config.seed})
        return _Context(task, loaded, train_split, eval_sets, train_data, eval_data, features, tokenize_seconds,
                        device)

    def train_vectors(self, config: FinetuneConfig) -> torch.Tensor:
        """The (pretrained, frozen) training-set vectors ``[N, n_layers, H]`` the head of ``config`` would read."""
        ctx = self.context(config)  # the pretrained encoder, frozen, whatever the runs themselves do
        layers = parse_layers(config.layer, families.num_layers(ctx.loaded.model))
        return ctx.features["train"].select(config.token, layers)

    def run(self, config: FinetuneConfig, *, want_head: bool = False) -> tuple[FinetuneResult, SelectingHead | None]:
        """Run one configuration; with ``want_head`` also return the trained head."""
        if self.is_cached(config):
            return self._run_cached(config)
        if not want_head:
            return run_finetune(config), None
        with tempfile.TemporaryDirectory(prefix="bertscope-run-") as tmp:
            result = run_finetune(config.replace(out=tmp, save_model=True, overwrite=True))
            return result, SelectingHead.load(Path(tmp) / "model")

    def _run_cached(self, config: FinetuneConfig) -> tuple[FinetuneResult, SelectingHead]:
        # Mirrors bertscope.finetune.run_finetune step by step, with the encoder replaced by cached vectors.
        ctx = self.context(config)
        model, task, device = ctx.loaded.model, ctx.task, ctx.device
        seed_everything(config.seed)
        depth, hidden = families.num_layers(model), families.hidden_size(model)
        token = parse_token(config.token)
        layers = parse_layers(config.layer, depth)
        dims = parse_dims(config.dims, hidden, config.seed)
        pooler = families.pooler_parts(model) if config.pooler else None
        if config.pooler and pooler is None:
            raise BertscopeError(f"--pooler: {ctx.loaded.family.name} checkpoints have no pooler; drop --pooler")
        freezing = apply_freezing(model, "encoder", read_layers=layers)
        head_lr = config.head_lr if config.head_lr is not None else 1e-3
        spec = HeadSpec(num_labels=task.num_labels, hidden_size=hidden, layers=layers, dims=dims, token=config.token,
                        include_special=config.include_special, head=config.head, head_hidden=config.head_hidden,
                        dropout=config.dropout, pooler=config.pooler, task=task.name, label_names=task.label_names)
        head = SelectingHead(spec, seed=config.seed, pooler=pooler).to(device)
        collate = FeatureCollate([(data, ctx.features[name].select(config.token, layers))
                                  for name, data in [("train", ctx.train_data), *ctx.eval_data.items()]])
        with _head_threads(device):
            history = self._train(config, ctx, head, head_lr, collate, device)
        final = dict(history.epochs[-1].eval)
        return self._result(config, ctx, spec, head, head_lr, token, layers, dims, freezing, history, final), head

    @staticmethod
    def _train(config: FinetuneConfig, ctx: _Context, head: SelectingHead, head_lr: float,
               collate: FeatureCollate, device: torch.device) -> Any:
        return train_loop(
            represent=CachedRepresentation(), head=head, encoder_params=[], named_encoder_params=[],
            train_data=ctx.train_data, eval_data=ctx.eval_data, epochs=config.epochs, batch_size=config.batch_size,
            lr=config.lr, head_lr=head_lr, weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio,
            grad_clip=config.grad_clip, seed=config.seed, device=device, dtype=loading.resolve_dtype(config.dtype),
            group_by_length=config.group_by_length, eval_batch_size=config.eval_batch_size, progress=False,
            collate_fn=collate,
        )

    @staticmethod
    def _result(config: FinetuneConfig, ctx: _Context, spec: HeadSpec, head: SelectingHead, head_lr: float,
                token: tuple[str, int | None], layers: tuple[int, ...], dims: tuple[int, ...],
                freezing: dict[str, Any], history: Any, final: dict[str, Any]) -> FinetuneResult:
        model, task, device = ctx.loaded.model, ctx.task, ctx.device
        depth, hidden = families.num_layers(model), families.hidden_size(model)
        return FinetuneResult(
            config=config, task=task.name, model_source=ctx.loaded.source,
            head={**spec.to_dict(), "seed": config.seed, "head_lr": head_lr},
            selection={"token": config.token, "token_method": token[0], "token_index": token[1],
                       "include_special": config.include_special, "layers": list(layers), "num_layers": depth,
                       "dims_spec": config.dims, "dims": list(dims), "hidden_size": hidden, "pooler": config.pooler,
                       "layers_computed": depth},
            freezing=freezing,
            data={"train": ctx.train_split.provenance(), "eval": {k: v.provenance() for k, v in ctx.eval_sets.items()},
                  "max_length": config.max_length},
            epochs=tuple({"epoch": r.epoch, "train_loss": r.train_loss, "learning_rate": r.learning_rate,
                          "train_seconds": r.train_seconds, "train_examples": r.train_examples,
                          "eval_seconds": r.eval_seconds, "eval": r.eval} for r in history.epochs),
            final=final, final_score=sum(s["score"] for s in final.values()) / len(final),
            timing={"tokenize_seconds": ctx.tokenize_seconds, "train_seconds": history.train_seconds,
                    "eval_seconds": history.eval_seconds, "train_examples": history.train_examples,
                    "train_examples_per_second": history.train_examples_per_second, "steps": history.steps,
                    "device": str(device), "dtype": config.dtype, "world_size": 1},
            parameters={"encoder_trainable": 0, "encoder_total": freezing["encoder_params"],
                        "head_trainable": sum(p.numel() for p in head.parameters() if p.requires_grad)},
            environment=run_environment(), predictions=history.predictions,
            features={"root": str(FeatureStore(config.cache_dir).root),
                      "splits": {k: v.info() for k, v in ctx.features.items()}},
        )


@contextlib.contextmanager
def _head_threads(device: torch.device) -> Iterator[None]:
    """Train a head on cached vectors with one CPU thread: its matrices are tiny, so more threads only add
    synchronisation (several times slower on a busy machine). The encoder pass is not affected."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def dim_importance(head: SelectingHead) -> list[float]:
    """Per hidden dimension (of the H the encoder has), how much the trained head relies on it.

    The L2 norm of the first weight layer's input column(s) of that dimension (summed over the layers read), which
    for standardised-scale inputs is the usual weight-magnitude importance; dimensions the head never saw get 0.
    """
    spec = head.spec
    first = head.hidden[0] if head.hidden is not None else head.classifier
    weight = first.weight.detach().float().cpu()  # [out, n_layers * n_dims], layer-major
    per_input = weight.norm(dim=0).view(len(spec.layers), len(spec.dims)).sum(dim=0)
    importance = [0.0] * spec.hidden_size
    for dim, value in zip(spec.dims, per_input.tolist()):
        importance[dim] = float(value)
    return importance


def run_record(spec: RunSpec, result: FinetuneResult, *, cached: bool, seconds: float,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a study stores per run: its id and columns, score, metrics, selection, and the full result."""
    payload = result.to_dict()
    return {"complete": True, "run_id": spec.run_id, **spec.params, "score": result.final_score,
            "final": result.final, "dims": list(result.selection["dims"]), "layers": list(result.selection["layers"]),
            "token": result.selection["token"], "cached": cached, "seconds": seconds, **(extra or {}),
            "result": payload}


def execute(specs: Sequence[RunSpec], runner: HeadRunner, store: RunStore, *, progress: bool = True,
            want_head: Callable[[RunSpec], bool] | None = None,
            on_head: Callable[[RunSpec, SelectingHead], dict[str, Any]] | None = None,
            desc: str = "runs") -> list[dict[str, Any]]:
    """Run every spec not finished yet (saving each record as it finishes); return all records in spec order."""
    from tqdm.auto import tqdm

    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("run ids of a study must be unique")
    records = []
    bar = tqdm(specs, desc=desc, unit="run", disable=not progress, dynamic_ncols=True)
    for spec in bar:
        record = store.load(spec)
        if record is None:
            start = time.perf_counter()
            needs_head = want_head is not None and want_head(spec)
            result, head = runner.run(spec.config, want_head=needs_head)
            extra = on_head(spec, head) if (needs_head and head is not None and on_head is not None) else None
            record = run_record(spec, result, cached=runner.is_cached(spec.config),
                                seconds=time.perf_counter() - start, extra=extra)
            store.save(spec, record)
            record["resumed"] = False
        else:
            record["resumed"] = True
        bar.set_postfix(score=f"{record['score']:.4f}")
        records.append(record)
    bar.close()
    return records


# ------------------------------------------------------------------------------------------------ results


def summarise(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min, max and count."""
    import statistics

    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "n": len(vals)}


@dataclass(frozen=True)
class StudyResult:
    """A finished study: its options, a table (one row per point of the study), every run, and extra findings."""

    study: str
    config: Any
    table: tuple[dict[str, Any], ...]
    runs: tuple[dict[str, Any], ...]
    summary: dict[str, Any]
    environment: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    title: str = ""
    row_key: str | tuple[str, ...] = "run_id"

    def to_dict(self) -> dict[str, Any]:
        return {"format": f"bertscope-{self.study}/1", "command": self.study, "complete": True,
                "config": self.config.to_dict(), "summary": self.summary, "table": list(self.table),
                "runs": list(self.runs), "files": self.files, "environment": self.environment}

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        keys = (self.row_key,) if isinstance(self.row_key, str) else self.row_key
        for row in self.table:
            label = "/".join(str(row.get(k)) for k in keys)
            for key, value in row.items():
                if key not in keys and isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[f"{label}.{key}"] = float(value)
        for key, value in self.summary.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = float(value)
        return out

    def render(self) -> Any:
        from rich.table import Table

        table = Table(title=self.title or self.study)
        columns = [c for c in (self.table[0] if self.table else {}) if not isinstance(self.table[0][c], (list, dict))]
        for column in columns:
            table.add_column(column, justify="right")
        for row in self.table:
            table.add_row(*[f"{row[c]:.4f}" if isinstance(row[c], float) else "-" if row[c] is None else str(row[c])
                            for c in columns])
        resumed = sum(1 for r in self.runs if r.get("resumed"))
        table.caption = (f"{len(self.runs)} runs ({resumed} loaded from earlier), "
                         f"{sum(1 for r in self.runs if r.get('cached'))} on cached features"
                         + (f"; files in {Path(next(iter(self.files.values()))).parent}" if self.files else ""))
        return table


def finish_study(study: str, config: Any, table: list[dict[str, Any]], runs: list[dict[str, Any]],
                 summary: dict[str, Any], *, plot: Callable[[Any], None] | None, title: str,
                 row_key: str | tuple[str, ...] = "run_id") -> StudyResult:
    """Build the result and, with ``config.out``, write ``<study>.json``, ``<study>.csv``, ``runs.csv``, the plot."""
    files: dict[str, str] = {}
    if config.out is not None:
        out = Path(config.out)
        files = {"json": str(out / f"{study}.json"), "csv": str(out / f"{study}.csv"),
                 "runs_csv": str(out / "runs.csv")}
        if plot is not None:
            files["png"] = str(out / f"{study}.png")
    result = StudyResult(study=study, config=config, table=tuple(table), runs=tuple(runs), summary=summary,
                         environment=environment_info(), files=files, title=title, row_key=row_key)
    if config.out is not None:
        flat = lambda row: {k: (" ".join(map(str, v)) if isinstance(v, list) else v)  # noqa: E731
                            for k, v in row.items() if not isinstance(v, dict)}
        write_csv_atomic(files["csv"], [flat(r) for r in table])
        write_csv_atomic(files["runs_csv"], [flat({k: v for k, v in r.items() if k != "result"}) for r in runs])
        if plot is not None:
            _save_plot(plot, Path(files["png"]))
        write_json_atomic(files["json"], result.to_dict())
    return result


def _save_plot(draw: Callable[[Any], None], path: Path) -> None:

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    try:
        draw(ax)
        fig.tight_layout()
        save_figure_atomic(fig, path)
    finally:
        plt.close(fig)
