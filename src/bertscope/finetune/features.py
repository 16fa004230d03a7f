"""On-disk cache of frozen-encoder token vectors: the fast path for studies that train many heads on one encoder.

When the encoder is frozen entirely it is a fixed feature extractor (eval mode, no dropout, no gradient), so the
vector a selecting head reads -- token strategy ``t`` of hidden layer ``l`` of example ``i`` -- never changes. This
module computes those vectors once per (model, tokenised split, token strategy) with one encoder pass and stores
them; any number of head configurations (token, layer(s), dimensions, linear/mlp2, dropout, learning rate, seed) then
train on them without running the encoder again.

Storage design (documented in docs/studies.md). Storing every token of every layer is too large for big tasks
(``N x T x (L+1) x H``), so the cache stores the *pooled* vectors, one ``.npy`` file per token strategy::

    <root>/<key>/manifest.json          what the entry holds (model, task, split, subset, max length, shapes...)
    <root>/<key>/cls.npy                float32 [N, L+1, H]: strategy "cls" of every hidden layer 0..L
    <root>/<key>/max-norm.npy           one file per strategy; a later run asking for a new strategy (index:K)
    <root>/<key>/index_-1.npy           adds its file with one more encoder pass and leaves the others alone

Together the files are the ``[N, L+1, S, H]`` array of (example, layer, strategy, dimension); they are read back as
memory maps, and a run copies only the slice it needs (``[N, n_layers_read, H]``) into memory.

Families with a final norm after the last layer (ModernBERT): the live path runs the encoder only up to the highest
layer a head reads, so that layer's output passes the final norm. For them the cache also stores each strategy of
the normed layers (``<token>@top``, file ``<token>_top.npy``) and :meth:`FeatureSet.select` uses it for the highest
layer read, so cached and live vectors stay identical.

The key is a SHA-256 of: the weights' content fingerprint (so a moved folder or a hub copy of the same weights
hits the cache, and a fine-tuned one does not), the tokenised split itself (token ids, token types and special-token
masks, which pins task, split, subset, seed, max length and tokenizer), ``include_special`` (pooling candidates), the
compute dtype and the format version. Every file is written to a temporary name and renamed; the manifest is rewritten
atomically after each strategy file is complete, so an interrupted run leaves either a usable entry or a strategy
that is computed again (a damaged or truncated strategy file is computed again and replaced). The manifest records
the SHA-256 of each strategy file; a file whose bytes no longer match it (or that has none, or holds a NaN or an
infinity) is computed again, so altered contents behind a valid header are never reused. Temporary files are
named after their owner (host, pid, start time: :mod:`bertscope.core.publish`), so the next run removes those of crashed
runs and never a live run's. Concurrent writers of one entry are serialised with a lock file (``filelock``).

The cache lives in ``--cache-dir``, else ``$BERTSCOPE_CACHE/features``, else ``~/.cache/bertscope/features``.
Imports: families, loading (the weights fingerprint), options (token spellings), packing, selection (pure token
selection), publish (owned temp names), results, errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from torch import nn

from bertscope.core import publish
from bertscope.core.device import resolve_dtype
from bertscope.core.errors import BertscopeError
from bertscope.core.options import canonical_token, parse_token
from bertscope.core.progress import Progress, progress_bar
from bertscope.core.results import file_sha256, write_json_atomic
from bertscope.finetune.selection import select_tokens
from bertscope.models import families, loading
from bertscope.models.packing import pad_rows

__all__ = [
    "DEFAULT_TOKENS",
    "FORMAT_VERSION",
    "CachedRepresentation",
    "FeatureBatch",
    "FeatureCollate",
    "FeatureSet",
    "FeatureStore",
    "cache_root",
    "data_fingerprint",
]

FORMAT_VERSION = "bertscope-features/1"
_TOP = "@top"  # suffix of the variant read when a layer below the top is the highest one read (final-norm families)
DEFAULT_TOKENS = ("cls", "max-norm", "mean", "max")
_log = logging.getLogger("bertscope")


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """``override``, else ``$BERTSCOPE_CACHE/features``, else ``~/.cache/bertscope/features``."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("BERTSCOPE_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "bertscope") / "features"


def _file_name(token: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "_", token.replace(":", "_")) + ".npy"


def data_fingerprint(data: Any) -> str:
    """SHA-256 of a tokenised split (``input_ids``, ``token_type_ids``, ``special_masks`` lists of lists)."""
    digest = hashlib.sha256()
    for name in ("input_ids", "token_type_ids", "special_masks"):
        rows = getattr(data, name, None)
        digest.update(f"|{name}:{'none' if rows is None else len(rows)}|".encode())
        for row in rows or ():
            digest.update(np.asarray(row, dtype=np.int64).tobytes())
            digest.update(b";")
    return digest.hexdigest()


@dataclass
class FeatureSet:
    """The cached vectors of one tokenised split: ``token -> memmap [N, L+1, H]`` and what it took to get them."""

    key: str
    path: Path | None
    arrays: dict[str, np.ndarray]
    manifest: dict[str, Any]
    computed: tuple[str, ...] = ()
    reused: tuple[str, ...] = ()
    encoder_examples: int = 0
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.manifest["num_examples"])

    def select(self, token: str, layers: Sequence[int]) -> torch.Tensor:
        """The vectors a head reading ``token`` of ``layers`` sees: float32 ``[N, len(layers), H]`` in memory."""
        name = canonical_token(token)
        if name not in self.arrays or name.endswith(_TOP):
            raise BertscopeError(f"feature cache {self.key} holds no token strategy {name!r} "
                                 f"(it has {', '.join(sorted(self.arrays))})")
        array = self.arrays[name]
        depth = array.shape[1] - 1
        bad = [layer for layer in layers if not 0 <= layer <= depth]
        if bad:
            raise BertscopeError(f"layer {bad[0]} out of range 0..{depth} for the cached features")
        out = torch.from_numpy(np.ascontiguousarray(array[:, list(layers), :], dtype=np.float32))
        top = max(layers)
        if name + _TOP in self.arrays and top < depth:
            # Final-norm families (ModernBERT): the live path runs the encoder only up to the highest layer read,
            # so that layer's output passes the final norm; the cache keeps those vectors too.
            normed = torch.from_numpy(np.ascontiguousarray(self.arrays[name + _TOP][:, top, :], dtype=np.float32))
            for j, layer in enumerate(layers):
                if layer == top:
                    out[:, j] = normed
        return out

    def info(self) -> dict[str, Any]:
        """What a result file records about the features it trained on."""
        return {"key": self.key, "path": None if self.path is None else str(self.path),
                "computed": list(self.computed), "reused": list(self.reused),
                "encoder_examples": self.encoder_examples, "seconds": self.seconds,
                "num_examples": len(self), "tokens": sorted(self.arrays),
                **{k: self.manifest.get(k) for k in ("task", "split", "max_length", "include_special", "dtype",
                                                     "num_layers", "hidden_size", "model_fingerprint")}}


class FeatureStore:
    """Get (from disk, or computed now and stored) the pooled token vectors of every layer of a tokenised split.

    ``use_cache=False`` computes in memory and writes nothing (same numbers, nothing reused).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, use_cache: bool = True) -> None:
        self.root = cache_root(root)
        self.use_cache = use_cache
        self._fingerprints: dict[int, str] = {}
        self._cleared = False

    def _fingerprint(self, model: nn.Module) -> str:
        # Weights of a frozen encoder do not change within a process; hash each model object once.
        key = id(model)
        if key not in self._fingerprints:
            self._fingerprints[key] = loading.weights_fingerprint(model)  # the fitted-head cache's too
        return self._fingerprints[key]

    def _clear_leftovers(self) -> None:
        """Once per store: delete the temporary files of crashed runs in every entry (a split's strategy file can
        be gigabytes); a live run's files are never touched (:func:`bertscope.core.publish.remove_stale`)."""
        if self._cleared or not self.root.is_dir():
            return
        self._cleared = True
        with contextlib.suppress(OSError):  # tidying only: a folder that cannot be listed is left as it is
            for entry in self.root.iterdir():
                if entry.is_dir():
                    publish.remove_stale(entry)

    def key(self, model: nn.Module, data: Any, *, include_special: bool, dtype: str) -> str:
        payload = {"format": FORMAT_VERSION, "model": self._fingerprint(model), "data": data_fingerprint(data),
                   "include_special": bool(include_special), "dtype": dtype}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    def get(
        self,
        model: nn.Module,
        data: Any,
        tokens: Sequence[str] = DEFAULT_TOKENS,
        *,
        include_special: bool = False,
        batch_size: int = 32,
        device: torch.device | str = "cpu",
        dtype: str = "float32",
        provenance: Mapping[str, Any] | None = None,
        progress: Progress = False,
    ) -> FeatureSet:
        """The feature set of ``data`` (an :class:`~bertscope.finetune.train.EncodedSplit`-like object) for ``tokens``.

        Strategies already on disk are memory-mapped; missing ones are computed together in one encoder pass.
        """
        wanted = list(dict.fromkeys(canonical_token(t) for t in tokens))
        if families.final_norm(model) is not None:
            wanted += [t + _TOP for t in wanted]
        start = time.perf_counter()
        key = self.key(model, data, include_special=include_special, dtype=dtype)
        depth, hidden = families.num_layers(model), families.hidden_size(model)
        shape = (len(data.input_ids), depth + 1, hidden)
        manifest: dict[str, Any] = {
            "format": FORMAT_VERSION, "key": key, "model_fingerprint": self._fingerprint(model),
            "data_fingerprint": data_fingerprint(data), "num_examples": shape[0], "num_layers": depth,
            "hidden_size": hidden, "shape_per_token": list(shape), "include_special": bool(include_special),
            "dtype": dtype, "storage_dtype": "float32", **dict(provenance or {}), "tokens": {},
        }
        arrays: dict[str, np.ndarray]
        if not self.use_cache:
            arrays = _compute(model, data, wanted, include_special=include_special, batch_size=batch_size,
                              device=device, dtype=dtype, progress=progress)
            manifest["tokens"] = {t: {"file": None} for t in wanted}
            return FeatureSet(key, None, arrays, manifest, computed=tuple(wanted), encoder_examples=shape[0],
                              seconds=time.perf_counter() - start)
        folder = self.root / key
        try:
            self._clear_leftovers()
            folder.mkdir(parents=True, exist_ok=True)
            with FileLock(folder / ".lock"):  # concurrent writers of one entry take turns
                stored = _read_manifest(folder)
                if stored is not None:
                    manifest = {**manifest, **{k: v for k, v in stored.items() if k != "tokens"},
                                "tokens": dict(stored.get("tokens", {}))}
                arrays = {}
                for token in list(manifest["tokens"]):
                    entry = manifest["tokens"][token]
                    array = _open(folder / str(entry.get("file")), shape, entry.get("sha256"))
                    if array is None:
                        del manifest["tokens"][token]  # damaged or missing: computed again below if wanted
                    elif token in wanted:
                        arrays[token] = array
                missing = [t for t in wanted if t not in arrays]
                if missing:
                    # Written straight into memory-mapped temporary .npy files (a big split need not fit in RAM),
                    # then flushed and renamed into place.
                    targets = {t: publish.temp_path(folder / _file_name(t)) for t in missing}
                    try:
                        fresh = _compute(model, data, missing, include_special=include_special,
                                         batch_size=batch_size, device=device, dtype=dtype, progress=progress,
                                         targets=targets)
                        for array in fresh.values():
                            array.flush()  # type: ignore[attr-defined]
                        del fresh
                        for tmp in targets.values():
                            with open(tmp, "rb+") as handle:
                                os.fsync(handle.fileno())
                    except BaseException:
                        for tmp in targets.values():
                            tmp.unlink(missing_ok=True)
                        raise
                    for token in missing:
                        name = _file_name(token)
                        checksum = file_sha256(targets[token])
                        os.replace(targets[token], folder / name)
                        manifest["tokens"][token] = {"file": name, "sha256": checksum,
                                                     "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                  time.gmtime())}
                        arrays[token] = _open(folder / name, shape, checksum)  # type: ignore[assignment]
                        if arrays[token] is None:
                            raise BertscopeError(f"the frozen encoder gave non-finite vectors ({token}) for "
                                                 f"{folder}; try --dtype float32")
                    write_json_atomic(folder / "manifest.json", manifest)
        except OSError as exc:
            raise BertscopeError(f"feature cache {folder} is not usable ({exc}); choose another --cache-dir") from None
        return FeatureSet(key, folder, arrays, manifest, computed=tuple(missing),
                          reused=tuple(t for t in wanted if t not in missing),
                          encoder_examples=shape[0] if missing else 0, seconds=time.perf_counter() - start)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _log.warning("ignoring unreadable feature cache manifest %s (%s)", path, exc)
        return None
    if not isinstance(values, dict) or values.get("format") != FORMAT_VERSION or not isinstance(
            values.get("tokens", {}), dict) or not all(isinstance(v, dict) for v in values.get("tokens", {}).values()):
        _log.warning("ignoring feature cache manifest %s of another format", path)
        return None
    return values


def _open(path: Path, shape: tuple[int, int, int], checksum: str | None) -> np.ndarray | None:
    """The strategy file at ``path`` memory-mapped, or None (computed again) when it is missing, of another shape,
    does not match ``checksum`` (the SHA-256 written with it; a file without one is not trusted) or holds a
    non-finite value."""
    try:
        if checksum is None:
            _log.warning("ignoring feature file %s: no checksum was written with it (an older cache)", path)
            return None
        if file_sha256(path) != checksum:
            _log.warning("ignoring feature file %s: its contents do not match the checksum written with it", path)
            return None
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        _log.warning("ignoring damaged feature file %s (%s)", path, exc)
        return None
    if array.shape != shape or array.dtype != np.float32:
        _log.warning("ignoring feature file %s of shape %s (expected %s)", path, array.shape, shape)
        return None
    if not all(np.isfinite(array[i:i + 1024]).all() for i in range(0, shape[0], 1024)):
        _log.warning("ignoring feature file %s: it holds non-finite values", path)
        return None
    return array


@torch.no_grad()
def _compute(model: nn.Module, data: Any, tokens: Sequence[str], *, include_special: bool, batch_size: int,
             device: torch.device | str, dtype: str, progress: Progress,
             targets: Mapping[str, Path] | None = None) -> dict[str, np.ndarray]:
    """One pass of the frozen encoder (eval mode) over ``data``; every strategy of every layer, float32 arrays
    (in memory, or memory-mapped ``.npy`` files at ``targets[token]``)."""

    device = torch.device(device)
    compute_dtype = resolve_dtype(dtype)
    depth, hidden = families.num_layers(model), families.hidden_size(model)
    n = len(data.input_ids)
    methods = [parse_token(t.removesuffix(_TOP)) for t in tokens]
    norm = families.final_norm(model)
    shape = (n, depth + 1, hidden)
    out = {t: (np.empty(shape, dtype=np.float32) if targets is None
               else np.lib.format.open_memmap(targets[t], mode="w+", dtype=np.float32, shape=shape)) for t in tokens}
    lengths = [len(ids) for ids in data.input_ids]
    order = sorted(range(n), key=lambda i: -lengths[i])  # longest first: little padding
    token_types = families.uses_token_type_ids(model) and data.token_type_ids is not None
    was_training = model.training
    model.eval()
    autocast = (contextlib.nullcontext() if compute_dtype == torch.float32
                else torch.autocast(device_type=device.type, dtype=compute_dtype))
    try:
        for start in progress_bar(range(0, n, batch_size), progress=progress, desc="encoding (feature cache)",
                                  unit="batch"):
            indices = order[start:start + batch_size]
            ids, mask = pad_rows([data.input_ids[i] for i in indices], int(data.pad_id))
            ids, mask = ids.to(device), mask.to(device)
            special = pad_rows([data.special_masks[i] for i in indices], 0)[0].to(device)
            kwargs = {"input_ids": ids, "attention_mask": mask}
            if token_types:
                kwargs["token_type_ids"] = pad_rows([data.token_type_ids[i] for i in indices], 0)[0].to(device)
            with autocast:
                hidden_states = model(**kwargs, output_hidden_states=True, return_dict=True).hidden_states
                normed = hidden_states
                if norm is not None and any(t.endswith(_TOP) for t in tokens):
                    normed = (*(norm(h) for h in hidden_states[:-1]), hidden_states[-1])  # the last is normed
                for token, (method, index) in zip(tokens, methods):
                    states = normed if token.endswith(_TOP) else hidden_states
                    stacked = torch.stack([select_tokens(h, mask, special, method, index=index,
                                                         include_special=include_special) for h in states],
                                          dim=1)
                    out[token][indices] = stacked.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


# ------------------------------------------------------------------------- plugging cached vectors into the loop


@dataclass
class FeatureBatch:
    """A batch of the cached path: the selected vectors ``[B, n_layers, H]``, labels and positions in the split."""

    vectors: torch.Tensor
    labels: torch.Tensor | None
    example_index: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.example_index.shape[0])


class FeatureCollate:
    """A ``collate_fn`` for :func:`bertscope.finetune.train.train_loop`: gathers cached vectors instead of padding tokens.

    ``vectors`` maps each split object the loop is given (train and eval) to its ``[N, n_layers, H]`` tensor.
    """

    def __init__(self, vectors: Mapping[int, torch.Tensor] | Sequence[tuple[Any, torch.Tensor]]) -> None:
        pairs = vectors.items() if isinstance(vectors, Mapping) else [(id(d), v) for d, v in vectors]
        self._vectors = {k: v for k, v in pairs}
        self._labels: dict[int, tuple[torch.Tensor | None, bool]] = {}

    def __call__(self, data: Any, indices: Sequence[int], *, regression: bool,
                 device: torch.device | str = "cpu") -> FeatureBatch:
        key = id(data)
        if key not in self._vectors:
            raise KeyError("FeatureCollate was given a split it has no cached vectors for")
        if key not in self._labels:
            labelled = all(label is not None for label in data.labels)
            labels = (torch.tensor(data.labels, dtype=torch.float32 if regression else torch.long)
                      if labelled else None)
            self._labels[key] = (labels, labelled)
        index = torch.as_tensor(list(indices), dtype=torch.long)
        labels, _ = self._labels[key]
        to = torch.device(device)
        return FeatureBatch(vectors=self._vectors[key].index_select(0, index).to(to),
                            labels=None if labels is None else labels.index_select(0, index).to(to),
                            example_index=index)


class CachedRepresentation:
    """The representation step of the cached path: the batch already carries its selected vectors."""

    frozen = True

    def train(self, mode: bool = True) -> CachedRepresentation:
        return self  # a frozen encoder is a fixed feature extractor: nothing to switch

    def __call__(self, batch: FeatureBatch) -> torch.Tensor:
        return batch.vectors
