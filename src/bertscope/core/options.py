"""The option language: one grammar for every list-like option of every command, parsed by pure functions.

**Index lists** (``--layer``, ``--layers``, ``--duplicate``, ``--remove``, ``--layer-map``, ``--dims idx:LIST``,
``--freeze layers:LIST``) are comma-separated items, each one of

* ``all``: every index, ascending;
* ``N``: one index; ``-N`` counts from the top (``-1`` = the last index);
* ``A-B``: the inclusive range, ascending; either end may be negative (``-3--1`` = the last three).

Spaces around items and around a range's dash are ignored, and spaces alone also separate items (``3 6``); ``0 -3``
could be either, so it is refused. Empty items (``0,,3``, a trailing comma) are skipped. Each option keeps the order
and uniqueness its command needs: scans (``layers``, ``reconstruct``, ``layer-scan``, ``--duplicate``, ``--remove``)
read a sorted set; what the head concatenates (``finetune --layer``, ``--dims idx:``) keeps the order given and
refuses repeats; ``--layer-map`` keeps order and repeats.

**Two layer numberings** exist, because changing either would change results, and their parsers are named apart:

* *hidden-state index* 0..L (:func:`parse_hidden_states`): 0 = the embedding output, l = the output of transformer
  layer l. ``finetune --layer``, ``layers --layers``, ``reconstruct --layers``, ``--freeze layers:``, the feature cache.
* *transformer-layer (block) index* 0..L-1 (:func:`parse_blocks`, :func:`parse_layer_map`): the l-th block of the
  stack, 0 = the first. ``deepen --duplicate/--remove/--layer-map``, ``layer-scan --layers``.

Block b's output is hidden state b + 1. Every error is one line naming the option, the valid indices and the accepted
forms. Counts (``dims --k``), token strategies (``--token``, ``tokens --tokens``) name lists (``--tasks``,
``--eval-split``) and seed lists (``--seeds``) use the same comma lists.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bertscope.core.errors import BertscopeError

__all__ = [
    "BLOCK",
    "DIMS_FORMS",
    "FREEZE_FORMS",
    "HIDDEN_STATE",
    "INDEX_FORMS",
    "NUMBERING_NOTES",
    "SEED_FORMS",
    "TOKEN_FORMS",
    "TOKEN_METHODS",
    "FreezeSpec",
    "canonical_token",
    "dims_form",
    "parse_blocks",
    "parse_dims",
    "parse_freeze",
    "parse_hidden_states",
    "parse_k_list",
    "parse_layer_map",
    "parse_name_list",
    "parse_seed_list",
    "parse_token",
    "parse_token_list",
]

#: Values of the ``layer_numbering`` key in result files.
HIDDEN_STATE = "hidden_state"
BLOCK = "block"
NUMBERING_NOTES = {
    HIDDEN_STATE: "hidden-state index 0..L: 0 = embedding output, l = output of transformer layer l",
    BLOCK: "transformer-layer (block) index 0..L-1: 0 = the first transformer layer; block b outputs hidden state b+1",
}

TOKEN_METHODS = ("cls", "max-norm", "mean", "max", "index")
INDEX_FORMS = "all, N, -N (from the top: -1 = the last), A-B (inclusive), or a comma list of these"
TOKEN_FORMS = "cls, max-norm, mean, max or index:K (position K; negative from the end, index:-1 = [SEP])"
DIMS_FORMS = "all, first:K, random:K (seeded) or idx:LIST (LIST: " + INDEX_FORMS + ")"
FREEZE_FORMS = ("none, embeddings, encoder, or layers:LIST of hidden-state indices (0 = embeddings, 1..L = "
                "transformer layers; e.g. layers:0-3)")

_NUMBER = re.compile(r"[+-]?\d+", re.ASCII)
_RANGE = re.compile(r"([+-]?\d+)-([+-]?\d+)", re.ASCII)
_SPACED_DASH = re.compile(r"(?<=\d)\s*-\s+", re.ASCII)  # "0 - 3", "0- 3": a range's dash with spaces
_AMBIGUOUS = re.compile(r"\d\s+-\d", re.ASCII)           # "0 -3": a range, or 0 and -3?


@dataclass(frozen=True)
class _Numbering:
    """What an index list counts, for error messages: ``size`` indices, described for a model of that size."""

    noun: str
    size: int
    describe: str


def _hidden_states(num_layers: int) -> _Numbering:
    return _Numbering("hidden-state index", num_layers + 1,
                      f"this model's hidden-state indices run 0..{num_layers} (0 = embedding output, "
                      f"{num_layers} = output of the last transformer layer)")


def _blocks(num_layers: int) -> _Numbering:
    return _Numbering("transformer-layer index", num_layers,
                      f"this model's transformer-layer indices run 0..{num_layers - 1} (0 = the first transformer "
                      "layer; counted without the embeddings)")


def _dimensions(hidden_size: int) -> _Numbering:
    return _Numbering("dimension index", hidden_size,
                      f"dimension indices run 0..{hidden_size - 1} (the hidden size is {hidden_size})")


def _error(option: str, spec: object, problem: str, numbering: _Numbering | None = None,
           forms: str = INDEX_FORMS) -> BertscopeError:
    where = f"; {numbering.describe}" if numbering is not None else ""
    return BertscopeError(f"{option} {str(spec).strip()!r}: {problem}{where}; accepted: {forms}")


# ------------------------------------------------------------------------------------------------ index lists


def _items(spec: str | int | Sequence[int | str], option: str, forms: str, shown: object = None) -> list[str]:
    """The items of an index list, as strings, in the order given (empty items dropped); errors quote ``shown``
    (the whole option value) when the list is part of it (``idx:LIST``)."""
    shown = spec if shown is None else shown
    if isinstance(spec, int):
        return [str(spec)]
    if not isinstance(spec, str):
        return [item for value in spec for item in _items(str(value), option, forms, shown)]
    items: list[str] = []
    for chunk in spec.split(","):
        chunk = _SPACED_DASH.sub("-", chunk.strip())
        if _AMBIGUOUS.search(chunk):
            raise _error(option, shown, f"{chunk!r} is ambiguous (a range, or a list with a negative index?); "
                                       "use no spaces in a range (A-B) and a comma between items", forms=forms)
        items += [item.lower() for item in chunk.split()]
    return items


def _expand(spec: str | int | Sequence[int | str], numbering: _Numbering, option: str,
            forms: str = INDEX_FORMS, shown: object = None) -> list[int]:
    """Every index an index list names, in the order given, repeats kept (``all`` and ranges ascending)."""
    size = numbering.size
    shown = spec if shown is None else shown

    def index(text: str) -> int:
        value = int(text)
        absolute = value + size if value < 0 else value
        if not 0 <= absolute < size:
            top = f" (or -1..-{size} from the top)" if size else ""
            raise _error(option, shown, f"{numbering.noun} {text} is out of range{top}", numbering, forms)
        return absolute

    out: list[int] = []
    for item in _items(spec, option, forms, shown):
        if item == "all":
            out += range(size)
        elif _NUMBER.fullmatch(item):
            out.append(index(item))
        elif match := _RANGE.fullmatch(item):
            lo, hi = index(match.group(1)), index(match.group(2))
            if lo > hi:
                counted = "" if item == f"{lo}-{hi}" else f" (= {lo}-{hi})"
                raise _error(option, shown, f"the range {item}{counted} runs backwards; write {hi}-{lo}", numbering,
                             forms)
            out += range(lo, hi + 1)
        else:
            raise _error(option, shown, f"{item!r} is not a {numbering.noun}", numbering, forms)
    return out


def _distinct(values: list[int], spec: object, numbering: _Numbering, option: str, forms: str) -> tuple[int, ...]:
    """``values`` in the order given; naming one twice is an error (the head would read it twice)."""
    seen: set[int] = set()
    for value in values:
        if value in seen:
            raise _error(option, spec, f"names {numbering.noun} {value} twice", numbering, forms)
        seen.add(value)
    return tuple(values)


def parse_hidden_states(spec: str | int | Sequence[int | str] | None, num_layers: int, *, option: str = "--layers",
                        keep_order: bool = False, default_all: bool = False) -> tuple[int, ...]:
    """Hidden-state indices 0..L (0 = embedding output, l = output of transformer layer l) from an index list.

    ``keep_order``: the order given, repeats refused (what a head concatenates: ``finetune --layer``); otherwise a
    sorted set (a scan). ``default_all``: no value or a blank one means every index 0..L.
    """
    numbering = _hidden_states(num_layers)
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        if default_all:
            return tuple(range(num_layers + 1))
        raise _error(option, "", "no index given", numbering)
    values = _expand(spec, numbering, option)
    if not values:
        raise _error(option, spec, "no index given", numbering)
    return _distinct(values, spec, numbering, option, INDEX_FORMS) if keep_order else tuple(sorted(set(values)))


def parse_blocks(spec: str | Sequence[int | str] | None, num_layers: int, *, option: str = "--layers",
                 default_all: bool = False) -> tuple[int, ...]:
    """Transformer-layer (block) indices 0..L-1 (0 = the first transformer layer) from an index list, sorted, each
    once. ``default_all``: no value or a blank one means every block."""
    numbering = _blocks(num_layers)
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        if default_all:
            return tuple(range(num_layers))
        raise _error(option, "", "no transformer layer given", numbering)
    values = _expand(spec, numbering, option)
    if not values:
        raise _error(option, spec, "no transformer layer given", numbering)
    return tuple(sorted(set(values)))


def parse_layer_map(spec: str | Sequence[int | str] | None, num_layers: int, *,
                    option: str = "--layer-map") -> tuple[int, ...]:
    """The new stack as source transformer-layer (block) indices 0..L-1, order and repeats kept (``0,1,2,2,3``; ranges
    expand: ``0-2,2-3`` is the same map)."""
    numbering = _blocks(num_layers)
    values = [] if spec is None else _expand(spec, numbering, option)
    if not values:
        raise _error(option, spec or "", "the map is empty; a model needs at least one layer", numbering)
    return tuple(values)


# ------------------------------------------------------------------------------------------------ freezing


@dataclass(frozen=True)
class FreezeSpec:
    """A parsed ``--freeze``: ``kind`` is none, embeddings, encoder or layers; ``hidden_states`` the frozen
    hidden-state indices of ``layers:`` (0 = the embeddings, l = transformer layer l), sorted."""

    kind: str
    hidden_states: tuple[int, ...] = ()


def parse_freeze(spec: str, num_layers: int, *, option: str = "--freeze") -> FreezeSpec:
    """``none``, ``embeddings``, ``encoder`` or ``layers:LIST`` (hidden-state indices: 0 = embeddings)."""
    text = spec.strip().lower()
    if text in ("none", "embeddings", "encoder"):
        return FreezeSpec(text)
    kind, colon, rest = text.partition(":")
    if kind.strip() != "layers" or not colon:
        raise _error(option, spec, "unknown freezing policy", forms=FREEZE_FORMS)
    indices = _expand(rest, _hidden_states(num_layers), option, FREEZE_FORMS, shown=spec)
    if not indices:
        raise _error(option, spec, "no layer given", _hidden_states(num_layers), FREEZE_FORMS)
    return FreezeSpec("layers", tuple(sorted(set(indices))))


# ------------------------------------------------------------------------------------------------ dimensions


def _count(text: str, option: str, spec: str, forms: str) -> int:
    if not _NUMBER.fullmatch(text.strip()):
        raise _error(option, spec, f"{text.strip()!r} is not a whole number", forms=forms)
    return int(text)


def dims_form(spec: str, *, option: str = "--dims") -> tuple[str, int | None]:
    """The form of a ``--dims`` value, checked without the model: ``(all|idx, None)`` or ``(first|random, K)``."""
    text = spec.strip().lower()
    if text == "all":
        return "all", None
    kind, colon, arg = text.partition(":")
    kind = kind.strip()
    if colon and kind in ("first", "random"):
        k = _count(arg, option, spec, DIMS_FORMS)
        if k < 1:
            raise _error(option, spec, "K must be at least 1", forms=DIMS_FORMS)
        return kind, k
    if colon and kind == "idx":
        return "idx", None
    raise _error(option, spec, "unknown dimension choice", forms=DIMS_FORMS)


def parse_dims(spec: str, hidden_size: int, seed: int = 0, *, option: str = "--dims") -> tuple[int, ...]:
    """Dimension indices 0..H-1 from ``all``, ``first:K``, ``random:K`` (seeded by ``seed``; sorted) or ``idx:LIST``
    (an index list, kept in the order given, each index once)."""
    kind, k = dims_form(spec, option=option)
    if kind == "all":
        return tuple(range(hidden_size))
    numbering = _dimensions(hidden_size)
    if k is not None:
        if k > hidden_size:
            raise _error(option, spec, f"K must be in 1..{hidden_size} (the hidden size)", forms=DIMS_FORMS)
        if kind == "first":
            return tuple(range(k))
        return tuple(sorted(random.Random(seed).sample(range(hidden_size), k)))
    arg = spec.partition(":")[2]
    values = _expand(arg, numbering, option, DIMS_FORMS, shown=spec)
    if not values:
        raise _error(option, spec, "give at least one index after idx:", numbering, DIMS_FORMS)
    return _distinct(values, spec, numbering, option, DIMS_FORMS)


def parse_k_list(spec: str, hidden_size: int, *, option: str = "--k") -> tuple[int, ...]:
    """Numbers of dimensions 1..H from ``1,2,3,all`` (``all`` = H; ranges ``A-B`` inclusive), sorted, each once."""
    forms = f"a comma list of K in 1..{hidden_size}, ranges A-B, or all (= {hidden_size}, the hidden size)"
    out: set[int] = set()
    for item in _items(spec, option, forms):
        if item == "all":
            out.add(hidden_size)
            continue
        match = _RANGE.fullmatch(item)
        lo, hi = (int(match.group(1)), int(match.group(2))) if match else (_count(item, option, spec, forms),) * 2
        for k in (lo, hi):
            if not 1 <= k <= hidden_size:
                raise _error(option, spec, f"K = {k} is out of range 1..{hidden_size} (the hidden size)", forms=forms)
        if lo > hi:
            raise _error(option, spec, f"the range {item} runs backwards; write {hi}-{lo}", forms=forms)
        out.update(range(lo, hi + 1))
    if not out:
        raise _error(option, spec, "no K given", forms=forms)
    return tuple(sorted(out))


# ------------------------------------------------------------------------------------------------ tokens and names


def parse_token(spec: str, *, option: str = "--token") -> tuple[str, int | None]:
    """``cls``, ``max-norm`` (also ``maxnorm``, ``max_norm``), ``mean``, ``max`` or ``index:K`` -> (method, K or None)."""
    text = spec.strip().lower().replace("_", "-")
    if text in ("maxnorm", "max-norm"):
        return "max-norm", None
    if text in ("cls", "mean", "max"):
        return text, None
    match = re.fullmatch(r"index:\s*(-?\d+)", text, re.ASCII)
    if match:
        return "index", int(match.group(1))
    raise _error(option, spec, "unknown token strategy", forms=TOKEN_FORMS)


def canonical_token(spec: str, *, option: str = "--token") -> str:
    """The canonical spelling of a token strategy (``maxnorm`` -> ``max-norm``, ``INDEX:2`` -> ``index:2``)."""
    method, index = parse_token(spec, option=option)
    return f"index:{index}" if method == "index" else method


def parse_token_list(spec: str, *, option: str = "--tokens") -> tuple[str, ...]:
    """Canonical token strategies from a comma list, in the order given, each once."""
    tokens = tuple(dict.fromkeys(canonical_token(t, option=option) for t in spec.split(",") if t.strip()))
    if not tokens:
        raise _error(option, spec, "no token strategy given", forms="a comma list of " + TOKEN_FORMS)
    return tokens


_WORDS = {1: "one", 2: "two", 3: "three"}


def parse_name_list(spec: str | None, *, option: str, at_least: int = 1, example: str = "") -> tuple[str, ...]:
    """Names from a comma list (``sst2,rte,cola``), spaces stripped, in the order given; their meaning is the
    caller's (GLUE task names, split names)."""
    names = tuple(t.strip() for t in (spec or "").split(",") if t.strip())
    if len(names) < at_least:
        hint = f", e.g. {example}" if example else ""
        raise BertscopeError(f"{option} needs at least {_WORDS.get(at_least, str(at_least))} comma-separated "
                             f"name{'s' if at_least > 1 else ''}{hint}")
    return names


SEED_FORMS = "a comma list of whole numbers >= 0 and ranges A-B (inclusive), e.g. 1,2,3 or 1-5"


def parse_seed_list(spec: str, *, option: str = "--seeds") -> tuple[int, ...]:
    """Seeds from ``1,2,3`` or ``1-5`` (ranges inclusive, ascending), in the order given, each once.

    A seed list names replicates, so a repeat (``1,1``) is refused rather than silently counted twice."""
    out: list[int] = []
    for item in _items(spec, option, SEED_FORMS):
        match = _RANGE.fullmatch(item)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if lo > hi:
                raise _error(option, spec, f"the range {item} runs backwards; write {hi}-{lo}", forms=SEED_FORMS)
            values = list(range(lo, hi + 1))
        else:
            values = [_count(item, option, spec, SEED_FORMS)]
        for value in values:
            if value < 0:
                raise _error(option, spec, f"seed {value} is negative", forms=SEED_FORMS)
            if value in out:
                raise _error(option, spec, f"names seed {value} twice", forms=SEED_FORMS)
            out.append(value)
    if not out:
        raise _error(option, spec, "no seed given", forms=SEED_FORMS)
    return tuple(out)
