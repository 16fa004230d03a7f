"""Where sentences come from: the built-in English sample, a text file, or a GLUE task split.

Every source returns a :class:`TextSource`: the sentences plus a description (kind, file, task, counts and a
SHA-256 of the sentences) that is written into result files and keys the fitted-head cache. A subset asked for with
``max_examples`` is a seeded random choice that keeps the source order, so the same seed gives the same sentences.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bertscope.errors import BertscopeError, DataError

__all__ = [
    "BUILTIN_NAME",
    "TextSource",
    "builtin_sentences",
    "glue_sentences",
    "load_texts",
    "read_text_file",
    "sentences_digest",
    "subset",
]

BUILTIN_NAME = "builtin"


def sentences_digest(sentences: list[str]) -> str:
    """SHA-256 of the sentences joined by newlines: identifies a corpus in result files and cache keys."""
    return hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TextSource:
    """A list of sentences and where they came from."""

    sentences: tuple[str, ...]
    kind: str
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.details, "num_sentences": len(self.sentences),
                "sha256": sentences_digest(list(self.sentences))}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def builtin_sentences() -> list[str]:
    """The built-in sample: a few hundred original English sentences on varied topics, written for bertscope."""
    text = resources.files("bertscope").joinpath("data/sentences.txt").read_text(encoding="utf-8")
    return _lines(text)


def read_text_file(path: str | Path) -> list[str]:
    """Non-blank lines of a UTF-8 text file, stripped (one sentence per line; ``#`` comment lines are skipped)."""
    file = Path(path).expanduser()
    if not file.exists():
        raise DataError(f"text file {path} does not exist")
    if not file.is_file():
        raise DataError(f"text file {path} is not a file")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"text file {path} is not UTF-8 (byte {exc.start}); convert it to UTF-8") from None
    except OSError as exc:
        raise DataError(f"cannot read text file {path}: {exc.strerror or exc}") from None
    sentences = _lines(text)
    if not sentences:
        raise DataError(f"text file {path} holds no sentences (it is empty or only blank/comment lines)")
    return sentences


def glue_sentences(task: str, split: str, data_dir: str | None = None, max_examples: int | None = None,
                   seed: int = 0) -> tuple[list[str], dict[str, Any]]:
    """Sentences of a GLUE split; each text of a sentence pair becomes a sentence of its own (first, then second).

    ``max_examples`` limits the *examples* read (a seeded subset chosen by :mod:`bertscope.glue`); the caller cuts
    the sentence list afterwards.
    """
    try:
        from bertscope import glue
    except ImportError:  # pragma: no cover - glue.py is part of the package
        raise BertscopeError("GLUE support is not installed in this bertscope build") from None
    data = glue.load_split(task, split, data_dir=data_dir, max_examples=max_examples, seed=seed)
    sentences = [text.strip() for example in data.examples for text in example.texts if text and text.strip()]
    provenance = data.provenance() if hasattr(data, "provenance") else {"task": task, "split": split}
    details: dict[str, Any] = {**provenance, "pairs_as": "separate sentences"}
    if not sentences:
        raise DataError(f"GLUE {task} {split} holds no sentences")
    return sentences, details


def subset(sentences: list[str], max_examples: int | None, seed: int) -> list[str]:
    """A seeded random subset of at most ``max_examples`` sentences, in source order (all when None or enough)."""
    if max_examples is None or max_examples >= len(sentences):
        return list(sentences)
    keep = sorted(random.Random(seed).sample(range(len(sentences)), max_examples))
    return [sentences[i] for i in keep]


def load_texts(
    *,
    texts: str | None = None,
    task: str | None = None,
    split: str = "validation",
    data_dir: str | None = None,
    max_examples: int | None = None,
    seed: int = 0,
) -> TextSource:
    """The sentences a command works on: ``texts`` (a file, or ``builtin``), a GLUE ``task`` split, else built-in."""
    if texts is not None and task is not None:
        raise BertscopeError("give either --texts or --task, not both")
    if task is not None:
        sentences, details = glue_sentences(task, split, data_dir, max_examples, seed)
        # pairs give two sentences per example; keep the first max_examples (whole examples come first)
        chosen = sentences[:max_examples] if max_examples is not None else sentences
        return TextSource(tuple(chosen), "glue", {**details, "max_examples": max_examples, "seed": seed})
    if texts is None or texts == BUILTIN_NAME:
        sentences, details = builtin_sentences(), {"file": "bertscope/data/sentences.txt"}
        kind = BUILTIN_NAME
    else:
        sentences, details, kind = read_text_file(texts), {"file": str(Path(texts).expanduser().resolve())}, "file"
    chosen = subset(sentences, max_examples, seed)
    return TextSource(tuple(chosen), kind, {**details, "available": len(sentences), "max_examples": max_examples,
                                            "seed": seed})
