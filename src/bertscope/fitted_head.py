"""A masked-LM head fitted on the frozen final layer, for models that ship none (e.g. the embedded MiniLM).

The head has BERT's shape: ``dense (H -> E) -> GELU -> LayerNorm -> decoder (E -> V) + bias``; by default the decoder
is tied to the model's (frozen) input embeddings, so only the transform and the bias are learned (the bias starts at
the fit corpus's smoothed log unigram frequencies). It is trained on
the final layer only, with BERT's 80/10/10 masking (15% of the non-special tokens selected; of those 80% -> [MASK],
10% -> a random token, 10% unchanged; loss on the selected tokens), and then applied to every layer by the lens.
Masks are drawn fresh at every step (caching final-layer vectors for a few fixed mask draws was tried: it overfits
the small default corpus and lowers the held-out accuracy).

Fitting is seeded and deterministic on one device. The result is saved as ``head.safetensors`` + ``head.json`` in a
cache folder keyed by a hash of the model's weights, the fit corpus, the seed and every fit option
(``$BERTSCOPE_CACHE/fitted-heads/<key>``, default ``~/.cache/bertscope``), and reused when the same fit is asked
again. Its masked-token top-1 accuracy on held-out sentences of the fit corpus is measured and recorded. An entry
that does not load (damaged, truncated) is refitted and replaced, as is one a ``refit`` asks to redo; temp folders
of crashed fits are cleared by the next fit (:mod:`bertscope.publish`).
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

from bertscope import families, loading, publish
from bertscope.errors import BertscopeError
from bertscope.packing import pad_rows
from bertscope.results import to_jsonable

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
    "get_fitted_head",
]

FORMAT_VERSION = 1
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
        """The head as :class:`~bertscope.families.HeadParts` for ``model`` (adds its final norm, if any)."""
        module = self.module
        dtype = next(model.parameters()).dtype
        weight = module.weight.detach().to(dtype)
        bias = module.bias.detach().to(dtype)

        def transform(h: torch.Tensor) -> torch.Tensor:
            return module.transform(h).to(dtype)

        return families.HeadParts(transform=transform, weight=weight, bias=bias, pre_norm=families.final_norm(model))


def _split_heldout(sentences: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    if len(sentences) < 2:
        raise BertscopeError(
            f"fitting a head needs at least 2 sentences in the fit corpus (1 held out); got {len(sentences)}"
        )
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    n_held = min(len(sentences) - 1, max(1, round(fraction * len(sentences))))
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    return [sentences[i] for i in train], [sentences[i] for i in held]


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


def _heldout_accuracy(head: HeadModule, model: nn.Module, items: list, opts: FitOptions, seed: int,
                      mask_id: int, vocab: int, pad_id: int, device: torch.device) -> dict[str, Any]:
    correct = total = 0
    nll_sum = 0.0
    head.eval()
    for draw in range(opts.heldout_mask_draws):
        for start in range(0, len(items), opts.batch_size):
            chunk = items[start:start + opts.batch_size]
            seeds = [hash((seed, 10_000 + draw, start + i)) & 0x7FFFFFFF for i in range(len(chunk))]
            masked, attention, selected, original = _masked_batch(chunk, seeds, opts.mask_prob, mask_id, vocab, pad_id)
            if not selected.any():
                continue
            hidden = _final_hidden(model, masked.to(device), attention.to(device))
            with torch.no_grad():
                logits = head(hidden[selected.to(device)]).float()
            targets = original[selected].to(device)
            correct += int((logits.argmax(-1) == targets).sum())
            nll_sum += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
            total += int(targets.numel())
    return {"heldout_masked_top1": correct / total if total else None,
            "heldout_masked_nll": nll_sum / total if total else None,
            "heldout_masked_tokens": total}


def _fit(model: PreTrainedModel, tokenizer: Any, train: list[str], held: list[str], opts: FitOptions, seed: int,
         device: torch.device, progress: bool) -> tuple[HeadModule, dict[str, Any]]:
    from tqdm.auto import tqdm

    mask_id, pad_id = tokenizer.mask_token_id, tokenizer.pad_token_id
    if mask_id is None:
        raise BertscopeError("the tokenizer has no mask token, so an MLM head cannot be fitted for this model")
    pad_id = 0 if pad_id is None else pad_id
    embedding = _token_embeddings(model)
    vocab = embedding.shape[0]
    torch.manual_seed(seed)
    head = HeadModule(families.hidden_size(model), embedding.float() if embedding.dtype != torch.float32 else embedding,
                      tie_decoder=opts.tie_decoder,
                      eps=float(getattr(model.config, "layer_norm_eps", 1e-12) or 1e-12)).to(device)
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    warmup = max(1, int(opts.warmup_fraction * opts.steps))

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        progress_ = (step - warmup) / max(1, opts.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    items = _encode(tokenizer, train, opts.max_length)
    with torch.no_grad():  # start the bias at the corpus's smoothed log unigram frequencies (faster convergence)
        counts = torch.ones(vocab)
        for ids, candidates in items:
            counts.index_add_(0, ids[candidates], torch.ones(int(candidates.sum())))
        head.bias.copy_((counts / counts.sum()).log().to(head.bias.device))
    rng = random.Random(seed)
    order: list[int] = []
    losses: list[float] = []
    head.train()
    bar = tqdm(range(opts.steps), desc="fitting MLM head on the final layer", disable=not progress, leave=False)
    for step in bar:
        if len(order) < opts.batch_size:  # reshuffle by epoch; masks are drawn fresh every step
            epoch = list(range(len(items)))
            rng.shuffle(epoch)
            order.extend(epoch)
        picked, order = order[:opts.batch_size], order[opts.batch_size:]
        seeds = [rng.getrandbits(31) for _ in picked]
        masked, attention, selected, original = _masked_batch(
            [items[i] for i in picked], seeds, opts.mask_prob, mask_id, vocab, pad_id)
        if not selected.any():
            continue
        hidden = _final_hidden(model, masked.to(device), attention.to(device))
        logits = head(hidden[selected.to(device)].float())
        loss = nn.functional.cross_entropy(logits.float(), original[selected].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    tail = losses[-max(1, len(losses) // 10):]
    held_items = _encode(tokenizer, held, opts.max_length)
    stats = _heldout_accuracy(head, model, held_items, opts, seed, mask_id, vocab, pad_id, device)
    stats["final_train_loss"] = sum(tail) / len(tail) if tail else None
    return head, stats


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
    progress: bool = True,
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
    train, held = _split_heldout(corpus, opts.heldout_fraction, seed)
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
        "layer_norm_eps": head.norm.eps,
        "seed": seed,
        "dtype": dtype,
        "options": dataclasses.asdict(opts),
        "corpus": {**corpus_info, "sha256": corpus_sha, "train_sentences": len(train), "heldout_sentences": len(held)},
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
