"""``bertscope finetune``: GLUE fine-tuning with a representation-selecting head (paper 2), start to finish.

:func:`run_finetune` prepares the run (data, model, selection, freezing, head: :func:`bertscope.pipeline.prepare`),
trains it and returns a :class:`~bertscope.finetune_result.FinetuneResult`. With ``out``
it writes ``results.json`` atomically at the very end (an interrupted run leaves ``status.json`` saying so and no
``results.json``), ``predictions.csv`` with the final dev predictions, and with ``save_model`` a folder
``model/`` that plain ``transformers.AutoModel`` loads (the encoder) with ``head_config.json`` +
``head.safetensors`` beside it; :func:`load_finetuned` reloads both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bertscope import families, loading
from bertscope.configs import FinetuneConfig
from bertscope.errors import BertscopeError
from bertscope.finetune_result import FinetuneResult
from bertscope.head import HeadSpec, SelectingHead
from bertscope.pipeline import prepare
from bertscope.registry import LOCATION_OPTIONS, CommandInfo
from bertscope.results import environment_info, write_csv_atomic, write_json_atomic
from bertscope.tracking import TRACKING_OPTIONS
from bertscope.train import Batch, EncoderRepresentation

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["COMMAND", "NOT_IDENTITY", "FinetunedModel", "load_finetuned", "run_finetune", "save_finetuned"]


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
    """Run one fine-tuning job as described by ``config`` (prepare, train, result: :mod:`bertscope.pipeline`)."""
    out = _check_out(config)
    run = prepare(config)
    _retire_old_results(out)
    _status(out, "running", started_utc=environment_info()["created_utc"])
    try:
        history = run.train()
    except BaseException as exc:
        _status(out, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", error=type(exc).__name__)
        raise
    saved = str(Path(out) / "model") if (out is not None and config.save_model) else None
    result = run.result(history, saved_model=saved)
    if out is not None and run.is_main_process:
        if config.save_model:
            save_finetuned(Path(out) / "model", run.model, run.trained_head, run.tokenizer, seed=config.seed)
        rows = []
        for split, preds in history.predictions.items():
            data = run.data.eval_sets[split]
            rows += [{"split": split, "idx": ex.idx, "label": ex.label, "prediction": p}
                     for ex, p in zip(data.examples, preds)]
        write_csv_atomic(Path(out) / "predictions.csv", rows)
        write_json_atomic(Path(out) / "results.json", result.to_dict())
        (Path(out) / "results.previous.json").unlink(missing_ok=True)
        _status(out, "complete", finished_utc=environment_info()["created_utc"])
    return result


# ----------------------------------------------------------------------------------------- saved model


def save_finetuned(folder: Path, model: PreTrainedModel, head: SelectingHead, tokenizer: Any, *, seed: int) -> None:
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


#: Options of fine-tuning runs that never change their numbers: locations, the trackers (--report-to, --run-name,
#: --log-every) and the feature cache (the cached path equals the live one by design). The studies run fine-tuning
#: runs, so they share this list.
NOT_IDENTITY = LOCATION_OPTIONS | TRACKING_OPTIONS | {"cache_features"}

COMMAND = CommandInfo("finetune", FinetuneConfig, run_finetune, FinetuneResult,
                      "GLUE fine-tuning with a head reading a chosen token, layer and dimensions (paper 2)",
                      model_subdir="model", not_identity=NOT_IDENTITY)
