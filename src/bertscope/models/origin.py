"""Where a deepened model came from: the note ``deepen`` writes into a variant's config.json, read back by the lens.

The lens decodes a deepened variant with its original's head (paper 1 keeps the original output layer), and
``compare`` borrows that head too, so both need the origin; the surgery that writes the note sits above the lens, so
the record's format lives here, with the rest of what a checkpoint says about itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bertscope.models import loading

__all__ = ["CONFIG_NOTE_KEY", "deepen_origin", "origin_source", "resolvable_source"]

#: The key of the deepen note in a variant's config.json.
CONFIG_NOTE_KEY = "bertscope_surgery"


def resolvable_source(name: str | None) -> str:
    """How a later run finds the source again: the embedded default's name, an absolute folder path, or a hub id."""
    if name is None or name in ("", "default", loading.DEFAULT_MODEL_NAME):
        return loading.DEFAULT_MODEL_NAME
    expanded = Path(os.path.expanduser(name))
    return str(expanded.resolve()) if expanded.exists() else name


def deepen_origin(config: Any) -> dict[str, Any] | None:
    """The deepen provenance a checkpoint's config records (``bertscope_surgery`` in its config.json), else None.

    The lens decodes a deepened variant with its original's head (paper 1 keeps the original output layer), so it
    needs to know where the variant came from; a folder that records nothing is decoded with its own head.
    """
    note = getattr(config, CONFIG_NOTE_KEY, None)
    return dict(note) if isinstance(note, dict) and note.get("source_model") else None


def origin_source(origin: dict[str, Any]) -> str:
    """The loadable name of a recorded origin: the resolved source when recorded,
    else the name as it was given to deepen."""
    return str(origin.get("source_model_resolved") or origin["source_model"])
