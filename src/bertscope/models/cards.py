"""Model cards: the README.md that every folder bertscope saves carries (Hugging Face's card format).

A card is YAML front matter (the hub reads ``license``, ``tags``, ``base_model``, ``library_name``, ``pipeline_tag``,
``datasets``...) followed by Markdown. The source checkpoint's own card metadata (its license above all) is kept, and
bertscope's facts are added: what was done to the model, its measured numbers, the bertscope version, how to load it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bertscope._version import __version__
from bertscope.core.results import write_text_atomic

__all__ = ["model_card", "read_card_metadata", "write_model_card"]

# Front-matter keys that describe the source model itself, not a model made from it: its evaluation results and its
# own parent. Inheriting them would credit the new model with numbers measured on another one.
NOT_INHERITED = ("model-index", "base_model", "base_model_relation")


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
    tags = list(dict.fromkeys([*(meta.get("tags") or []), "bertscope"]))
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
