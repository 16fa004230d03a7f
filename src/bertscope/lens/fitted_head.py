"""A masked-LM head fitted on the frozen final layer, for models that ship none (e.g. the embedded MiniLM).

The head has BERT's shape: ``dense (H -> E) -> GELU -> LayerNorm -> decoder (E -> V) + bias``; by default the decoder
is tied to the model's (frozen) input embeddings, so only the transform and the bias are learned (the bias starts at
the fit corpus's smoothed log unigram frequencies). It is trained on
the final layer only, with BERT's 80/10/10 masking (15% of the non-special tokens selected; of those 80% -> [MASK],
10% -> a random token, 10% unchanged; loss on the selected tokens), and then applied to every layer by the lens.
The encoder is frozen, so each (sentence, mask draw) the fit uses is encoded once and its final-layer vectors at
the selected positions are cached in memory: the fit sees ``steps * batch_size`` such rows, one epoch (one draw
per sentence on a large corpus; on a small one, as many draws per sentence as that takes, which is what drawing
fresh masks at every step did). The cached features make the growth curve cheap: the same head is refitted on
1/8, 1/4 and 1/2 of the fit sentences and each is scored on the same held-out sentences.

Fitting is seeded and deterministic on one device. The result is saved as ``head.safetensors`` + ``head.json`` in a
cache folder keyed by a hash of the model's weights, the fit corpus, the seed and every fit option
(``$BERTSCOPE_CACHE/fitted-heads/<key>``, default ``~/.cache/bertscope``), and reused when the same fit is asked
again. Its masked-token top-1 accuracy on held-out sentences of the fit corpus is measured and recorded. An entry
that does not load (damaged, truncated) is refitted and replaced, as is one a ``refit`` asks to redo; temp folders
of crashed fits are cleared by the next fit (:mod:`bertscope.core.publish`).

Length: one concept, the fitted head: its options and cache key, the masking, the module, the cached features,
the fit, save/load and the one entry point, each used only by this fit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bertscope.core import publish
from bertscope.core.errors import BertscopeError
from bertscope.core.progress import Progress, progress_bar
from bertscope.core.results import files_match_checksums, to_jsonable, write_checksums
from bertscope.data import texts
from bertscope.data.texts import TextSource
from bertscope.models import families, loading
from bertscope.models.packing import pad_rows

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "FORMAT_VERSION",
    "FitOptions",
    "FittedHead",
    "HeadModule",
    "bert_mask",
    "cache_root",
    "fit_cache_key",
    "fit_for_texts",
    "get_fitted_head",
    "mask_seed",
    "split_heldout",
]

FORMAT_VERSION = 2  # 2: cached-feature fit, corpus-sized held-out part, growth curve
_log = logging.getLogger("bertscope")


@dataclass(frozen=True)
class FitOptions:
    """How the head is fitted; every field enters the cache key and the result files."""

    steps: int = 300
    lr: float = 6e-3
    batch_size: int = 32
    mask_prob: float = 0.15
    tie_decoder: bool = True
    heldout_fraction: float = 0.1
    heldout_mask_draws: int = 4
    max_length: int = 128
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    heldout_max_sentences: int = 256
    curve: tuple[float, ...] = (0.125, 0.25, 0.5)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise BertscopeError(f"--fit-steps must be at least 1, got {self.steps}")
        if not self.lr > 0:
            raise BertscopeError(f"--fit-lr must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise BertscopeError(f"--fit-batch-size must be at least 1, got {self.batch_size}")
        if not 0.0 < self.mask_prob < 1.0:
            raise BertscopeError(f"--fit-mask-prob must be in (0, 1), got {self.mask_prob}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise BertscopeError(f"the held-out fraction must be in (0, 1), got {self.heldout_fraction}")
        if any(not 0.0 < f < 1.0 for f in self.curve):
            raise BertscopeError(f"growth-curve fractions must be in (0, 1), got {self.curve}")


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """Where fitted heads are kept: ``override``, else ``$BERTSCOPE_CACHE``, else ``~/.cache/bertscope``."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("BERTSCOPE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bertscope"


def fit_cache_key(fingerprint: str, corpus_sha256: str, seed: int, options: FitOptions, dtype: str) -> str:
    payload = {"format": FORMAT_VERSION, "model": fingerprint, "corpus": corpus_sha256, "seed": seed,
               "dtype": dtype, "options": dataclasses.asdict(options)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def bert_mask(
    input_ids: torch.Tensor,
    candidates: torch.Tensor,
    prob: float,
    generator: torch.Generator,
    mask_token_id: int,
    vocab_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 masking of one sequence: (new ids, selected positions).

    Each candidate position is selected with probability ``prob``; a selected position becomes ``mask_token_id``
    (80%), a uniformly random token (10%) or stays unchanged (10%). ``input_ids`` and ``candidates`` are 1-D and on
    the CPU; one generator per sentence keeps the result independent of batching.
    """
    n = input_ids.shape[0]
    selected = (torch.rand(n, generator=generator) < prob) & candidates
    action = torch.rand(n, generator=generator)
    random_ids = torch.randint(vocab_size, (n,), generator=generator)
    ids = input_ids.clone()
    ids[selected & (action < 0.8)] = mask_token_id
    swap = selected & (action >= 0.8) & (action < 0.9)
    ids[swap] = random_ids[swap]
    return ids, selected


class HeadModule(nn.Module):
    """BERT-shaped MLM head: dense -> GELU -> LayerNorm -> decoder (tied to ``embedding`` or its own) + bias."""

    def __init__(self, hidden: int, embedding: torch.Tensor, *, tie_decoder: bool, eps: float = 1e-12) -> None:
        super().__init__()
        vocab, width = embedding.shape
        self.dense = nn.Linear(hidden, width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab))
        self.tie_decoder = tie_decoder
        self._tied: torch.Tensor | None = None
        self.decoder_weight: nn.Parameter | None = None
        if tie_decoder:
            self._tied = embedding  # the frozen input embeddings: not a parameter, not saved
        else:
            self.decoder_weight = nn.Parameter(embedding.detach().clone().float())

    @property
    def weight(self) -> torch.Tensor:
        weight = self._tied if self._tied is not None else self.decoder_weight
        assert weight is not None  # one of the two is set in __init__
        return weight

    def transform(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.to(self.dense.weight.dtype)
        return self.norm(nn.functional.gelu(self.dense(hidden)))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(self.dense.weight.dtype)
        return nn.functional.linear(self.transform(hidden), weight, self.bias)


@dataclass
class FittedHead:
    """A fitted head and what is known about it (written into result files under ``head.fit``)."""

    module: HeadModule
    info: dict[str, Any]

    def parts(self, model: nn.Module) -> families.HeadParts:
        """The head as :class:`~bertscope.models.families.HeadParts` for ``model`` (adds its final norm, if any)."""
        module = self.module
        dtype = next(model.parameters()).dtype
        weight = module.weight.detach().to(dtype)
        bias = module.bias.detach().to(dtype)

        def transform(h: torch.Tensor) -> torch.Tensor:
            return module.transform(h).to(dtype)

        return families.HeadParts(transform=transform, weight=weight, bias=bias, pre_norm=families.final_norm(model))


def split_heldout(sentences: Sequence[str], fraction: float, seed: int,
                  max_heldout: int | None = None) -> tuple[list[str], list[str]]:
    """(fit part, held-out part) of a corpus: a seeded share ``fraction`` (at most ``max_heldout``, at least one
    sentence) is held out; the fit part comes back in a seeded random order (the fit uses a prefix of it), the
    held-out part in corpus order."""
    if len(sentences) < 2:
        raise BertscopeError(
            f"fitting a head needs at least 2 sentences in the fit corpus (1 held out); got {len(sentences)}"
        )
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(fraction * len(sentences)))
    if max_heldout is not None:
        n_held = min(n_held, max(1, max_heldout))
    n_held = min(len(sentences) - 1, n_held)
    held = sorted(order[:n_held])
    return [sentences[i] for i in order[n_held:]], [sentences[i] for i in held]


def mask_seed(seed: int, stream: int, index: int, draw: int) -> int:
    """The generator seed of one mask draw: ``stream`` 0 = fit sentences, 1 = held-out sentences."""
    return (((seed * 1_000_003 + stream) * 10_000_019 + index) * 1_009 + draw) & 0x7FFFFFFFFFFF


def _encode(tokenizer: Any, sentences: Sequence[str], max_length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    enc = tokenizer(list(sentences), truncation=True, max_length=max_length, return_special_tokens_mask=True)
    return [(torch.tensor(ids), torch.tensor(special) == 0)
            for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"])]


def _masked_batch(
    items: Sequence[tuple[torch.Tensor, torch.Tensor]], seeds: Sequence[int], prob: float, mask_id: int,
    vocab: int, pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask a batch and pad it; returns (masked ids, attention mask, selected positions, original ids)."""
    drawn = [bert_mask(ids, candidates, prob, torch.Generator().manual_seed(seed), mask_id, vocab)
             for (ids, candidates), seed in zip(items, seeds)]
    masked, attention = pad_rows([new for new, _ in drawn], pad_id)
    selected = pad_rows([sel for _, sel in drawn], False, dtype=torch.bool)[0]
    original = pad_rows([ids for ids, _ in items], pad_id)[0]
    return masked, attention, selected, original


def _token_embeddings(model: PreTrainedModel) -> torch.Tensor:
    """The input token embeddings ``[V, E]``, detached: what a tied decoder reads."""
    embeddings = model.get_input_embeddings()
    if not isinstance(embeddings, nn.Embedding):
        raise BertscopeError(f"{type(model).__name__} has no token embedding matrix to tie a fitted decoder to")
    return embeddings.weight.detach()


def _final_hidden(model: nn.Module, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    encoder = families.base_encoder(model)
    with torch.no_grad():
        out = encoder(input_ids=ids, attention_mask=attention, output_hidden_states=True)
    return out.hidden_states[-1]


@dataclass
class _Features:
    """Final-layer vectors at the masked positions of (sentence, draw) rows, sorted by row."""

    vectors: torch.Tensor  # [T, H] float32
    targets: torch.Tensor  # [T] the original token ids
    offsets: torch.Tensor  # [rows + 1]: row r's vectors are vectors[offsets[r]:offsets[r+1]]
    draws: int

    def take(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.cat([torch.arange(int(self.offsets[r]), int(self.offsets[r + 1])) for r in rows])
        idx = idx.to(self.vectors.device)
        return self.vectors[idx], self.targets[idx]

    def upto(self, sentences: int) -> tuple[torch.Tensor, torch.Tensor]:
        end = int(self.offsets[sentences * self.draws])
        return self.vectors[:end], self.targets[:end]


def _features(model: nn.Module, items: list[tuple[torch.Tensor, torch.Tensor]], draws: int, seed: int, stream: int,
              opts: FitOptions, mask_id: int, vocab: int, pad_id: int, device: torch.device,
              progress: Progress, desc: str) -> _Features:
    """One encoder pass over every (sentence, draw): row ``i * draws + d`` holds sentence ``i`` under mask draw ``d``
    (seeded per row by :func:`mask_seed`, so nothing depends on batching)."""
    rows = [(i, d) for i in range(len(items)) for d in range(draws)]
    order = sorted(range(len(rows)), key=lambda r: -items[rows[r][0]][0].shape[0])  # little padding
    chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    step = max(opts.batch_size, 64)
    for start in progress_bar(range(0, len(order), step), progress=progress, desc=desc):
        picked = order[start:start + step]
        seeds = [mask_seed(seed, stream, rows[r][0], rows[r][1]) for r in picked]
        masked, attention, selected, original = _masked_batch(
            [items[rows[r][0]] for r in picked], seeds, opts.mask_prob, mask_id, vocab, pad_id)
        if not selected.any():
            continue
        hidden = _final_hidden(model, masked.to(device), attention.to(device))
        row_ids = torch.tensor(picked).unsqueeze(1).expand_as(selected)[selected]
        chunks.append((hidden[selected.to(device)].float(), original[selected].to(device), row_ids))
    width = families.hidden_size(model)
    vectors = torch.cat([c[0] for c in chunks]) if chunks else torch.zeros(0, width, device=device)
    targets = torch.cat([c[1] for c in chunks]) if chunks else torch.zeros(0, dtype=torch.long, device=device)
    row_of = torch.cat([c[2] for c in chunks]) if chunks else torch.zeros(0, dtype=torch.long)
    by_row = torch.argsort(row_of, stable=True)
    counts = torch.bincount(row_of, minlength=len(rows))
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    return _Features(vectors[by_row.to(device)], targets[by_row.to(device)], offsets, draws)


def _evaluate(head: HeadModule, vectors: torch.Tensor, targets: torch.Tensor, chunk: int = 256) -> dict[str, Any]:
    correct, nll_sum, total = 0, 0.0, int(targets.numel())
    head.eval()
    with torch.no_grad():
        for start in range(0, total, chunk):
            logits = head(vectors[start:start + chunk]).float()
            gold = targets[start:start + chunk]
            correct += int((logits.argmax(-1) == gold).sum())
            nll_sum += float(nn.functional.cross_entropy(logits, gold, reduction="sum"))
    return {"heldout_masked_top1": correct / total if total else None,
            "heldout_masked_nll": nll_sum / total if total else None,
            "heldout_masked_tokens": total}


def _new_head(model: PreTrainedModel, opts: FitOptions, seed: int, device: torch.device) -> HeadModule:
    embedding = _token_embeddings(model)
    torch.manual_seed(seed)
    return HeadModule(families.hidden_size(model), embedding.float() if embedding.dtype != torch.float32 else embedding,
                      tie_decoder=opts.tie_decoder,
                      eps=float(getattr(model.config, "layer_norm_eps", 1e-12) or 1e-12)).to(device)


def _train(head: HeadModule, feats: _Features, n_sentences: int, items: list[tuple[torch.Tensor, torch.Tensor]],
           opts: FitOptions, seed: int, progress: Progress, desc: str) -> float | None:
    """AdamW over ``opts.steps`` steps of ``opts.batch_size`` rows drawn by epoch from the first ``n_sentences``
    sentences' rows; returns the mean loss of the last tenth of the steps."""

    vocab = head.bias.shape[0]
    with torch.no_grad():  # start the bias at the fit sentences' smoothed log unigram frequencies
        counts = torch.ones(vocab)
        for ids, candidates in items[:n_sentences]:
            counts.index_add_(0, ids[candidates], torch.ones(int(candidates.sum())))
        head.bias.copy_((counts / counts.sum()).log().to(head.bias.device))
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    warmup = max(1, int(opts.warmup_fraction * opts.steps))

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        progress_ = (step - warmup) / max(1, opts.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    rng = random.Random(seed)
    n_rows = n_sentences * feats.draws
    order: list[int] = []
    losses: list[float] = []
    head.train()
    bar = progress_bar(range(opts.steps), progress=progress, desc=desc)
    for step in bar:
        if len(order) < opts.batch_size:  # reshuffle by epoch
            epoch = list(range(n_rows))
            rng.shuffle(epoch)
            order.extend(epoch)
        picked, order = order[:opts.batch_size], order[opts.batch_size:]
        vectors, targets = feats.take(picked)
        if targets.numel() == 0:
            scheduler.step()
            continue
        loss = nn.functional.cross_entropy(head(vectors).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    head.eval()
    tail = losses[-max(1, len(losses) // 10):]
    return sum(tail) / len(tail) if tail else None


def _fit(model: PreTrainedModel, tokenizer: Any, train: list[str], held: list[str], opts: FitOptions, seed: int,
         device: torch.device, progress: Progress) -> tuple[HeadModule, dict[str, Any]]:
    """Fit on cached final-layer features (the encoder is frozen, so each masked sentence is encoded once).

    The fit sees ``steps * batch_size`` (sentence, mask draw) rows, one epoch: the first ``steps * batch_size``
    sentences of the (shuffled) fit part with one draw each when the corpus is large, else every sentence with
    ``ceil(steps * batch_size / n)`` draws (the same as drawing fresh masks at every step, as before). The growth
    curve refits the same head, same steps, on the first fractions of those sentences (their cached draws, seen
    for more epochs) and scores each on the same held-out features.
    """
    mask_id, pad_id = tokenizer.mask_token_id, tokenizer.pad_token_id
    if mask_id is None:
        raise BertscopeError("the tokenizer has no mask token, so an MLM head cannot be fitted for this model")
    pad_id = 0 if pad_id is None else pad_id
    vocab = _token_embeddings(model).shape[0]
    views = opts.steps * opts.batch_size
    used = train[:views]
    draws = max(1, math.ceil(views / len(used)))
    items = _encode(tokenizer, used, opts.max_length)
    feats = _features(model, items, draws, seed, 0, opts, mask_id, vocab, pad_id, device, progress,
                      "encoding the fit corpus (frozen final layer)")
    held_feats = _features(model, _encode(tokenizer, held, opts.max_length), opts.heldout_mask_draws, seed, 1, opts,
                           mask_id, vocab, pad_id, device, progress, "encoding held-out sentences")
    held_vectors, held_targets = held_feats.upto(len(held))
    head = _new_head(model, opts, seed, device)
    final_loss = _train(head, feats, len(used), items, opts, seed, progress, "fitting MLM head on the final layer")
    stats = _evaluate(head, held_vectors, held_targets)
    stats["final_train_loss"] = final_loss
    curve = []
    for fraction in sorted(set(opts.curve)):
        n = max(1, round(fraction * len(used)))
        if n >= len(used):
            continue
        small = _new_head(model, opts, seed, device)
        loss = _train(small, feats, n, items, opts, seed, progress, f"growth curve: {n} sentences")
        curve.append({"fraction": fraction, "sentences": n, "rows": n * draws, "final_train_loss": loss,
                      **_evaluate(small, held_vectors, held_targets)})
    curve.append({"fraction": 1.0, "sentences": len(used), "rows": len(used) * draws, "final_train_loss": final_loss,
                  **{k: stats[k] for k in ("heldout_masked_top1", "heldout_masked_nll", "heldout_masked_tokens")}})
    stats["growth_curve"] = curve
    stats["fit_sentences_used"] = len(used)
    stats["mask_draws_per_sentence"] = draws
    stats["fit_sha256"] = hashlib.sha256("\n".join(used).encode("utf-8")).hexdigest()
    stats["heldout_sha256"] = hashlib.sha256("\n".join(held).encode("utf-8")).hexdigest()
    return head, stats


#: The files of a cached head, whose SHA-256s are recorded beside them and checked before it is reused.
_FILES = ("head.safetensors", "head.json")


def _save(folder: Path, head: HeadModule, info: dict[str, Any], *, replace: bool) -> None:
    """Write the head into ``folder`` atomically (a temporary folder renamed into place). With ``replace`` an
    entry already there (damaged, or asked to be refitted) is replaced; without, a concurrent run's entry is kept."""
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    publish.remove_stale(folder.parent)  # temp folders of crashed fits, of any key
    tmp = publish.temp_path(folder)
    tmp.mkdir()
    try:
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()}
        save_file(tensors, str(tmp / "head.safetensors"), metadata={"format": str(FORMAT_VERSION)})
        (tmp / "head.json").write_text(json.dumps(to_jsonable(info), indent=2) + "\n", encoding="utf-8")
        write_checksums(tmp, _FILES)
        if replace:
            publish.publish(tmp, folder)
        else:
            try:
                os.replace(tmp, folder)
            except OSError:  # another run saved the same head first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load(folder: Path, model: PreTrainedModel, key: str, opts: FitOptions) -> tuple[HeadModule, dict[str, Any]] | None:
    """The cached head in ``folder``, or None when it is absent or unusable (it is then fitted again)."""
    from safetensors.torch import load_file

    try:
        info = json.loads((folder / "head.json").read_text(encoding="utf-8"))
        if info.get("key") != key or info.get("format") != FORMAT_VERSION:
            return None
        if not files_match_checksums(folder, _FILES):
            _log.warning("ignoring cached head in %s: its files do not match their checksums; fitting again", folder)
            return None
        embedding = _token_embeddings(model)
        head = HeadModule(families.hidden_size(model), embedding, tie_decoder=opts.tie_decoder,
                          eps=float(info.get("layer_norm_eps", 1e-12)))
        head.load_state_dict(load_file(str(folder / "head.safetensors")))
    except Exception as exc:  # a cache entry is only a shortcut: anything unreadable is refitted
        _log.warning("ignoring unusable cached head in %s (%s); fitting again", folder, exc)
        return None
    return head, info


def get_fitted_head(
    model: PreTrainedModel,
    tokenizer: Any,
    corpus: Sequence[str],
    corpus_info: dict[str, Any],
    *,
    options: FitOptions | None = None,
    seed: int = 0,
    dtype: str = "float32",
    cache_dir: str | os.PathLike[str] | None = None,
    refit: bool = False,
    use_cache: bool = True,
    progress: Progress = True,
    model_source: str | None = None,
) -> FittedHead:
    """The head fitted on ``model``'s frozen final layer over ``corpus``: from the cache, or fitted now and cached.

    ``refit`` ignores (and replaces) a cached head; ``use_cache=False`` neither reads nor writes the cache.
    """
    opts = options or FitOptions()
    corpus = [s for s in corpus if s.strip()]
    fingerprint = loading.weights_fingerprint(model)  # the encoder alone: heads a checkpoint lacks are random
    corpus_sha = hashlib.sha256("\n".join(corpus).encode("utf-8")).hexdigest()
    key = fit_cache_key(fingerprint, corpus_sha, seed, opts, dtype)
    folder = cache_root(cache_dir) / "fitted-heads" / key
    device = next(model.parameters()).device
    found = folder.exists()  # an entry that does not load below is replaced by this fit
    if use_cache and not refit and (folder / "head.json").is_file():
        loaded = _load(folder, model, key, opts)
        if loaded is not None:
            head, info = loaded
            return FittedHead(head.to(device).eval(), {**info, "reused": True, "path": str(folder)})
    train, held = split_heldout(corpus, opts.heldout_fraction, seed, opts.heldout_max_sentences)
    started = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():  # the head trains even if the caller runs without grad
        head, stats = _fit(model, tokenizer, train, held, opts, seed, device, progress)
    info = {
        "format": FORMAT_VERSION,
        "key": key,
        "model_fingerprint": fingerprint,
        "model_source": model_source,
        "architecture": "dense(H->E) -> GELU -> LayerNorm -> decoder(E->V) + bias",
        "decoder": "tied to the frozen input embeddings" if opts.tie_decoder else "own weights (init: embeddings)",
        "trained_on": "final layer only, encoder frozen, BERT 80/10/10 masking, loss on selected tokens",
        "growth_curve_note": "same options and steps on the first fractions of the fit sentences (their cached mask "
                             "draws), each scored on the same held-out sentences",
        "layer_norm_eps": head.norm.eps,
        "seed": seed,
        "dtype": dtype,
        "options": dataclasses.asdict(opts),
        "corpus": {**corpus_info, "sha256": corpus_sha, "available_sentences": len(corpus),
                   "train_sentences": stats.pop("fit_sentences_used"), "heldout_sentences": len(held),
                   "mask_draws_per_sentence": stats.pop("mask_draws_per_sentence"),
                   "train_sha256": stats.pop("fit_sha256"), "heldout_sha256": stats.pop("heldout_sha256")},
        **stats,
        "fit_seconds": round(time.perf_counter() - started, 2),
    }
    head.eval()
    if use_cache:
        try:
            _save(folder, head, info, replace=found)
        except OSError as exc:
            _log.warning("could not cache the fitted head in %s (%s)", folder, exc)
    return FittedHead(head, {**info, "reused": False, "path": str(folder) if use_cache else None})


def fit_for_texts(
    model: PreTrainedModel,
    tokenizer: Any,
    measured: TextSource,
    *,
    fit_corpus: str = "auto",
    data_dir: str | None = None,
    overlap: str = "refuse",
    options: FitOptions | None = None,
    **fit_kwargs: Any,
) -> FittedHead:
    """The fitted head a command decodes ``measured`` with: its fit corpus resolved per ``--fit-corpus`` and checked
    against the measured sentences first (refused, or flagged, per ``--fit-overlap``: a head scored on its own fit
    text measures memory). ``info`` then names both texts (source, size, SHA-256) and the overlap."""
    corpus = texts.resolve_fit_corpus(fit_corpus, measured, data_dir)
    report = texts.check_overlap(corpus, measured, overlap)  # before fitting: a refusal costs nothing
    described = corpus.describe()
    corpus_info = {k: v for k, v in described.items() if k not in ("sha256", "num_sentences")}
    fitted = get_fitted_head(model, tokenizer, list(corpus.sentences), corpus_info, options=options, **fit_kwargs)
    fitted.info = {**fitted.info, "fit_corpus_requested": fit_corpus, "measured_texts": measured.describe(),
                   "fit_overlap": report}
    return fitted
