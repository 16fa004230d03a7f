"""Where sentences come from: the built-in English sample, a text file, or a GLUE task split.

Every source returns a :class:`TextSource`: the sentences plus a description (kind, file, task, counts and a
SHA-256 of the sentences) that is written into result files and keys the fitted-head cache. A subset asked for with
``max_examples`` is a seeded random choice that keeps the source order, so the same seed gives the same sentences.

A fitted head must never be measured on its own fit text, so the built-in sample is split once, by a
hash of each normalised sentence, into two fixed halves: ``builtin`` (the *measure* half, the default decode text)
and ``builtin-fit`` (the half a head may be fitted on when nothing larger is at hand). The default fit corpus is the
GLUE training texts (:func:`glue_fit_corpus`), from which every GLUE dev/test sentence and every built-in sentence is
removed. :func:`overlap` compares two texts after :func:`normalise` (NFKC, case-folded, letters and digits only, so
"it 's" matches "It's").
"""

from __future__ import annotations

import hashlib
import logging
import random
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bertscope.core.errors import BertscopeError, DataError

__all__ = [
    "BUILTIN_ALL_NAME",
    "BUILTIN_FIT_NAME",
    "BUILTIN_NAME",
    "FIT_CORPUS_CHOICES",
    "FIT_GLUE_TASKS",
    "OVERLAP_POLICIES",
    "TextSource",
    "builtin_part",
    "builtin_sentences",
    "check_overlap",
    "glue_fit_corpus",
    "glue_sentences",
    "load_texts",
    "normalise",
    "overlap",
    "read_text_file",
    "resolve_fit_corpus",
    "sentences_digest",
    "subset",
]

_log = logging.getLogger("bertscope")

BUILTIN_NAME = "builtin"  # the measure half of the built-in sample: the default decode text
BUILTIN_FIT_NAME = "builtin-fit"  # the fit half: the fallback fit corpus
BUILTIN_ALL_NAME = "builtin-all"  # both halves (never a default: a head fitted on builtin-fit overlaps it)
_BUILTIN_FILE = "bertscope/data/sentences.txt"
#: GLUE tasks whose training texts form the default fit corpus (small enough to read in a second or two)
FIT_GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")
FIT_CORPUS_CHOICES = ("auto", "glue", "builtin", "source")  # or a text file
OVERLAP_POLICIES = ("refuse", "allow")


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


def normalise(sentence: str) -> str:
    """The form two sentences are compared in: NFKC, case-folded, letters and digits only (spacing, punctuation and
    tokenisation artefacts such as SST-2's "it 's" do not hide a match)."""
    return "".join(c for c in unicodedata.normalize("NFKC", sentence).casefold() if c.isalnum())


def builtin_sentences() -> list[str]:
    """The built-in sample: a few hundred original English sentences on varied topics, written for bertscope."""
    text = resources.files("bertscope").joinpath("data/sentences.txt").read_text(encoding="utf-8")
    return _lines(text)


def _in_measure_half(sentence: str) -> bool:
    return hashlib.sha256(normalise(sentence).encode("utf-8")).digest()[0] % 2 == 0


def builtin_part(name: str = BUILTIN_NAME) -> list[str]:
    """One part of the built-in sample: ``builtin`` (measure half), ``builtin-fit`` (fit half) or ``builtin-all``.

    The halves are fixed by a hash of each normalised sentence (146 + 146 of the 292 sentences), so adding a
    sentence to the file never moves another one across.
    """
    sentences = builtin_sentences()
    if name == BUILTIN_ALL_NAME:
        return sentences
    if name not in (BUILTIN_NAME, BUILTIN_FIT_NAME):
        raise BertscopeError(f"unknown part of the built-in sample {name!r}; "
                             f"use {BUILTIN_NAME}, {BUILTIN_FIT_NAME} or {BUILTIN_ALL_NAME}")
    measure = name == BUILTIN_NAME
    return [s for s in sentences if _in_measure_half(s) == measure]


_BUILTIN_PARTS = {
    BUILTIN_NAME: "measure half (never used to fit a head)",
    BUILTIN_FIT_NAME: "fit half (the fallback fit corpus)",
    BUILTIN_ALL_NAME: "both halves",
}


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

    ``max_examples`` limits the *examples* read (a seeded subset chosen by :mod:`bertscope.data.glue`); the caller cuts
    the sentence list afterwards.
    """
    try:
        from bertscope.data import glue
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
    """The sentences a command works on: ``texts`` (a file, or ``builtin`` / ``builtin-fit`` / ``builtin-all``), a
    GLUE ``task`` split, else the built-in sample's measure half."""
    if texts is not None and task is not None:
        raise BertscopeError("give either --texts or --task, not both")
    if task is not None:
        sentences, details = glue_sentences(task, split, data_dir, max_examples, seed)
        # pairs give two sentences per example; keep the first max_examples (whole examples come first)
        chosen = sentences[:max_examples] if max_examples is not None else sentences
        return TextSource(tuple(chosen), "glue", {**details, "max_examples": max_examples, "seed": seed})
    if texts is None or texts in _BUILTIN_PARTS:
        part = texts or BUILTIN_NAME
        sentences, details = builtin_part(part), {"file": _BUILTIN_FILE, "part": part,
                                                  "part_note": _BUILTIN_PARTS[part]}
        kind = BUILTIN_NAME
    else:
        sentences, details, kind = read_text_file(texts), {"file": str(Path(texts).expanduser().resolve())}, "file"
    chosen = subset(sentences, max_examples, seed)
    return TextSource(tuple(chosen), kind, {**details, "available": len(sentences), "max_examples": max_examples,
                                            "seed": seed})


# ------------------------------------------------------------------------------------------- the fit corpus


def glue_fit_corpus(data_dir: str | None = None, tasks: Sequence[str] = FIT_GLUE_TASKS) -> TextSource:
    """The training texts of the GLUE ``tasks`` (local folder ``data_dir`` / ``$BERTSCOPE_GLUE_DIR``, else the hub).

    Pairs give two sentences; duplicates (after :func:`normalise`) are kept once; every sentence that also occurs in
    a dev or test split of these tasks, or in the built-in sample, is removed, so no default decode text overlaps.
    A task whose files are missing is skipped (and named); the hub being unreachable stops at the first task.
    """
    from bertscope.core.errors import HubUnreachableError
    from bertscope.data import glue

    train: list[str] = []
    held_out: set[str] = {normalise(s) for s in builtin_sentences()}
    used: list[str] = []
    skipped: dict[str, str] = {}
    sources: dict[str, str] = {}
    for task in tasks:
        info = glue.get_task(task)
        try:
            data = glue.load_split(info.name, "train", data_dir=data_dir, bad_rows="skip")
        except HubUnreachableError:
            raise
        except (DataError, OSError) as exc:
            skipped[info.name] = str(exc).splitlines()[0]
            continue
        used.append(info.name)
        sources[info.name] = data.source
        train.extend(text.strip() for ex in data.examples for text in ex.texts if text and text.strip())
        for split in info.splits:
            if split == "train":
                continue
            try:
                other = glue.load_split(info.name, split, data_dir=data_dir, bad_rows="skip")
            except (DataError, OSError):
                continue  # a missing dev/test file holds nothing to exclude
            held_out.update(normalise(t) for ex in other.examples for t in ex.texts if t and t.strip())
    if not train:
        raise DataError("no GLUE training texts found for the fit corpus (" +
                        "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")")
    seen: set[str] = set()
    kept: list[str] = []
    removed = 0
    for sentence in train:
        key = normalise(sentence)
        if not key or key in seen:
            continue
        seen.add(key)
        if key in held_out:
            removed += 1
            continue
        kept.append(sentence)
    details = {"tasks": used, "split": "train", "files": sources, "skipped_tasks": skipped,
               "pairs_as": "separate sentences", "duplicates": "kept once (after normalisation)",
               "removed_eval_or_builtin": removed,
               "excluded": "sentences of these tasks' dev/test splits and of the built-in sample"}
    return TextSource(tuple(kept), "glue-train", details)


def resolve_fit_corpus(choice: str, measured: TextSource, data_dir: str | None = None) -> TextSource:
    """The text a head is fitted on, per ``--fit-corpus``.

    ``auto`` (default): the GLUE training texts when a local GLUE folder or the hub is at hand, else the built-in
    sample's fit half with a warning that it is small; ``glue``: the GLUE training texts or an error; ``builtin``:
    the built-in fit half; ``source``: the measured sentences themselves (an overlap, refused unless allowed); any
    other value: a text file.
    """
    if choice in ("auto", "glue"):
        try:
            return glue_fit_corpus(data_dir)
        except BertscopeError as exc:
            if choice == "glue":
                raise
            reason = str(exc).splitlines()[0]
        _log.warning("no GLUE training texts at hand (%s); fitting the head on the built-in fit half (%d "
                     "sentences), a small corpus: expect a weaker head. Set BERTSCOPE_GLUE_DIR or --data-dir "
                     "to a GLUE folder for a stronger one", reason, len(builtin_part(BUILTIN_FIT_NAME)))
        fallback = builtin_part(BUILTIN_FIT_NAME)
        return TextSource(tuple(fallback), BUILTIN_FIT_NAME, {
            "file": _BUILTIN_FILE, "part": BUILTIN_FIT_NAME, "fallback_because": reason,
            "warning": f"small fit corpus ({len(fallback)} sentences): GLUE training texts were not at hand"})
    if choice in ("builtin", BUILTIN_FIT_NAME):
        return TextSource(tuple(builtin_part(BUILTIN_FIT_NAME)), BUILTIN_FIT_NAME,
                          {"file": _BUILTIN_FILE, "part": BUILTIN_FIT_NAME})
    if choice == "source":
        return TextSource(measured.sentences, "source", {"source": measured.describe()})
    if choice == BUILTIN_ALL_NAME:
        return TextSource(tuple(builtin_part(choice)), BUILTIN_ALL_NAME, {"file": _BUILTIN_FILE, "part": choice})
    return TextSource(tuple(read_text_file(choice)), "file", {"file": str(Path(choice).expanduser().resolve())})


def overlap(fit: Iterable[str], measured: Sequence[str]) -> list[int]:
    """Indices of the ``measured`` sentences that also occur in ``fit`` (exact match after :func:`normalise`)."""
    keys = {normalise(s) for s in fit}
    keys.discard("")
    return [i for i, s in enumerate(measured) if normalise(s) in keys]


def check_overlap(fit: TextSource, measured: TextSource, policy: str = "refuse") -> dict[str, Any]:
    """Refuse (``refuse``, the default) or flag (``allow``) measured sentences that are in the fit corpus.

    Returns what the result files record under ``head.fit_overlap``; raises a one-line error under ``refuse``.
    """
    if policy not in OVERLAP_POLICIES:
        raise BertscopeError(f"--fit-overlap must be one of {', '.join(OVERLAP_POLICIES)}; got {policy!r}")
    hits = overlap(fit.sentences, measured.sentences)
    total = len(measured.sentences)
    report: dict[str, Any] = {"policy": policy, "measured_in_fit": len(hits), "measured": total,
                              "share": len(hits) / total if total else 0.0, "flagged": bool(hits),
                              "match": "exact sentence after normalisation (NFKC, case-folded, letters/digits)",
                              "examples": [measured.sentences[i] for i in hits[:3]]}
    if hits and policy == "refuse":
        example = measured.sentences[hits[0]]
        raise BertscopeError(
            f"{len(hits)} of the {total} measured sentences are in the head's fit corpus ({fit.kind}), e.g. "
            f"{example[:60]!r}: a head scored on its own fit text measures memory; measure other text, fit on "
            "another --fit-corpus, or pass --fit-overlap allow to measure anyway (the result is then flagged)")
    return report
