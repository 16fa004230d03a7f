"""Model cards: the README.md that every folder bertscope saves carries (Hugging Face's card format).

A card is YAML front matter (the hub reads ``license``, ``tags``, ``base_model``, ``library_name``, ``pipeline_tag``,
``datasets``...) followed by Markdown. The source checkpoint's own card metadata (its license above all) is kept, and
bertscope's facts are added: what was done to the model, its measured numbers, the bertscope version, how to load it.

Cards load with huggingface_hub's ``ModelCard``: ``base_model`` is only ever a hub id (:func:`hub_model_id`; a local
folder's path means nothing elsewhere), and the source's tags that say what the source was for (its pipeline and
library: ``sentence-similarity`` on a sentence-transformers source) are dropped when the new model is for something
else (a classifier).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bertscope._version import __version__
from bertscope.core.results import write_text_atomic
from bertscope.models import loading

__all__ = ["hub_model_id", "model_card", "read_card_metadata", "write_model_card"]

# Front-matter keys that describe the source model itself, not a model made from it: its evaluation results and its
# own parent. Inheriting them would credit the new model with numbers measured on another one.
NOT_INHERITED = ("model-index", "base_model", "base_model_relation")

#: Tags that name what a model is used for (Hugging Face pipeline and library tags a source card may carry); a
#: source's are kept only when the new card is for the same use.
USE_TAGS = frozenset({"sentence-transformers", "sentence-similarity", "feature-extraction", "fill-mask",
                      "text-classification", "token-classification", "question-answering", "zero-shot-classification"})

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def hub_model_id(name: str | None) -> str | None:
    """The hub id a model name stands for, for a card's ``base_model``: the embedded default's
    (:data:`~bertscope.models.loading.DEFAULT_MODEL_HUB_ID`), a hub id as given, None for a local folder."""
    if name is None or name in ("", "default", loading.DEFAULT_MODEL_NAME):
        return loading.DEFAULT_MODEL_HUB_ID
    if Path(os.path.expanduser(name)).exists() or not _HUB_ID.fullmatch(name):
        return None
    return name


def read_card_metadata(source: str | Path | None) -> dict[str, Any]:
    """The YAML front matter of ``source``'s README.md (a local folder), or ``{}`` when there is none."""
    if source is None:
        return {}
    path = Path(source) / "README.md"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        meta = yaml.safe_load(text[3:end]) or {}
    except yaml.YAMLError:
        return {}
    return dict(meta) if isinstance(meta, Mapping) else {}


def model_card(title: str, *, summary: str, sections: Mapping[str, str], metadata: Mapping[str, Any] | None = None,
               source: str | Path | None = None, base_model: str | None = None) -> str:
    """The card's text: the source's metadata (kept, but for :data:`NOT_INHERITED`) updated with ``metadata``, then
    ``title``, ``summary`` and one ``## heading`` per entry of ``sections`` (already Markdown)."""
    meta = {k: v for k, v in read_card_metadata(source).items() if k not in NOT_INHERITED}
    new = metadata or {}
    dropped: set[str] = set()
    if meta.get("pipeline_tag") and new.get("pipeline_tag") not in (None, meta["pipeline_tag"]):  # another use
        dropped = ({str(meta.get("pipeline_tag")), str(meta.get("library_name"))} | USE_TAGS) - \
            {str(new.get("pipeline_tag")), str(new.get("library_name"))}
    tags = list(dict.fromkeys([*(t for t in meta.get("tags") or [] if str(t) not in dropped), "bertscope"]))
    meta.update({k: v for k, v in (metadata or {}).items() if v is not None})
    meta["tags"] = list(dict.fromkeys([*tags, *(metadata or {}).get("tags", [])]))
    if base_model and "base_model" not in (metadata or {}):
        meta["base_model"] = base_model
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()
    body = [f"# {title}", "", summary.strip(), ""]
    for heading, text in sections.items():
        body += [f"## {heading}", "", text.strip(), ""]
    body += [f"_Made with bertscope {__version__}._", ""]
    return f"---\n{front}\n---\n\n" + "\n".join(body)


def write_model_card(folder: str | Path, title: str, **kwargs: Any) -> Path:
    """Write :func:`model_card` as ``folder/README.md`` (atomically)."""
    path = Path(folder) / "README.md"
    write_text_atomic(path, model_card(title, **kwargs))
    return path
