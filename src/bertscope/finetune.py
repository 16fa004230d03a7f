"""``bertscope finetune``: GLUE fine-tuning with a representation-selecting head (paper 2), start to finish.

:func:`run_finetune` loads the task and the model, resolves the selection (layers, dimensions, token), applies the
freezing policy, trains with :func:`bertscope.train.train_loop` and returns a :class:`FinetuneResult`. With ``out``
it writes ``results.json`` atomically at the very end (an interrupted run leaves ``status.json`` saying so and no
``results.json``), ``predictions.csv`` with the final dev predictions, and with ``save_model`` a folder
``model/`` that plain ``transformers.AutoModel`` loads (the encoder) with ``head_config.json`` +
``head.safetensors`` beside it; :func:`load_finetuned` reloads both.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertscope import families, glue, loading
from bertscope.configs import FinetuneConfig
from bertscope.errors import BertscopeError
from bertscope.registry import CommandInfo
from bertscope.results import environment_info, write_csv_atomic, write_json_atomic
from bertscope.selection import (
    HeadSpec,
    SelectingHead,
    apply_freezing,
    parse_dims,
    parse_layers,
    parse_token,
)
from bertscope.train import (
    Batch,
    EncoderRepresentation,
    TrainHistory,
    distributed_world_size,
    encode_split,
    train_loop,
)

__all__ = [
    "FinetuneResult",
    "FinetunedModel",
    "load_finetuned",
    "resolve_eval_splits",
    "run_finetune",
    "save_finetuned",
    "seed_everything",
]

RESULTS_FORMAT = "bertscope-finetune/1"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and all GPUs)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_eval_splits(task: glue.GlueTask, spec: str) -> tuple[str, ...]:
    if spec.strip().lower() == "auto":
        return task.eval_splits
    names = tuple(dict.fromkeys(task.resolve_split(s) for s in spec.split(",") if s.strip()))
    if not names:
        raise BertscopeError("--eval-split is empty")
    return names


@dataclass(frozen=True)
class FinetuneResult:
    """Everything a fine-tuning run measured, with the options and environment it ran in."""

    config: FinetuneConfig
    task: str
    model_source: str
    head: dict[str, Any]
    selection: dict[str, Any]
    freezing: dict[str, Any]
    data: dict[str, Any]
    epochs: tuple[dict[str, Any], ...]
    final: dict[str, dict[str, float]]
    final_score: float
    timing: dict[str, float]
    parameters: dict[str, int]
    environment: dict[str, Any]
    saved_model: str | None = None
    features: dict[str, Any] | None = None
    predictions: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULTS_FORMAT,
            "command": "finetune",
            "complete": True,
            "config": self.config.to_dict(),
            "task": self.task,
            "model_source": self.model_source,
            "head": self.head,
            "selection": self.selection,
            "freezing": self.freezing,
            "data": self.data,
            "epochs": list(self.epochs),
            "final": self.final,
            "final_score": self.final_score,
            "timing": self.timing,
            "parameters": self.parameters,
            "saved_model": self.saved_model,
            "features": self.features,
            "environment": self.environment,
        }

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"final.score": self.final_score}
        for split, values in self.final.items():
            for name, value in values.items():
                out[f"final.{split}.{name}"] = value
        if len(self.final) == 1:
            out.update({f"final.{k}": v for k, v in next(iter(self.final.values())).items()})
        out["train.examples_per_second"] = self.timing["train_examples_per_second"]
        out["train.seconds"] = self.timing["train_seconds"]
        out["eval.seconds"] = self.timing["eval_seconds"]
        return out

    def render(self) -> Any:
        from rich.table import Table

        splits = list(self.final)
        table = Table(title=f"finetune {self.task}: token {self.selection['token']}, layers "
                            f"{list(self.selection['layers'])}, {len(self.selection['dims'])} dims, "
                            f"freeze {self.freezing['policy']}")
        table.add_column("epoch", justify="right")
        table.add_column("train loss", justify="right")
        for split in splits:
            for name in self.final[split]:
                table.add_column(f"{split} {name}", justify="right")
        for record in self.epochs:
            row = [str(record["epoch"]), f"{record['train_loss']:.4f}"]
            for split in splits:
                row += [f"{v:.4f}" for v in record["eval"][split].values()]
            table.add_row(*row)
        table.caption = (f"final GLUE score {self.final_score:.4f}; "
                         f"{self.timing['train_examples_per_second']:.1f} train examples/s")
        return table


def _check_out(config: FinetuneConfig) -> Path | None:
    if config.out is None:
        return None
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise BertscopeError(f"--out {out} exists and is not a folder")
    if (out / "results.json").exists() and not config.overwrite:
        raise BertscopeError(f"{out / 'results.json'} already exists; choose another --out or pass --overwrite")
    return out


def _retire_old_results(out: Path | None) -> None:
    """With --overwrite, move an old results.json aside first: a new run that is interrupted must not leave a
    complete-looking file from before (the old one is kept as results.previous.json until the new one is written)."""
    if out is not None and (out / "results.json").exists():
        (out / "results.json").replace(out / "results.previous.json")


def _status(out: Path | None, state: str, **extra: Any) -> None:
    if out is not None:
        write_json_atomic(out / "status.json", {"command": "finetune", "state": state, **extra})


def run_finetune(config: FinetuneConfig) -> FinetuneResult:
    """Run one fine-tuning job as described by ``config``."""
    task = glue.get_task(config.task or "")
    eval_splits = resolve_eval_splits(task, config.eval_split)
    out = _check_out(config)
    device = loading.resolve_device(config.device)
    dtype = loading.resolve_dtype(config.dtype)
    token = parse_token(config.token)
    seed_everything(config.seed)

    # ---- data: train subset and dev split(s), each labelled
    train_split = glue.load_split(task, "train", config.data_dir, config.max_train, config.seed,
                                  bad_rows=config.bad_rows)
    eval_sets = {s: glue.load_split(task, s, config.data_dir, config.max_eval, config.seed, bad_rows=config.bad_rows)
                 for s in eval_splits}
    for split in (train_split, *eval_sets.values()):
        if not split.is_labelled:
            raise BertscopeError(f"GLUE {task.name} {split.split} has no labels (test splits cannot be trained on "
                                 "or scored); use train and a validation split")

    # ---- model and selection
    tokenizer = loading.load_tokenizer(config.model)
    loaded = loading.load_model(config.model, "base", device=device, dtype="float32")
    model = loaded.model
    depth = families.num_layers(model)
    layers = parse_layers(config.layer, depth)
    dims = parse_dims(config.dims, families.hidden_size(model), config.seed)
    pooler = families.pooler_parts(model) if config.pooler else None
    if config.pooler and pooler is None:
        raise BertscopeError(f"--pooler: {loaded.family.name} checkpoints have no pooler; drop --pooler")
    freezing = apply_freezing(model, config.freeze, read_layers=layers)
    frozen_entirely = bool(freezing["encoder_fully_frozen"])
    head_lr = config.head_lr if config.head_lr is not None else (1e-3 if frozen_entirely else config.lr)
    spec = HeadSpec(num_labels=task.num_labels, hidden_size=families.hidden_size(model), layers=layers, dims=dims,
                    token=config.token, include_special=config.include_special, head=config.head,
                    head_hidden=config.head_hidden, dropout=config.dropout, pooler=config.pooler, task=task.name,
                    label_names=task.label_names)
    head = SelectingHead(spec, seed=config.seed, pooler=pooler).to(device)
    named_encoder = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    # ---- multi-GPU under `accelerate launch`
    accelerator = None
    forward = model
    if distributed_world_size() > 1:
        from accelerate import Accelerator

        accelerator = Accelerator()
        device = accelerator.device
        model.to(device)
        head.to(device)
        if named_encoder:
            forward = accelerator.prepare_model(model)
        head = accelerator.prepare_model(head)

    # ---- tokenise once
    start = time.perf_counter()
    train_data = encode_split(tokenizer, train_split, config.max_length)
    eval_data = {name: encode_split(tokenizer, split, config.max_length) for name, split in eval_sets.items()}
    tokenize_seconds = time.perf_counter() - start

    # A frozen encoder computes whole layers, so live vectors are bit-identical to the feature cache's.
    represent = EncoderRepresentation(model, layers, token, include_special=config.include_special,
                                      frozen=frozen_entirely, forward=forward, fast_top=not frozen_entirely)
    collate_fn, feature_info = None, None
    if config.cache_features:  # fast path (bertscope.features): cached token vectors of the frozen encoder
        if not frozen_entirely:
            raise BertscopeError(f"--cache-features needs a fully frozen encoder; --freeze {config.freeze} "
                                 "leaves parameters trainable (use --freeze encoder)")
        from bertscope.features import FeatureStore, cached_inputs

        represent, collate_fn, feature_info = cached_inputs(
            FeatureStore(config.cache_dir), model, train_data, eval_data, config.token, layers,
            include_special=config.include_special, batch_size=config.eval_batch_size or config.batch_size,
            device=device, dtype=config.dtype, progress=config.progress,
            provenance={"task": task.name, "model_source": loaded.source, "max_length": config.max_length,
                        "max_train": config.max_train, "max_eval": config.max_eval, "seed": config.seed})
    _retire_old_results(out)
    _status(out, "running", started_utc=environment_info()["created_utc"])
    try:
        history: TrainHistory = train_loop(
            represent=represent, head=head, encoder_params=[p for _, p in named_encoder],
            named_encoder_params=named_encoder, train_data=train_data, eval_data=eval_data, epochs=config.epochs,
            batch_size=config.batch_size, lr=config.lr, head_lr=head_lr, weight_decay=config.weight_decay,
            warmup_ratio=config.warmup_ratio, grad_clip=config.grad_clip, seed=config.seed, device=device,
            dtype=dtype, group_by_length=config.group_by_length, eval_batch_size=config.eval_batch_size,
            progress=config.progress, accelerator=accelerator, collate_fn=collate_fn,
        )
    except BaseException as exc:
        _status(out, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", error=type(exc).__name__)
        raise
    head_module: SelectingHead = getattr(head, "module", head)

    final = dict(history.epochs[-1].eval)
    final_score = sum(s["score"] for s in final.values()) / len(final)
    trainable_head = sum(p.numel() for p in head_module.parameters() if p.requires_grad)
    result = FinetuneResult(
        config=config,
        task=task.name,
        model_source=loaded.source,
        head={**spec.to_dict(), "seed": config.seed, "head_lr": head_lr},
        selection={"token": config.token, "token_method": token[0], "token_index": token[1],
                   "include_special": config.include_special, "layers": list(layers), "num_layers": depth,
                   "dims_spec": config.dims, "dims": list(dims), "hidden_size": families.hidden_size(model),
                   "pooler": config.pooler, "layers_computed": max(layers),
                   "top_layer_at_one_position": bool(getattr(represent, "fast_top", False))},
        freezing=freezing,
        data={"train": train_split.provenance(), "eval": {k: v.provenance() for k, v in eval_sets.items()},
              "max_length": config.max_length},
        epochs=tuple({"epoch": r.epoch, "train_loss": r.train_loss, "learning_rate": r.learning_rate,
                      "train_seconds": r.train_seconds, "train_examples": r.train_examples,
                      "eval_seconds": r.eval_seconds, "eval": r.eval} for r in history.epochs),
        final=final,
        final_score=final_score,
        timing={"tokenize_seconds": tokenize_seconds, "train_seconds": history.train_seconds,
                "eval_seconds": history.eval_seconds, "train_examples": history.train_examples,
                "train_examples_per_second": history.train_examples_per_second, "steps": history.steps,
                "device": str(device), "dtype": config.dtype, "world_size": distributed_world_size()},
        parameters={"encoder_trainable": sum(p.numel() for _, p in named_encoder),
                    "encoder_total": freezing["encoder_params"], "head_trainable": trainable_head},
        environment=environment_info(),
        saved_model=str(Path(out) / "model") if (out is not None and config.save_model) else None,
        predictions=history.predictions,
        features=feature_info,
    )
    is_main = accelerator is None or accelerator.is_main_process
    if out is not None and is_main:
        if config.save_model:
            save_finetuned(Path(out) / "model", model, head_module, tokenizer, seed=config.seed)
        rows = []
        for split, preds in history.predictions.items():
            data = eval_sets[split]
            rows += [{"split": split, "idx": ex.idx, "label": ex.label, "prediction": p}
                     for ex, p in zip(data.examples, preds)]
        write_csv_atomic(Path(out) / "predictions.csv", rows)
        write_json_atomic(Path(out) / "results.json", result.to_dict())
        (Path(out) / "results.previous.json").unlink(missing_ok=True)
        _status(out, "complete", finished_utc=environment_info()["created_utc"])
    return result


# ----------------------------------------------------------------------------------------- saved model


def save_finetuned(folder: Path, model: nn.Module, head: SelectingHead, tokenizer: Any, *, seed: int) -> None:
    """Encoder as a plain transformers folder (its pooler updated from the head's, if used) + the head beside it."""
    parts = families.pooler_parts(model)
    if head.pooler_dense is not None and parts is not None:
        with torch.no_grad():
            parts[0].weight.copy_(head.pooler_dense.weight)
            parts[0].bias.copy_(head.pooler_dense.bias)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    head.save(folder, seed=seed)


@dataclass
class FinetunedModel:
    """A reloaded fine-tuned model: encoder + selecting head + tokenizer, ready to predict."""

    encoder: nn.Module
    head: SelectingHead
    tokenizer: Any

    @property
    def spec(self) -> HeadSpec:
        return self.head.spec

    @torch.no_grad()
    def logits(self, texts: list[str] | list[tuple[str, str]], *, max_length: int = 128,
               batch_size: int = 32) -> torch.Tensor:
        """Logits for single sentences or sentence pairs (the head's selection applied as in training)."""
        self.encoder.eval()
        self.head.eval()
        device = next(self.encoder.parameters()).device
        represent = EncoderRepresentation(self.encoder, self.spec.layers, self.spec.token_method,
                                          include_special=self.spec.include_special, frozen=True)
        out = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            columns = list(zip(*chunk)) if chunk and isinstance(chunk[0], tuple) else [list(chunk)]
            enc = self.tokenizer(*columns[:2], truncation=True, max_length=max_length, padding=True,
                                 return_special_tokens_mask=True, return_token_type_ids=True, return_tensors="pt")
            batch = Batch(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                          token_type_ids=enc["token_type_ids"].to(device),
                          special_mask=enc["special_tokens_mask"].to(device), labels=None,
                          example_index=torch.arange(len(chunk)))
            out.append(self.head(represent(batch)))
        return torch.cat(out)


def load_finetuned(folder: str | os.PathLike[str], *, device: str = "cpu") -> FinetunedModel:
    """Reload a folder written by ``finetune --save-model`` (``OUT/model``)."""
    path = Path(folder)
    if (path / "model" / "head_config.json").is_file():
        path = path / "model"
    head = SelectingHead.load(path, map_location="cpu")
    loaded = loading.load_model(str(path), "base", device=device)
    tokenizer = loading.load_tokenizer(str(path))
    return FinetunedModel(encoder=loaded.model, head=head.to(loading.resolve_device(device)), tokenizer=tokenizer)


COMMAND = CommandInfo("finetune", FinetuneConfig, run_finetune, FinetuneResult,
                      "GLUE fine-tuning with a head reading a chosen token, layer and dimensions (paper 2)",
                      model_subdir="model")
