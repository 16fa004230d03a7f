"""``bertscope compare``: how much a layer edit changes a model, measured on real text against the original.

``compare`` runs one saved variant and its original on the same sentences and reports their agreement
(:mod:`bertscope.lens.agreement`: top-1 agreement of the masked-LM heads, KL(original || variant), cosine of the final
hidden states) and both models' per-layer reconstruction curves (the lens pass,
:func:`bertscope.lens.lens_pass.score_layers`, as ``reconstruct`` runs it; the curves count hidden-state indices,
0 = embedding output). ``layer-scan`` (:mod:`bertscope.surgery.layer_scan`) measures every single-layer variant in
memory and shares this module's sentence batches and head choice (:func:`sentence_batches`, :func:`choose_heads`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from bertscope.core.device import resolve_device
from bertscope.core.errors import BertscopeError
from bertscope.core.figures import save_figure
from bertscope.core.options import HIDDEN_STATE, NUMBERING_NOTES
from bertscope.core.progress import progress_bar
from bertscope.core.registry import CommandInfo
from bertscope.core.results import environment_info, prepare_out_dir, write_csv_atomic, write_json_atomic
from bertscope.data.labels import model_name, texts_name
from bertscope.lens.agreement import AgreementMetrics, AgreementSums, agreement_stats
from bertscope.lens.lens_pass import score_layers
from bertscope.lens.metrics import LayerMetrics, MetricSums, metric_label
from bertscope.models import families, loading
from bertscope.models.families import HeadParts
from bertscope.surgery.config import CompareConfig, LayerScanConfig

__all__ = [
    "CompareResult",
    "choose_heads",
    "load_sentences",
    "run_compare",
    "sentence_batches",
]


# --- sentences and heads (shared with layer-scan) ---------------------------------------------------------------


def load_sentences(config: CompareConfig | LayerScanConfig) -> Any:
    """The :class:`bertscope.data.texts.TextSource` the config names (built-in sample, text file or GLUE split)."""
    from bertscope.data.texts import load_texts

    return load_texts(texts=config.text.texts, task=config.text.task, split=config.text.split, data_dir=config.text.data_dir,
                      max_examples=config.text.max_examples, seed=config.encoder.seed)


def sentence_batches(tokenizer: Any, sentences: Sequence[str], config: CompareConfig | LayerScanConfig,
             device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask, counted) per batch; ``counted`` marks the positions the metrics use.

    Sentences are batched longest first, so each batch holds similar lengths and little padding; every metric is a
    sum over positions, so the order changes nothing but the time.
    """
    encoded = tokenizer(list(sentences), truncation=True, max_length=config.encoder.max_length,
                        return_special_tokens_mask=True)  # tokenised once; batches are padded from it
    keys = ("input_ids", "attention_mask", "special_tokens_mask")
    order = sorted(range(len(sentences)), key=lambda i: -len(encoded["input_ids"][i]))
    for start in range(0, len(order), config.encoder.batch_size):
        rows = [{k: encoded[k][i] for k in keys} for i in order[start:start + config.encoder.batch_size]]
        enc = tokenizer.pad(rows, return_tensors="pt")
        mask = enc["attention_mask"].bool()
        counted = mask if config.include_special else mask & ~enc["special_tokens_mask"].bool()
        yield enc["input_ids"].to(device), enc["attention_mask"].to(device), counted.to(device)


def choose_heads(
    config: CompareConfig | LayerScanConfig, loaded: Sequence[loading.LoadedModel], tokenizer: Any, source: Any
) -> tuple[list[HeadParts], dict[str, Any]]:
    """One head per model: each checkpoint's own, or one head fitted on the *first* model's final layer, shared.

    A model that records a deepen origin (a variant made by ``deepen``) is decoded with the first model's pretrained
    head rather than its own copy of it.

    Sharing the fitted head keeps the comparison about the encoders: both models are decoded by the same weights.
    """
    have = [lm.has_pretrained_mlm_head for lm in loaded]
    mode = config.head
    if mode == "pretrained" and not all(have):
        missing = next(lm.source for lm, h in zip(loaded, have) if not h)
        raise BertscopeError(f"{missing} has no pretrained masked-LM head (its weights hold none); "
                             "use --head fit to fit one on the frozen final layer, or --head auto")
    if mode == "pretrained" or (mode == "auto" and all(have)):
        heads = [families.mlm_head_parts(lm.model, "full") for lm in loaded]
        info: dict[str, Any] = {"mode": "pretrained", "requested": config.head}
        # a variant made by deepen is decoded with the original's head (paper 1 keeps the original output layer)
        from bertscope.models.origin import deepen_origin

        borrowed = [i for i, lm in enumerate(loaded) if i and deepen_origin(lm.model.config) is not None]
        for i in borrowed:
            heads[i] = replace(heads[0], pre_norm=families.final_norm(loaded[i].model))
        if borrowed:
            info["original_head_for"] = [loaded[i].source for i in borrowed]
        return heads, info
    from bertscope.lens.fitted_head import FitOptions, fit_for_texts

    options = FitOptions(steps=config.fit_head.fit_steps, lr=config.fit_head.fit_lr, batch_size=config.fit_head.fit_batch_size,
                         mask_prob=config.fit_head.fit_mask_prob, tie_decoder=config.fit_head.fit_tie, max_length=config.encoder.max_length,
                         curve=FitOptions.curve if config.fit_head.fit_curve else ())
    with torch.enable_grad():  # fitting trains the head even when a caller runs under no_grad
        fitted = fit_for_texts(loaded[0].model, tokenizer, source, fit_corpus=config.fit_head.fit_corpus,
                               data_dir=config.text.data_dir, overlap=config.fit_head.fit_overlap, options=options,
                               seed=config.encoder.seed, dtype=config.encoder.dtype, cache_dir=config.fit_head.head_cache,
                               refit=config.fit_head.refit, progress=config.output.progress, model_source=loaded[0].source)
    info = {"mode": "fit", "requested": config.head, "fitted_on": loaded[0].source,
            "shared_by": [lm.source for lm in loaded], "fit": fitted.info}
    return [fitted.parts(lm.model) for lm in loaded], info


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
                "files": self.files, "environment": self.environment, "layer_numbering": HIDDEN_STATE,
                "layer_numbering_note": NUMBERING_NOTES[HIDDEN_STATE],
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
        table = Table(title=f"compare: {self.config.encoder.model or 'default'} vs {self.config.variant} "
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


def _curve_rows(sums: dict[tuple[int, str], MetricSums]) -> list[dict[str, Any]]:
    """One row per hidden state: its token count and every lens metric of one token's rank and NLL."""
    rows = []
    for (layer, _), s in sorted(sums.items()):
        r = s.result()
        rows.append({"layer": layer, "tokens": r.tokens, **{name: r.values[name] for name in LayerMetrics.names()}})
    return rows


def run_compare(config: CompareConfig) -> CompareResult:
    """Run ``config.encoder.model`` and ``config.variant`` on the same sentences and measure how much they agree."""
    device = resolve_device(config.encoder.device)
    prepare_out_dir(config.output.out)
    torch.manual_seed(config.encoder.seed)
    source = load_sentences(config)
    tokenizer = loading.load_tokenizer(config.encoder.model)
    original = loading.load_model(config.encoder.model, "masked-lm", device=device, dtype=config.encoder.dtype,
                                  attention=config.encoder.attention)
    variant = loading.load_model(config.variant, "masked-lm", device=device, dtype=config.encoder.dtype,
                                 attention=config.encoder.attention)
    _same_vocab(original.model, variant.model)
    for lm in (original, variant):
        families.check_max_length(config.encoder.max_length, lm.model)
    heads, head_info = choose_heads(config, [original, variant], tokenizer, source)
    names = ("original", "variant")
    depths = {n: families.num_layers(lm.model) for n, lm in zip(names, (original, variant))}
    curve_sums = {n: {(layer, "all"): MetricSums() for layer in range(depths[n] + 1)} for n in names}
    sums = AgreementSums()
    sentences = list(source.sentences)
    n_batches = math.ceil(len(sentences) / config.encoder.batch_size)
    for ids, mask, counted in progress_bar(sentence_batches(tokenizer, sentences, config, device), total=n_batches,
                                           desc="compare", progress=config.output.progress):
        _compare_batch(ids, mask, counted, (original, variant), heads, names, curve_sums, sums, config.curves)
    curves = {n: _curve_rows(curve_sums[n]) if config.curves else [] for n in names}
    result = CompareResult(config=config, head=head_info, texts=source.describe(), depths=depths,
                           agreement=sums.result(), curves=curves,
                           environment={**environment_info(),
                                        "attention": {n: lm.attention for n, lm in zip(names, (original, variant))}})
    if config.output.out:
        files = _write_compare(Path(config.output.out), result)
        result = CompareResult(**{**result.__dict__, "files": files})
        write_json_atomic(Path(config.output.out) / "compare.json", result.to_dict())
    return result


@torch.no_grad()
def _compare_batch(ids: torch.Tensor, mask: torch.Tensor, counted: torch.Tensor,
                   models: Sequence[loading.LoadedModel], heads: Sequence[HeadParts], names: Sequence[str],
                   curve_sums: dict[str, dict[tuple[int, str], MetricSums]], sums: AgreementSums,
                   curves: bool) -> None:
    finals = []
    targets = ids[counted]
    for name, lm, head in zip(names, models, heads):
        base = lm.model.base_model
        states = base(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        finals.append(states[-1][counted])
        if curves:  # the lens pass on this batch: every hidden state scored against the input tokens
            score_layers(curve_sums[name], head, states, counted, targets, layers=range(len(states)),
                         final_agreement=False)
    sums.add(*agreement_stats(heads[0], finals[0], heads[1], finals[1]))


def _write_compare(out: Path, result: CompareResult) -> dict[str, str]:
    rows = [{"model": name, **row} for name, rs in result.curves.items() for row in rs]
    agreement = {"model": "agreement", **result.agreement.to_dict()}
    files = {"json": str(out / "compare.json"), "csv": str(out / "compare.csv")}
    write_csv_atomic(out / "compare.csv", [*rows, agreement] if rows else [agreement])
    if rows:
        files.update(_plot_compare(out / "compare.png", result))
    return files


def _plot_compare(path: Path, result: CompareResult) -> dict[str, str]:
    """Both models' top-1 reconstruction per hidden state (PNG, SVG, PDF); the title names both models, the texts
    and the agreement numbers (one run: no error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = {"original": model_name(result.config.encoder.model), "variant": model_name(result.config.variant)}
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for name, rs in result.curves.items():
        ax.plot([r["layer"] for r in rs], [r["top1"] for r in rs], marker="o",
                label=f"{name}: {names.get(name, name)} ({len(rs) - 1} layers)")
    a = result.agreement
    ax.set(xlabel="hidden state (0 = embeddings, l = output of layer l)", ylabel=metric_label("top1"),
           ylim=(0, 1.02))
    ax.set_title(f"{names['variant']} vs {names['original']} on {texts_name(result.texts)}\n"
                 f"{metric_label('top1_agreement')} {a.top1_agreement:.3f}, mean KL {a.mean_kl:.3g} nats, "
                 f"mean cosine {a.mean_cosine:.3f} (one run, no error bars)", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # hidden states are whole numbers
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, close=True, bbox_inches="tight")


COMMAND = CommandInfo("compare", CompareConfig, run_compare, CompareResult,
                      "agreement of an original and a variant model on real text (top-1, KL, cosine)")
