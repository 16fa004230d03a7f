"""The tuned lens for encoders: one affine translator per hidden state, trained so the MLM head reads each layer the
way it reads the last (Belrose et al. 2023, arXiv 2303.08112, there for causal decoders).

The logit lens (paper 1's method, :mod:`bertscope.lens.reconstruct`) applies the head to ``hidden_states[l]`` as it
is. The tuned lens first maps it with ``T_l(h) = h + h @ weight[l].T + bias[l]`` (the identity at initialisation),
with ``T_l`` trained to minimise ``KL(p_final || p_l)``: the KL divergence from the final layer's masked-LM
distribution (the head on ``hidden_states[L]``) to the head's distribution on ``T_l(hidden_states[l])``. The head and
the encoder are frozen. Whatever a translator can recover, layer l carries in a rotated or stretched basis; what the
logit lens then still misses, it lacks. The last hidden state's translator is held at the identity: its target is
itself, so its KL is zero there (the global minimum) and its gradient only rounding noise, which Adam would scale up
to full-size steps (``last_layer_deviation`` records that it stayed there).

Training uses the fit corpus (as the fitted head does: :func:`bertscope.data.texts.resolve_fit_corpus`, checked
against the measured text for overlap first), never the measured sentences: its unmasked sentences are encoded once,
the hidden states of every layer at real, non-special positions are kept, and AdamW fits all translators on random
token batches (seeded). A held-out share of the corpus gives the held-out KL of both lenses per layer and the training
curve. Translators are cached like fitted heads, keyed by the encoder's weights, the head, the corpus, the seed and
every option (``$BERTSCOPE_CACHE/tuned-lenses/<key>``), as ``translators.safetensors`` (``weight`` [L+1, H, H],
``bias`` [L+1, H]) plus ``lens.json``, which plain PyTorch applies without bertscope (docs/reconstruct.md).

:class:`LensComparison` then measures both lenses on the measured text (KL to the final distribution, entropy, top-1
agreement with the final layer, input reconstruction) from :func:`bertscope.lens.reconstruct.lens_pass`'s batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertscope.core import publish
from bertscope.core.errors import BertscopeError
from bertscope.core.progress import Progress, progress_bar
from bertscope.core.results import files_match_checksums, to_jsonable, write_checksums
from bertscope.data import texts
from bertscope.data.texts import TextSource
from bertscope.lens.fitted_head import cache_root, split_heldout
from bertscope.lens.metrics import MetricSums, token_stats
from bertscope.models import families, loading
from bertscope.models.packing import pad_rows

__all__ = [
    "FORMAT",
    "LENSES",
    "LensComparison",
    "Translators",
    "TunedLens",
    "TunedOptions",
    "get_tuned_lens",
    "head_fingerprint",
    "kl_from_final",
    "tuned_for_texts",
]

FORMAT = "bertscope-tuned-lens/1"
#: The lenses ``reconstruct --lens`` knows; ``tuned`` measures both, side by side.
LENSES = ("logit", "tuned")
_log = logging.getLogger("bertscope")


@dataclass(frozen=True)
class TunedOptions:
    """How the translators are trained; every field enters the cache key and the result file."""

    steps: int = 250
    lr: float = 1e-3
    batch_tokens: int = 128
    max_sentences: int = 512
    max_length: int = 128
    heldout_fraction: float = 0.1
    heldout_max_sentences: int = 64
    curve_points: int = 4
    curve_max_tokens: int = 256

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise BertscopeError(f"--lens-steps must be at least 1, got {self.steps}")
        if not self.lr > 0:
            raise BertscopeError(f"--lens-lr must be positive, got {self.lr}")
        if self.batch_tokens < 1:
            raise BertscopeError(f"--lens-batch-tokens must be at least 1, got {self.batch_tokens}")
        if self.max_sentences < 2:
            raise BertscopeError(f"--lens-sentences must be at least 2, got {self.max_sentences}")


class Translators(nn.Module):
    """One affine map per hidden state 0..L, in residual form: ``T_l(h) = h + h @ weight[l].T + bias[l]``."""

    def __init__(self, count: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(count, width, width))
        self.bias = nn.Parameter(torch.zeros(count, width))

    def forward(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        h = hidden.to(self.weight.dtype)
        return h + h @ self.weight[layer].T + self.bias[layer]


def kl_from_final(final_logits: torch.Tensor, lens_logits: torch.Tensor) -> torch.Tensor:
    """Per row ``KL(p_final || p_lens)`` in nats, from two [N, V] logit tensors (float32 or wider)."""
    log_p = torch.log_softmax(final_logits.float(), dim=-1)
    log_q = torch.log_softmax(lens_logits.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    log_q = torch.log_softmax(logits.float(), dim=-1)
    return -(log_q.exp() * log_q).sum(-1)


def head_fingerprint(head: families.HeadParts, width: int) -> str:
    """A content hash of a head: its decoder, its bias and its output on a fixed seeded probe (transform, norm)."""
    digest = hashlib.sha256()
    with torch.no_grad():
        probe = torch.randn(4, width, generator=torch.Generator().manual_seed(0)).to(head.weight.device,
                                                                                     head.weight.dtype)
        for tensor in (head.weight, head.bias, head.logits(probe, is_last_layer=False),
                       head.logits(probe, is_last_layer=True)):
            if tensor is not None:
                digest.update(f"{tuple(tensor.shape)}:{float(tensor.double().sum()):.6e}".encode())
                digest.update(tensor.detach().float().cpu().flatten()[::97].numpy().round(5).tobytes())
    return digest.hexdigest()[:24]


def _logits(head: families.HeadParts, hidden: torch.Tensor, layer: int, depth: int) -> torch.Tensor:
    return head.logits(hidden.to(head.weight.dtype), is_last_layer=layer == depth)


def _states(model: nn.Module, tokenizer: Any, sentences: Sequence[str], max_length: int,
            batch_size: int = 32) -> torch.Tensor:
    """Hidden states 0..L at every real, non-special position of ``sentences``: [L+1, T, H] float32."""
    enc = tokenizer(list(sentences), truncation=True, max_length=max_length, return_special_tokens_mask=True)
    items = [(torch.tensor(ids), torch.tensor(special) == 0)
             for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"])]
    pad_id = tokenizer.pad_token_id or 0
    device = next(model.parameters()).device
    encoder = families.base_encoder(model)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            part = items[start:start + batch_size]
            ids, attention = pad_rows([i for i, _ in part], pad_id)
            keep = pad_rows([c for _, c in part], False, dtype=torch.bool)[0] & attention.bool()
            states = encoder(input_ids=ids.to(device), attention_mask=attention.to(device),
                             output_hidden_states=True).hidden_states
            chunks.append(torch.stack([s[keep.to(device)].float() for s in states]))
    if not chunks:
        raise BertscopeError("the tuned lens's fit corpus holds no sentence")
    return torch.cat(chunks, dim=1)


def _heldout_stats(translators: Translators | None, head: families.HeadParts, states: torch.Tensor,
                   chunk: int = 256) -> list[dict[str, float]]:
    """Per hidden state: mean KL to the final distribution and top-1 agreement with the final layer (``None``
    translators: the logit lens)."""
    depth = states.shape[0] - 1
    kl = torch.zeros(depth + 1, dtype=torch.float64)
    agree = torch.zeros(depth + 1, dtype=torch.float64)
    total = states.shape[1]
    with torch.no_grad():
        for start in range(0, total, chunk):
            final = _logits(head, states[depth, start:start + chunk], depth, depth).float()
            best = final.argmax(-1)
            for layer in range(depth + 1):
                h = states[layer, start:start + chunk]
                if translators is not None:
                    h = translators(h, layer)
                logits = _logits(head, h, layer, depth).float()
                kl[layer] += float(kl_from_final(final, logits).double().sum())
                agree[layer] += float((logits.argmax(-1) == best).double().sum())
    return [{"layer": layer, "kl": float(kl[layer]) / total, "final_agreement": float(agree[layer]) / total}
            for layer in range(depth + 1)]


def _train(translators: Translators, head: families.HeadParts, states: torch.Tensor, held: torch.Tensor,
           opts: TunedOptions, seed: int, progress: Progress) -> list[dict[str, Any]]:
    """AdamW on the mean over layers of ``KL(p_final || p_l)``, on seeded random token batches; returns the curve
    (mean training loss since the last point, and the held-out KL averaged over layers at each point)."""

    depth = states.shape[0] - 1
    total = states.shape[1]
    generator = torch.Generator().manual_seed(seed)
    # eps well above the rounding noise of a KL that is zero (the last hidden state's, whose target is itself):
    # Adam would otherwise blow that noise up to full-size steps and walk the last translator off the identity
    optimizer = torch.optim.AdamW(translators.parameters(), lr=opts.lr, weight_decay=0.0, eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, opts.steps))))
    points = sorted({max(1, round(opts.steps * (i + 1) / opts.curve_points)) for i in range(opts.curve_points)})
    curve: list[dict[str, Any]] = []
    probe = held[:, :opts.curve_max_tokens]
    since: list[float] = []
    bar = progress_bar(range(1, opts.steps + 1), progress=progress, desc="training tuned-lens translators")
    for step in bar:
        picked = torch.randint(total, (min(opts.batch_tokens, total),), generator=generator)
        batch = states[:, picked].to(translators.weight.device)
        with torch.no_grad():
            final = _logits(head, batch[depth], depth, depth).float()
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for layer in range(depth + 1):  # one layer's graph at a time: memory of one [B, V] block
            loss = kl_from_final(final, _logits(head, translators(batch[layer], layer), layer, depth)).mean()
            (loss / (depth + 1)).backward()
            step_loss += float(loss.detach()) / (depth + 1)
        for tensor in (translators.weight, translators.bias):  # the last stays the identity (see the docstring)
            if tensor.grad is not None:
                tensor.grad[depth] = 0.0
        optimizer.step()
        scheduler.step()
        since.append(step_loss)
        if step in points:
            held_kl = _heldout_stats(translators, head, probe)
            curve.append({"step": step, "train_kl": sum(since) / len(since),
                          "heldout_kl": sum(r["kl"] for r in held_kl) / len(held_kl)})
            since = []
            bar.set_postfix(kl=f"{curve[-1]['heldout_kl']:.3f}")
    bar.close()
    return curve


@dataclass
class TunedLens:
    """Trained translators and what is known about them (``info`` goes into the result file under ``lens.tuned``)."""

    translators: Translators
    info: dict[str, Any] = field(default_factory=dict)

    def save(self, folder: str | os.PathLike[str]) -> dict[str, str]:
        """Write ``translators.safetensors`` + ``lens.json`` into ``folder`` (which must exist); returns the paths."""
        from safetensors.torch import save_file

        folder = Path(folder)
        files = {"translators": str(folder / "translators.safetensors"), "lens_config": str(folder / "lens.json")}
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in self.translators.state_dict().items()}
        save_file(tensors, files["translators"], metadata={"format": FORMAT})
        config = {k: v for k, v in self.info.items() if k not in ("reused", "path")}
        Path(files["lens_config"]).write_text(json.dumps(to_jsonable(config), indent=2) + "\n", encoding="utf-8")
        write_checksums(folder, _FILES)  # the cache trusts an entry only while they match
        return files


#: The files of a saved tuned lens, whose SHA-256s are recorded beside them (``checksums.json``).
_FILES = ("translators.safetensors", "lens.json")


def _load(folder: Path, key: str) -> TunedLens | None:
    from safetensors.torch import load_file

    try:
        info = json.loads((folder / "lens.json").read_text(encoding="utf-8"))
        if info.get("key") != key or info.get("format") != FORMAT:
            return None
        if not files_match_checksums(folder, _FILES):
            _log.warning("ignoring cached tuned lens in %s: its files do not match their checksums; training again",
                         folder)
            return None
        state = load_file(str(folder / "translators.safetensors"))
        translators = Translators(state["weight"].shape[0], state["weight"].shape[1])
        translators.load_state_dict(state)
    except Exception as exc:  # a cache entry is only a shortcut: anything unreadable is trained again
        _log.warning("ignoring unusable cached tuned lens in %s (%s); training again", folder, exc)
        return None
    return TunedLens(translators, info)


def get_tuned_lens(model: nn.Module, head: families.HeadParts, tokenizer: Any, corpus: Sequence[str],
                   corpus_info: dict[str, Any], *, options: TunedOptions | None = None, seed: int = 0,
                   dtype: str = "float32", cache_dir: str | os.PathLike[str] | None = None, refit: bool = False,
                   use_cache: bool = True, progress: Progress = True) -> TunedLens:
    """Translators for ``model`` decoded by ``head``, trained on ``corpus``: from the cache, or trained now and
    cached (``refit`` trains again and replaces the entry; ``use_cache=False`` neither reads nor writes it)."""
    opts = options or TunedOptions()
    corpus = [s for s in corpus if s.strip()]
    depth, width = families.num_layers(model), families.hidden_size(model)
    corpus_sha = hashlib.sha256("\n".join(corpus).encode("utf-8")).hexdigest()
    payload = {"format": FORMAT, "model": loading.weights_fingerprint(model), "head": head_fingerprint(head, width),
               "corpus": corpus_sha, "seed": seed, "dtype": dtype, "options": dataclasses.asdict(opts)}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_root(cache_dir) / "tuned-lenses" / key
    device = next(model.parameters()).device
    if use_cache and not refit and (folder / "lens.json").is_file():
        found = _load(folder, key)
        if found is not None:
            found.translators.to(device)
            found.info = {**found.info, "reused": True, "path": str(folder)}
            return found
    train, held = split_heldout(corpus, opts.heldout_fraction, seed, opts.heldout_max_sentences)
    train = train[:opts.max_sentences]
    started = time.perf_counter()
    states = _states(model, tokenizer, train, opts.max_length)
    held_states = _states(model, tokenizer, held, opts.max_length)
    translators = Translators(depth + 1, width).to(device)
    with torch.inference_mode(False), torch.enable_grad():
        curve = _train(translators, head, states.to(device), held_states.to(device), opts, seed, progress)
    translators.eval()
    tuned = _heldout_stats(translators, head, held_states.to(device))
    logit = _heldout_stats(None, head, held_states.to(device))
    info = {
        "format": FORMAT, "key": key, **{k: v for k, v in payload.items() if k not in ("format", "options")},
        "options": dataclasses.asdict(opts), "num_layers": depth, "hidden_size": width,
        "apply": "T_l(h) = h + h @ weight[l].T + bias[l] on hidden_states[l], then the MLM head",
        "trained_on": "unmasked fit-corpus sentences, real non-special positions, encoder and head frozen; loss = "
                      "mean over hidden states 0..L of KL(p_final || p_l)",
        "corpus": {**corpus_info, "sha256": corpus_sha, "available_sentences": len(corpus),
                   "train_sentences": len(train), "heldout_sentences": len(held), "train_tokens": states.shape[1],
                   "heldout_tokens": held_states.shape[1]},
        "curve": curve,
        "heldout": [{"layer": a["layer"], "logit_kl": a["kl"], "tuned_kl": b["kl"],
                     "logit_final_agreement": a["final_agreement"], "tuned_final_agreement": b["final_agreement"]}
                    for a, b in zip(logit, tuned)],
        "last_layer_deviation": float(max((translators.weight[depth].detach()).abs().max(),
                                          translators.bias[depth].detach().abs().max())),
        "train_seconds": round(time.perf_counter() - started, 2),
    }
    lens = TunedLens(translators, info)
    if use_cache:
        try:
            with publish.building(folder) as tmp:
                lens.save(tmp)
        except OSError as exc:
            _log.warning("could not cache the tuned lens in %s (%s)", folder, exc)
    lens.info = {**info, "reused": False, "path": str(folder) if use_cache else None}
    return lens


def tuned_for_texts(model: nn.Module, head: families.HeadParts, tokenizer: Any, measured: TextSource, *,
                    fit_corpus: str = "auto", data_dir: str | None = None, overlap: str = "refuse",
                    **kwargs: Any) -> TunedLens:
    """The tuned lens a command measures ``measured`` with: trained on the fit corpus of ``--fit-corpus``, checked
    against the measured sentences first (:func:`bertscope.data.texts.check_overlap`), never on the measured text."""
    corpus = texts.resolve_fit_corpus(fit_corpus, measured, data_dir)
    report = texts.check_overlap(corpus, measured, overlap)
    described = corpus.describe()
    corpus_info = {k: v for k, v in described.items() if k not in ("sha256", "num_sentences")}
    lens = get_tuned_lens(model, head, tokenizer, list(corpus.sentences), corpus_info, **kwargs)
    lens.info = {**lens.info, "fit_corpus_requested": fit_corpus, "fit_overlap": report}
    return lens


@dataclass
class _Sums:
    kl: float = 0.0
    entropy: float = 0.0
    input: MetricSums = field(default_factory=MetricSums)


class LensComparison:
    """Both lenses on the measured text, fed batch by batch by ``lens_pass(on_batch=...)``: per hidden state, KL to
    the final distribution, entropy, top-1 agreement with the final layer and input reconstruction (counted tokens,
    the ``all`` group)."""

    def __init__(self, head: families.HeadParts, lens: TunedLens, layers: Sequence[int], depth: int,
                 targets: Sequence[torch.Tensor], chunk: int = 256) -> None:
        self.head, self.lens, self.layers, self.depth = head, lens, list(layers), depth
        self.targets, self.chunk = targets, chunk
        self.sums = {(kind, layer): _Sums() for kind in LENSES for layer in self.layers}

    def __call__(self, batch: list[int], hidden_states: Sequence[torch.Tensor], counted: torch.Tensor,
                 attention: torch.Tensor) -> None:
        device = counted.device
        targets = pad_rows([self.targets[i] for i in batch], 0)[0].to(device)[counted]
        rows = torch.arange(len(batch), device=device).unsqueeze(1).expand_as(counted)[counted]
        states = {layer: hidden_states[layer][counted] for layer in {*self.layers, self.depth}}
        found: dict[tuple[str, int], tuple[list[torch.Tensor], list[torch.Tensor]]] = {
            key: ([], []) for key in self.sums}
        with torch.no_grad():
            for start in range(0, int(targets.shape[0]), self.chunk):
                part = slice(start, start + self.chunk)
                final = _logits(self.head, states[self.depth][part], self.depth, self.depth).float()
                best = final.argmax(-1)
                for layer in self.layers:
                    for kind in LENSES:
                        h = states[layer][part]
                        logits = _logits(self.head, self.lens.translators(h, layer) if kind == "tuned" else h,
                                         layer, self.depth).float()
                        sums = self.sums[kind, layer]
                        sums.kl += float(kl_from_final(final, logits).double().sum())
                        sums.entropy += float(_entropy(logits).double().sum())
                        sums.input.add_final_agreement(logits.argmax(-1) == best)
                        rank, nll = token_stats(logits, targets[part], overwrite=True)
                        found[kind, layer][0].append(rank)
                        found[kind, layer][1].append(nll)
        for key, (ranks, nlls) in found.items():  # whole sentences at once: the exact-sentence count needs them
            if ranks:
                self.sums[key].input.add(torch.cat(ranks), torch.cat(nlls), rows, len(batch))

    def records(self) -> list[dict[str, Any]]:
        """One row per (lens, hidden state)."""
        out = []
        for (kind, layer), sums in self.sums.items():
            m = sums.input.result()
            n = m.tokens
            out.append({"lens": kind, "layer": layer, "tokens": n, "kl_to_final": sums.kl / n if n else math.nan,
                        "entropy": sums.entropy / n if n else math.nan, **{
                            k: getattr(m, k) for k in ("final_agreement", "top1", "top5", "mean_rank", "nll",
                                                       "exact")}})
        return out
