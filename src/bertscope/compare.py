"""How much does a layer edit change a model? Agreement between an original and a variant on real text.

Three numbers per counted token position, averaged over all of them:

* top-1 agreement: the two models' masked-LM heads predict the same most likely token;
* KL(original || variant) of the two output distributions (natural log, nats);
* cosine similarity of the two final hidden states.

``compare`` measures one saved variant (and both models' per-layer reconstruction curves, via :mod:`bertscope.lens`);
``layer-scan`` builds every single-layer variant (one layer duplicated, or removed) *in memory* and measures each, the
claim of paper 1's first version. The scan never reloads a checkpoint and reuses the shared prefix of the
computation: the original's layer inputs are computed once per batch, and the variant that edits layer ``i`` only
runs the layers from ``i`` on (:func:`bertscope.families.run_layers`), stacked with the other variants that need the
same layer next, on packed rows where the family allows (:mod:`bertscope.packing`).

The metric functions at the top are pure functions on tensors; the orchestration below them loads, batches and
writes files.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bertscope import families, loading, packing
from bertscope.configs import CompareConfig, LayerScanConfig
from bertscope.errors import BertscopeError
from bertscope.families import HeadParts
from bertscope.registry import CommandInfo
from bertscope.results import (
    environment_info,
    prepare_out_dir,
    save_figure_atomic,
    write_csv_atomic,
    write_json_atomic,
)

__all__ = [
    "AgreementMetrics",
    "AgreementSums",
    "CompareResult",
    "LayerScanResult",
    "agreement_stats",
    "cosine_similarity",
    "kl_divergence",
    "kl_from_log_probs",
    "run_compare",
    "run_layer_scan",
    "scan_layer_maps",
    "top1_agreement",
]

CHUNK = 512  # rows of vocabulary logits alive at once


# --- pure metrics -----------------------------------------------------------------------------------------------


def top1_agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """[N] bool: both rows of [N, V] logits have the same arg-max."""
    return logits_a.argmax(dim=-1) == logits_b.argmax(dim=-1)


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """[N] KL(P || Q) in nats between the softmax distributions of two [N, V] logit rows (float32 or wider)."""
    return kl_from_log_probs(torch.log_softmax(logits_p.float(), dim=-1), torch.log_softmax(logits_q.float(), dim=-1))


def kl_from_log_probs(logp: torch.Tensor, logq: torch.Tensor, p: torch.Tensor | None = None) -> torch.Tensor:
    """[N] KL(P || Q) from [N, V] log-probabilities; pass ``p = logp.exp()`` when it is reused across many Q."""
    return ((logp.exp() if p is None else p) * (logp - logq)).sum(dim=-1).clamp_min(0.0)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N] cosine between rows of two [N, H] hidden-state matrices."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-12)


def agreement_stats(
    head_a: HeadParts, hidden_a: torch.Tensor, head_b: HeadParts, hidden_b: torch.Tensor, *, chunk: int = CHUNK
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top-1 agreement [N], KL [N], cosine [N]) of two models' *last* hidden states at the same N positions.

    Each head decodes its own model's hidden state (they may be the same head); vocabulary logits exist for at most
    ``chunk`` rows at a time.
    """
    if hidden_a.shape[0] != hidden_b.shape[0]:
        raise ValueError(f"{hidden_a.shape[0]} vs {hidden_b.shape[0]} positions")
    fa = head_a.features(hidden_a, is_last_layer=True)
    fb = head_b.features(hidden_b, is_last_layer=True)
    agree, kl = [], []
    for s in range(0, fa.shape[0], chunk):
        la, lb = head_a.decode(fa[s:s + chunk]), head_b.decode(fb[s:s + chunk])
        agree.append(top1_agreement(la, lb))
        kl.append(kl_divergence(la, lb))
    if not agree:
        empty = hidden_a.new_zeros(0)
        return empty.bool(), empty.float(), empty.float()
    return torch.cat(agree), torch.cat(kl), cosine_similarity(hidden_a, hidden_b)


@dataclass(frozen=True)
class AgreementMetrics:
    """Means over ``positions`` counted token positions."""

    positions: int
    top1_agreement: float
    mean_kl: float
    mean_cosine: float

    def to_dict(self) -> dict[str, Any]:
        return {"positions": self.positions, "top1_agreement": self.top1_agreement, "mean_kl": self.mean_kl,
                "mean_cosine": self.mean_cosine}


@dataclass
class AgreementSums:
    """Running sums (float64) so the means depend neither on batch size nor on padding."""

    positions: int = 0
    agree: int = 0
    kl: float = 0.0
    cosine: float = 0.0

    def add(self, agree: torch.Tensor, kl: torch.Tensor, cosine: torch.Tensor) -> None:
        self.positions += int(agree.numel())
        self.agree += int(agree.sum())
        self.kl += float(kl.double().sum())
        self.cosine += float(cosine.double().sum())

    def result(self) -> AgreementMetrics:
        n = self.positions
        if n == 0:
            return AgreementMetrics(0, math.nan, math.nan, math.nan)
        return AgreementMetrics(n, self.agree / n, self.kl / n, self.cosine / n)


# --- shared plumbing --------------------------------------------------------------------------------------------


def _texts(config: CompareConfig | LayerScanConfig) -> Any:
    from bertscope.texts import load_texts

    return load_texts(texts=config.texts, task=config.task, split=config.split, data_dir=config.data_dir,
                      max_examples=config.max_examples, seed=config.seed)


def _batches(tokenizer: Any, sentences: Sequence[str], config: CompareConfig | LayerScanConfig,
             device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask, counted) per batch; ``counted`` marks the positions the metrics use.

    Sentences are batched longest first, so each batch holds similar lengths and little padding; every metric is a
    sum over positions, so the order changes nothing but the time.
    """
    encoded = tokenizer(list(sentences), truncation=True, max_length=config.max_length,
                        return_special_tokens_mask=True)  # tokenised once; batches are padded from it
    keys = ("input_ids", "attention_mask", "special_tokens_mask")
    order = sorted(range(len(sentences)), key=lambda i: -len(encoded["input_ids"][i]))
    for start in range(0, len(order), config.batch_size):
        rows = [{k: encoded[k][i] for k in keys} for i in order[start:start + config.batch_size]]
        enc = tokenizer.pad(rows, return_tensors="pt")
        mask = enc["attention_mask"].bool()
        counted = mask if config.include_special else mask & ~enc["special_tokens_mask"].bool()
        yield enc["input_ids"].to(device), enc["attention_mask"].to(device), counted.to(device)


def _choose_heads(
    config: CompareConfig | LayerScanConfig, loaded: Sequence[loading.LoadedModel], tokenizer: Any, source: Any
) -> tuple[list[HeadParts], dict[str, Any]]:
    """One head per model: each checkpoint's own, or one head fitted on the *first* model's final layer, shared.

    Sharing the fitted head keeps the comparison about the encoders: both models are decoded by the same weights.
    """
    have = [lm.has_pretrained_mlm_head for lm in loaded]
    mode = config.head
    if mode == "pretrained" and not all(have):
        missing = next(lm.source for lm, h in zip(loaded, have) if not h)
        raise BertscopeError(f"{missing} has no pretrained masked-LM head (its weights hold none); "
                             "use --head fit to fit one on the frozen final layer, or --head auto")
    if mode == "pretrained" or (mode == "auto" and all(have)):
        return [families.mlm_head_parts(lm.model, "full") for lm in loaded], {"mode": "pretrained",
                                                                             "requested": config.head}
    from bertscope.fitted_head import FitOptions, get_fitted_head

    corpus, corpus_info = _fit_corpus(config.fit_corpus, source)
    options = FitOptions(steps=config.fit_steps, lr=config.fit_lr, batch_size=config.fit_batch_size,
                         mask_prob=config.fit_mask_prob, tie_decoder=config.fit_tie, max_length=config.max_length)
    with torch.enable_grad():  # fitting trains the head even when a caller runs under no_grad
        fitted = get_fitted_head(loaded[0].model, tokenizer, corpus, corpus_info, options=options, seed=config.seed,
                                 dtype=config.dtype, cache_dir=config.head_cache, refit=config.refit,
                                 progress=config.progress, model_source=loaded[0].source)
    info = {"mode": "fit", "requested": config.head, "fitted_on": loaded[0].source,
            "shared_by": [lm.source for lm in loaded], "fit": fitted.info}
    return [fitted.parts(lm.model) for lm in loaded], info


def _fit_corpus(choice: str, source: Any) -> tuple[list[str], dict[str, Any]]:
    from bertscope.texts import load_texts, read_text_file

    if choice == "builtin":
        return list(load_texts().sentences), {"kind": "builtin", "file": "bertscope/data/sentences.txt"}
    if choice == "source":
        return list(source.sentences), {"kind": "source", "source": source.describe()}
    return read_text_file(choice), {"kind": "file", "file": str(Path(choice).expanduser().resolve())}


def _tqdm(iterable: Any, total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False)


def _same_vocab(a: Any, b: Any) -> None:
    va, vb = int(a.config.vocab_size), int(b.config.vocab_size)
    if va != vb:
        raise BertscopeError(f"the models have different vocabularies ({va} vs {vb} tokens); compare needs the same")


# --- compare ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareResult:
    """Agreement of ``variant`` with ``model`` and both models' per-layer reconstruction curves."""

    config: CompareConfig
    head: dict[str, Any]
    texts: dict[str, Any]
    depths: dict[str, int]
    agreement: AgreementMetrics
    curves: dict[str, list[dict[str, Any]]]
    files: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"command": "compare", "config": self.config.to_dict(), "head": self.head, "texts": self.texts,
                "depths": self.depths, "agreement": self.agreement.to_dict(), "curves": self.curves,
                "files": self.files, "environment": self.environment,
                "assumptions": {"kl": "KL(original || variant), natural log, over the MLM head's softmax",
                                "cosine": "final hidden states (after any final norm)",
                                "positions": "non-special, non-padding tokens unless --include-special"}}

    def metrics(self) -> dict[str, float]:
        m = {"top1_agreement": self.agreement.top1_agreement, "mean_kl": self.agreement.mean_kl,
             "mean_cosine": self.agreement.mean_cosine}
        for name, rows in self.curves.items():
            if rows:
                m[f"{name}.final.top1"] = rows[-1]["top1"]
        return m

    def render(self) -> Any:
        from rich.table import Table

        a = self.agreement
        table = Table(title=f"compare: {self.config.model or 'default'} vs {self.config.variant} "
                            f"({a.positions} positions, head: {self.head['mode']})")
        for col in ("metric", "value"):
            table.add_column(col)
        table.add_row("top-1 agreement", f"{a.top1_agreement:.4f}")
        table.add_row("mean KL (nats)", f"{a.mean_kl:.4g}")
        table.add_row("mean cosine", f"{a.mean_cosine:.4f}")
        for name, rows in self.curves.items():
            if rows:
                table.add_row(f"{name} final-layer top-1", f"{rows[-1]['top1']:.4f} ({len(rows) - 1} layers)")
        return table


def _curve_rows(sums: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for layer, s in enumerate(sums):
        r = s.result()
        rows.append({"layer": layer, "tokens": r.tokens, "top1": r.top1, "top5": r.top5, "mean_rank": r.mean_rank,
                     "nll": r.nll, "exact": r.exact})
    return rows


def run_compare(config: CompareConfig) -> CompareResult:
    """Run ``config.model`` and ``config.variant`` on the same sentences and measure how much they agree."""
    from bertscope.lens import MetricSums

    device = loading.resolve_device(config.device)
    prepare_out_dir(config.out)
    torch.manual_seed(config.seed)
    source = _texts(config)
    tokenizer = loading.load_tokenizer(config.model)
    original = loading.load_model(config.model, "masked-lm", device=device, dtype=config.dtype)
    variant = loading.load_model(config.variant, "masked-lm", device=device, dtype=config.dtype)
    _same_vocab(original.model, variant.model)
    heads, head_info = _choose_heads(config, [original, variant], tokenizer, source)
    names = ("original", "variant")
    depths = {n: families.num_layers(lm.model) for n, lm in zip(names, (original, variant))}
    curve_sums = {n: [MetricSums() for _ in range(depths[n] + 1)] for n in names}
    sums = AgreementSums()
    sentences = list(source.sentences)
    n_batches = math.ceil(len(sentences) / config.batch_size)
    for ids, mask, counted in _tqdm(_batches(tokenizer, sentences, config, device), n_batches, "compare",
                                    config.progress):
        _compare_batch(ids, mask, counted, (original, variant), heads, names, curve_sums, sums, config.curves)
    curves = {n: _curve_rows(curve_sums[n]) if config.curves else [] for n in names}
    result = CompareResult(config=config, head=head_info, texts=source.describe(), depths=depths,
                           agreement=sums.result(), curves=curves, environment=environment_info())
    if config.out:
        files = _write_compare(Path(config.out), result)
        result = CompareResult(**{**result.__dict__, "files": files})
        write_json_atomic(Path(config.out) / "compare.json", result.to_dict())
    return result


@torch.no_grad()
def _compare_batch(ids: torch.Tensor, mask: torch.Tensor, counted: torch.Tensor,
                   models: Sequence[loading.LoadedModel], heads: Sequence[HeadParts], names: Sequence[str],
                   curve_sums: dict[str, list[Any]], sums: AgreementSums, curves: bool) -> None:
    from bertscope.lens import head_token_stats

    finals = []
    sentence_ids = torch.arange(ids.shape[0], device=ids.device).unsqueeze(1).expand_as(ids)[counted]
    targets = ids[counted]
    for name, lm, head in zip(names, models, heads):
        states = lm.model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        finals.append(states[-1][counted])
        if curves:
            last = len(states) - 1
            for layer, hidden in enumerate(states):
                rank, nll = head_token_stats(head, hidden[counted], targets, is_last_layer=layer == last)
                curve_sums[name][layer].add(rank, nll, sentence_ids, ids.shape[0])
    sums.add(*agreement_stats(heads[0], finals[0], heads[1], finals[1]))


def _write_compare(out: Path, result: CompareResult) -> dict[str, str]:
    rows = [{"model": name, **row} for name, rs in result.curves.items() for row in rs]
    agreement = {"model": "agreement", **result.agreement.to_dict()}
    files = {"json": str(out / "compare.json"), "csv": str(out / "compare.csv")}
    write_csv_atomic(out / "compare.csv", [*rows, agreement] if rows else [agreement])
    if rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for name, rs in result.curves.items():
            ax.plot([r["layer"] for r in rs], [r["top1"] for r in rs], marker="o", label=f"{name} ({len(rs) - 1} L)")
        a = result.agreement
        ax.set(xlabel="layer (0 = embeddings)", ylabel="top-1 reconstruction of the input", ylim=(0, 1.02),
               title=f"top-1 agreement {a.top1_agreement:.3f}, KL {a.mean_kl:.3g}, cosine {a.mean_cosine:.3f}")
        ax.grid(alpha=0.3)
        ax.legend()
        save_figure_atomic(fig, out / "compare.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        files["png"] = str(out / "compare.png")
    return files


# --- layer-scan -------------------------------------------------------------------------------------------------


def scan_layer_maps(depth: int, op: str, layers: Sequence[int] | None = None) -> list[tuple[int, list[int]]]:
    """(edited layer, layer map) of every single-layer variant: ``duplicate`` puts a copy right after the layer."""
    chosen = range(depth) if layers is None else layers
    if op == "duplicate":
        return [(i, [*range(i + 1), *range(i, depth)]) for i in chosen]
    if op == "remove":
        if depth < 2:
            raise BertscopeError("--op remove needs a model with at least 2 layers")
        return [(i, [j for j in range(depth) if j != i]) for i in chosen]
    raise BertscopeError(f"--op must be duplicate or remove, got {op!r}")


def _common_prefix(layer_map: Sequence[int]) -> int:
    """How many leading positions of ``layer_map`` are the original's own layers 0, 1, 2, ..."""
    p = 0
    while p < len(layer_map) and layer_map[p] == p:
        p += 1
    return p


@dataclass(frozen=True)
class LayerScanResult:
    """Per edited layer: the variant's agreement with the original (and its own top-1 reconstruction)."""

    config: LayerScanConfig
    head: dict[str, Any]
    texts: dict[str, Any]
    depth: int
    original_top1: float
    rows: list[dict[str, Any]]
    files: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"command": "layer-scan", "config": self.config.to_dict(), "head": self.head, "texts": self.texts,
                "depth": self.depth, "original_top1": self.original_top1, "rows": self.rows, "files": self.files,
                "environment": self.environment,
                "assumptions": {"duplicate": "the copy of layer i is placed right after layer i",
                                "kl": "KL(original || variant), natural log",
                                "positions": "non-special, non-padding tokens unless --include-special"}}

    def metrics(self) -> dict[str, float]:
        done = [r for r in self.rows if r["status"] == "ok"]
        if not done:
            return {}
        return {"min_top1_agreement": min(r["top1_agreement"] for r in done),
                "mean_top1_agreement": sum(r["top1_agreement"] for r in done) / len(done),
                "max_mean_kl": max(r["mean_kl"] for r in done)}

    def render(self) -> Any:
        from rich.table import Table

        table = Table(title=f"layer-scan --op {self.config.op}: {self.depth} layers, head {self.head['mode']}, "
                            f"original top-1 {self.original_top1:.4f}")
        for col in ("layer", "depth", "top-1 agreement", "mean KL", "mean cosine", "variant top-1", "status"):
            table.add_column(col, justify="right" if col != "status" else "left")
        for r in self.rows:
            if r["status"] != "ok":
                table.add_row(str(r["layer"]), str(r["depth"]), "", "", "", "", "skipped (reason in JSON/CSV)")
                continue
            table.add_row(str(r["layer"]), str(r["depth"]), f"{r['top1_agreement']:.4f}", f"{r['mean_kl']:.4g}",
                          f"{r['mean_cosine']:.4f}", f"{r['variant_top1']:.4f}", "ok")
        return table


def _scan_variants(model: torch.nn.Module, maps: list[tuple[int, list[int]]]) -> list[tuple[int, list[int], str]]:
    """Each map with its status: ``ok`` or why the family cannot express it as a checkpoint."""
    out = []
    for layer, layer_map in maps:
        try:
            families.check_layer_map(model, layer_map)
            out.append((layer, layer_map, "ok"))
        except BertscopeError as exc:
            out.append((layer, layer_map, f"skipped: {exc}"))
    return out


def _run_suffixes(
    model: torch.nn.Module,
    inputs: Sequence[torch.Tensor],
    mask: torch.Tensor | None,
    segments: torch.Tensor | None,
    variants: Sequence[tuple[int, list[int], str]],
    variants_per_pass: int,
) -> list[torch.Tensor | None]:
    """Raw last-layer output of every ``ok`` variant, from the original's cached layer inputs.

    A variant whose map starts with the original's layers ``0..p-1`` starts from ``inputs[p]`` and runs only the rest
    of its map. Work is scheduled by layer: every variant whose next step is "layer ``j`` at stack position ``q``" is
    stacked along the batch dimension and runs in one call (at most ``variants_per_pass`` variants per call), so the
    weights are applied to bigger matrices and each layer is called about once per batch instead of once per variant.
    ``mask`` (padded rows) or ``segments`` (packed rows) describe one copy of the batch.
    """
    batch = inputs[0].shape[0]
    finals: list[torch.Tensor | None] = [None] * len(variants)
    pending: dict[int, tuple[int, list[int], torch.Tensor]] = {}  # variant -> (position, layers left, hidden)
    for k, (_, layer_map, status) in enumerate(variants):
        if status == "ok":
            p = _common_prefix(layer_map)
            pending[k] = (p, layer_map[p:], inputs[p])
    while pending:
        for k in [k for k, (_, left, _) in pending.items() if not left]:
            finals[k] = pending.pop(k)[2]
        if not pending:
            break
        layer, position = min((left[0], p) for p, left, _ in pending.values())
        group = [k for k, (p, left, _) in pending.items() if left[0] == layer and p == position]
        for s in range(0, len(group), variants_per_pass):
            members = group[s:s + variants_per_pass]
            stacked = torch.cat([pending[k][2] for k in members]) if len(members) > 1 else pending[members[0]][2]
            n = len(members)
            out = families.run_layers(model, stacked, None if mask is None else mask.repeat(n, 1), [layer],
                                      start=position, segments=None if segments is None else segments.repeat(n, 1))
            for k, hidden in zip(members, out.split(batch)):
                p, left, _ = pending[k]
                pending[k] = (p + 1, left[1:], hidden)
    return finals


@torch.no_grad()
def scan_batch(
    model: torch.nn.Module,
    head: HeadParts,
    ids: torch.Tensor,
    mask: torch.Tensor,
    counted: torch.Tensor,
    variants: Sequence[tuple[int, list[int], str]],
    *,
    variants_per_pass: int = 4,
    chunk: int = CHUNK,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None], list[torch.Tensor], torch.Tensor]:
    """Agreement stats of every variant on one batch, reusing the original's layer inputs.

    Returns (per variant: (agree, kl, cosine) or None when skipped; per variant [N] variant-top-1-is-input flags;
    the original's [N] top-1-is-input flags). Vocabulary logits exist for at most ``chunk`` rows of one model at a
    time; the original's log-probabilities of a chunk are computed once and shared by every variant. Families that
    can (:func:`bertscope.families.can_pack`) run the layers on packed rows when that saves padding.
    """
    depth = families.num_layers(model)
    hidden0 = families.embed(model, ids, mask)
    layout = packing.layout_for(mask) if families.can_pack(model) else None
    run_mask: torch.Tensor | None
    segments: torch.Tensor | None
    if layout is None or layout.positions >= mask.numel():  # not packable, or packing saves no padding
        run_mask, segments = mask, None

        def pick(hidden: torch.Tensor) -> torch.Tensor:
            return hidden[counted]
    else:
        packed_layout, counted_real = layout, counted[mask.bool()]
        hidden0, run_mask, segments = packing.pack(hidden0, mask, layout), None, layout.segments

        def pick(hidden: torch.Tensor) -> torch.Tensor:
            return packing.unpack(hidden, packed_layout)[counted_real]
    states = families.run_layers(model, hidden0, run_mask, list(range(depth)), all_states=True, segments=segments)
    inputs = [hidden0, *states]  # inputs[p] = input of stack position p (inputs[depth] = raw last output)
    final = pick(families.finalize_hidden(model, states[-1]))
    targets = ids[counted]
    raw = _run_suffixes(model, inputs, run_mask, segments, variants, max(1, variants_per_pass))
    del inputs, states
    v_finals = [None if r is None else pick(families.finalize_hidden(model, r)) for r in raw]
    feats = head.features(final, is_last_layer=True)
    v_feats = [None if v is None else head.features(v, is_last_layer=True) for v in v_finals]
    parts: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in variants]
    original_top = []
    for s in range(0, feats.shape[0], chunk):
        logits = head.decode(feats[s:s + chunk])
        top = logits.argmax(-1)
        logp = torch.log_softmax(logits.float(), dim=-1)
        p = logp.exp()
        original_top.append(top)
        for k, vf in enumerate(v_feats):
            if vf is not None:
                v_logits = head.decode(vf[s:s + chunk])
                v_top = v_logits.argmax(-1)
                kl = kl_from_log_probs(logp, torch.log_softmax(v_logits.float(), dim=-1), p)
                parts[k].append((top == v_top, kl, v_top))
    original_hits = torch.cat(original_top) == targets if original_top else targets.bool()
    stats: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = []
    hits: list[torch.Tensor] = []
    for k, v_final in enumerate(v_finals):
        if v_final is None:
            stats.append(None)
            hits.append(targets.new_zeros(0).bool())
        elif parts[k]:
            agree, kl, v_top = (torch.cat(x) for x in zip(*parts[k]))
            stats.append((agree, kl, cosine_similarity(final, v_final)))
            hits.append(v_top == targets)
        else:
            z = final.new_zeros(0)
            stats.append((z.bool(), z, z))
            hits.append(z.bool())
    return stats, hits, original_hits


def run_layer_scan(config: LayerScanConfig) -> LayerScanResult:
    """Every single-layer duplicate (or remove) variant of ``config.model``, measured against the original."""
    from bertscope.surgery import parse_layer_list

    device = loading.resolve_device(config.device)
    prepare_out_dir(config.out)
    torch.manual_seed(config.seed)
    source = _texts(config)
    tokenizer = loading.load_tokenizer(config.model)
    loaded = loading.load_model(config.model, "masked-lm", device=device, dtype=config.dtype)
    model = loaded.model
    depth = families.num_layers(model)
    chosen = parse_layer_list(config.layers, depth, what="--layers") if config.layers is not None else None
    variants = _scan_variants(model, scan_layer_maps(depth, config.op, chosen))
    heads, head_info = _choose_heads(config, [loaded], tokenizer, source)
    head = heads[0]
    sums = [AgreementSums() for _ in variants]
    variant_hits = [0 for _ in variants]
    original_hits = positions = 0
    sentences = list(source.sentences)
    n_batches = math.ceil(len(sentences) / config.batch_size)
    for ids, mask, counted in _tqdm(_batches(tokenizer, sentences, config, device), n_batches,
                                    f"layer-scan {config.op}", config.progress):
        stats, hits, orig = scan_batch(model, head, ids, mask, counted, variants,
                                       variants_per_pass=config.variants_per_pass)
        original_hits += int(orig.sum())
        positions += int(orig.numel())
        for k, st in enumerate(stats):
            if st is not None:
                sums[k].add(*st)
                variant_hits[k] += int(hits[k].sum())
    rows = []
    for k, (layer, layer_map, status) in enumerate(variants):
        row: dict[str, Any] = {"layer": layer, "op": config.op, "depth": len(layer_map),
                               "layer_map": ",".join(map(str, layer_map)),
                               "status": "ok" if status == "ok" else "skipped",
                               "reason": "" if status == "ok" else status.removeprefix("skipped: ")}
        if status == "ok":
            m = sums[k].result()
            row.update(m.to_dict())
            row["variant_top1"] = variant_hits[k] / m.positions if m.positions else math.nan
        rows.append(row)
    result = LayerScanResult(config=config, head=head_info, texts=source.describe(), depth=depth,
                             original_top1=original_hits / positions if positions else math.nan, rows=rows,
                             environment=environment_info())
    if config.out:
        files = _write_scan(Path(config.out), result)
        result = LayerScanResult(**{**result.__dict__, "files": files})
        write_json_atomic(Path(config.out) / "layer_scan.json", result.to_dict())
    return result


def _write_scan(out: Path, result: LayerScanResult) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_csv_atomic(out / "layer_scan.csv", result.rows)
    done = [r for r in result.rows if r["status"] == "ok"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    xs = [r["layer"] for r in done]
    for ax, key, label in zip(axes, ("top1_agreement", "mean_kl", "mean_cosine"),
                              ("top-1 agreement", "mean KL (nats)", "mean cosine")):
        ax.plot(xs, [r[key] for r in done], marker="o")
        ax.set(xlabel=f"{result.config.op}d layer", ylabel=label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"layer-scan --op {result.config.op} ({result.config.model or 'default model'})")
    save_figure_atomic(fig, out / "layer_scan.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return {"json": str(out / "layer_scan.json"), "csv": str(out / "layer_scan.csv"),
            "png": str(out / "layer_scan.png")}


COMMAND = CommandInfo("compare", CompareConfig, run_compare, CompareResult,
                      "agreement of an original and a variant model on real text (top-1, KL, cosine)")
SCAN_COMMAND = CommandInfo("layer-scan", LayerScanConfig, run_layer_scan, LayerScanResult,
                           "measure every single-layer duplicate/remove variant in memory")
