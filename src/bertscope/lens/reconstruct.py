"""``bertscope reconstruct``: decode every hidden layer with the masked-LM head and score the input tokens.

For every hidden state l = 0..L (0 = embedding output, l = output of transformer layer l; ``--layers`` counts
these hidden-state indices, see :mod:`bertscope.core.options`) the head is applied to ``hidden_states[l]`` at every counted
position and the *input* token is scored (top-1, top-5, mean rank, NLL, exact sentences; see :mod:`bertscope.lens.metrics`),
and each layer's top-1 decoded token is compared with the final layer's (``final_agreement``, 1.0 at the last layer;
:mod:`bertscope.lens.agreement`). A few sentences are also drawn token by token (:mod:`bertscope.lens.token_view`).

Whose head decodes (``--head-from``): a variant made by ``deepen`` records its origin, and by default is decoded with
the *original's* head (its pretrained MLM head, or the head fitted on the original's final layer), as paper 1 keeps
the original output layer; ``--head-from self`` decodes with the variant's own (or one fitted on the variant).

How it runs (and why it is fast): sentences are tokenised once and sorted by length so batches carry little
padding; the bare encoder runs once per batch with all hidden states; only counted positions (real, non-special
tokens by default) are gathered, and the head decodes them chunk by chunk, layer by layer. Masks for ``--mask-prob``
are drawn per sentence from a seeded generator, so no number depends on batch size, padding or order.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bertscope.core.device import resolve_device
from bertscope.core.errors import BertscopeError
from bertscope.core.figures import readable_log_axis, save_figure, style_words
from bertscope.core.options import HIDDEN_STATE, NUMBERING_NOTES, parse_hidden_states
from bertscope.core.registry import LOCATION_OPTIONS, CommandInfo
from bertscope.core.results import environment_info, prepare_out_dir, write_csv_atomic, write_json_atomic
from bertscope.data.labels import metric_name, model_name, texts_name
from bertscope.data.texts import TextSource, load_texts
from bertscope.lens.agreement import agrees_with_final
from bertscope.lens.config import ReconstructConfig
from bertscope.lens.fitted_head import FitOptions, bert_mask, fit_for_texts
from bertscope.lens.metrics import (
    DEFAULT_CHUNK_SIZE,
    LayerMetrics,
    MetricSums,
    decode_tokens,
    head_token_stats_top1,
    head_top1,
)
from bertscope.lens.token_view import MAX_TOKENS, TokenView, write_token_views
from bertscope.lens.tuned import LensComparison, TunedLens, tuned_for_texts
from bertscope.lens.tuned_view import lens_metrics, lens_section, render_lens, write_lens
from bertscope.models import caveats, families, loading
from bertscope.models.origin import CONFIG_NOTE_KEY, deepen_origin, origin_source
from bertscope.models.packing import pad_rows

__all__ = ["Encoded", "LayerRecord", "ReconstructResult", "encode_sentences", "lens_pass", "run_reconstruct",
           "token_views"]

_log = logging.getLogger("bertscope")
METRIC_NAMES = ("top1", "top5", "mean_rank", "nll", "exact", "final_agreement")


@dataclass(frozen=True)
class LayerRecord:
    """Metrics of one layer over one group of positions (``all``, or ``masked`` / ``unmasked`` with --mask-prob)."""

    layer: int
    group: str
    tokens: int
    sentences: int
    top1: float
    top5: float
    mean_rank: float
    nll: float
    exact: float
    final_agreement: float = float("nan")

    @classmethod
    def of(cls, layer: int, group: str, m: LayerMetrics) -> LayerRecord:
        return cls(layer=layer, group=group, **dataclasses.asdict(m))


@dataclass(frozen=True)
class ReconstructResult:
    """Per-layer reconstruction of the input by the MLM head, with everything needed to trace the numbers."""

    config: ReconstructConfig
    model: dict[str, Any]
    head: dict[str, Any]
    texts: dict[str, Any]
    records: tuple[LayerRecord, ...]
    examples: tuple[dict[str, Any], ...] = ()
    counting: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    token_views: tuple[TokenView, ...] = ()
    lens: dict[str, Any] = field(default_factory=dict)  # --lens tuned: both lenses side by side (lens.tuned_view)

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(r.group for r in self.records))

    def record(self, layer: int, group: str = "all") -> LayerRecord:
        for r in self.records:
            if r.layer == layer and r.group == group:
                return r
        raise KeyError((layer, group))

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "reconstruct",
            "config": self.config.to_dict(),
            "model": self.model,
            "head": self.head,
            "texts": self.texts,
            "caveats": self.caveats,
            "counting": self.counting,
            "layer_numbering": HIDDEN_STATE,
            "layer_numbering_note": NUMBERING_NOTES[HIDDEN_STATE],
            "metric_definitions": {
                "top1": "share of counted tokens whose input token has the highest logit",
                "top5": "share of counted tokens whose input token is among the 5 highest logits",
                "mean_rank": "mean 1-based rank of the input token (1 = first choice; ties count in its favour)",
                "nll": "mean negative log-likelihood of the input token, natural log (nats)",
                "exact": "share of sentences whose counted tokens are all top-1",
                "final_agreement": "share of counted tokens whose top-1 decoded token equals the final layer's "
                                   "top-1 there (1.0 at the last layer; Din et al. 2024)",
            },
            "records": [dataclasses.asdict(r) for r in self.records],
            "examples": list(self.examples),
            "token_view": [v.to_dict() for v in self.token_views],
            "timing": self.timing,
            "environment": self.environment,
            "files": self.files,
            **({"lens": self.lens} if self.lens else {}),
        }

    @property
    def caveats(self) -> list[str]:
        """Model caveats (native pooling, GLUE tasks in its training data: :mod:`bertscope.models.caveats`)."""
        return caveats.notes(self.config.model, self.config.task, None, path=self.model.get("source"))

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        last = max(r.layer for r in self.records)
        for r in self.records:
            prefix = f"layer{r.layer}" + ("" if r.group == "all" else f".{r.group}")
            for name in METRIC_NAMES:
                out[f"{prefix}.{name}"] = getattr(r, name)
            if r.layer == last:
                final = "final" + ("" if r.group == "all" else f".{r.group}")
                for name in METRIC_NAMES:
                    out[f"{final}.{name}"] = getattr(r, name)
        fit = self.head.get("fit") or {}
        if fit.get("heldout_masked_top1") is not None:
            out["head.heldout_masked_top1"] = float(fit["heldout_masked_top1"])
        if self.lens:
            out.update(lens_metrics(self.lens))
        return out

    def render(self) -> Any:
        from rich.table import Table

        head = _head_label(self.head)
        title = (f"reconstruct: {self.model['name']} ({self.model['family']}, {self.model['num_layers']} layers), "
                 f"head {head}, {self.texts.get('num_sentences')} sentences")
        table = Table(title=title, title_justify="left")
        several = len(self.groups) > 1
        table.add_column("layer", justify="right")
        if several:
            table.add_column("positions")
        for label in ("tokens", "top-1", "top-5", "mean rank", "NLL", "exact sent.", "agree final"):
            table.add_column(label, justify="right")
        for r in self.records:
            row = [str(r.layer)] + ([r.group] if several else [])
            row += [str(r.tokens), _pct(r.top1), _pct(r.top5), _num(r.mean_rank, 1), _num(r.nll, 3), _pct(r.exact),
                    _pct(r.final_agreement)]
            table.add_row(*row)
        notes = [f"decoded with {_head_words(self.head)}"]
        fit = self.head.get("fit")
        if fit:
            acc = fit.get("heldout_masked_top1")
            notes.append(f"fitted head ({'reused from cache' if fit.get('reused') else 'fitted now'}): final-layer "
                         f"masked-token top-1 on held-out text {_pct(acc) if acc is not None else 'n/a'}")
            notes.extend(_fit_notes(fit))
        notes.extend(f"caveat: {line}" for line in self.caveats)
        if self.files:
            notes.append("wrote " + ", ".join(sorted(self.files.values())))
        table.caption = "\n".join(notes) if notes else None
        table.caption_justify = "left"
        if self.lens:
            from rich.console import Group

            return Group(table, render_lens(self.lens))
        return table


def _head_label(head: dict[str, Any]) -> str:
    """``fit``, ``pretrained/full``, ``pretrained/full of the original``: the head in a title."""
    label = head["mode"] + (f"/{head['part']}" if head["mode"] == "pretrained" else "")
    owner = head.get("head_from", {}).get("from")
    return label + {"original": " of the original", "path": " of another model"}.get(owner or "self", "")


def _head_words(head: dict[str, Any]) -> str:
    owner = head.get("head_from") or {}
    whose = {"original": "the original's", "path": "another model's"}.get(owner.get("from", "self"), "the model's own")
    kind = "fitted head" if head["mode"] == "fit" else "pretrained MLM head"
    where = f" ({owner['source']})" if owner.get("from") in ("original", "path") else ""
    return f"{whose} {kind}{where}"


def _fit_notes(fit: dict[str, Any]) -> list[str]:
    """Which text fitted the head and which was measured, the overlap, and the growth curve (issue 11, 6d/6e)."""
    corpus, measured, overlap = fit.get("corpus") or {}, fit.get("measured_texts") or {}, fit.get("fit_overlap") or {}
    notes = [f"fit on {corpus.get('kind')} ({corpus.get('train_sentences')} of {corpus.get('available_sentences')} "
             f"sentences, sha256 {str(corpus.get('sha256'))[:12]}); measured on {measured.get('kind')} "
             f"({measured.get('num_sentences')} sentences, sha256 {str(measured.get('sha256'))[:12]}); "
             f"{overlap.get('measured_in_fit', 0)} measured sentences in the fit corpus"]
    if overlap.get("flagged"):
        notes.append(f"FLAGGED: {overlap['measured_in_fit']} of {overlap['measured']} measured sentences are in the "
                     "fit corpus (--fit-overlap allow): these numbers partly measure the head's memory")
    if corpus.get("warning"):
        notes.append(f"warning: {corpus['warning']}")
    curve = fit.get("growth_curve") or []
    if len(curve) > 1:
        notes.append("held-out masked top-1 by fit sentences: " + ", ".join(
            f"{c['sentences']}: {_pct(c['heldout_masked_top1'])}" for c in curve))
    return notes


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


def _num(value: float, digits: int) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


# ------------------------------------------------------------------------------------------------- the run


def _head_owner(config: ReconstructConfig, loaded: loading.LoadedModel,
                device: torch.device) -> tuple[loading.LoadedModel, dict[str, Any]]:
    """The model whose head decodes (per --head-from), and what the result file says about where it came from."""
    choice = config.head_from.strip()
    origin = deepen_origin(loaded.model.config)
    if choice == "self" or (choice == "auto" and origin is None):
        why = "--head-from self" if choice == "self" else "the model records no deepen origin"
        return loaded, {"from": "self", "requested": choice, "source": loaded.source, "reason": why}
    if choice in ("auto", "original"):
        if origin is None:
            raise BertscopeError(
                f"--head-from original: {loaded.source} records no deepen origin (no '{CONFIG_NOTE_KEY}' in "
                "its config.json); name the original instead (--head-from ID_OR_PATH) or use --head-from self")
        name, kind = origin_source(origin), "original"
        why = f"the model was made by deepen from {name} (recorded in its config.json); paper 1 keeps the " \
              "original's output layer"
    else:
        name, kind, why = choice, "path", "--head-from names it"
    try:
        owner = loading.load_model(name, "masked-lm", device=device, dtype=config.dtype, attention=config.attention)
    except BertscopeError as exc:
        hint = "; --head-from self decodes with the model's own head" if kind == "original" else ""
        raise BertscopeError(f"--head-from {choice}: cannot load {name} ({exc}){hint}") from None
    for what, a, b in (("vocabulary", int(owner.model.config.vocab_size), int(loaded.model.config.vocab_size)),
                       ("hidden size", families.hidden_size(owner.model), families.hidden_size(loaded.model))):
        if a != b:
            raise BertscopeError(f"--head-from {choice}: {name} has a different {what} ({a} vs {b}); its head "
                                 "cannot decode this model")
    info: dict[str, Any] = {"from": kind, "requested": choice, "source": owner.source, "reason": why,
                            "attention": owner.attention}  # its encoder runs when a head is fitted on it
    if origin is not None:
        info["deepen_origin"] = {k: origin.get(k) for k in ("source_model", "layer_map", "old_depth")}
        recorded = origin.get("source_weights_fingerprint")
        if recorded is not None and kind == "original":
            info["origin_weights_match"] = recorded == loading.weights_fingerprint(owner.model)
            if not info["origin_weights_match"]:
                _log.warning("the original loaded from %s differs from the one the variant was made from "
                             "(weights fingerprint; a different dtype also changes it)", name)
    return owner, info


def _resolve_head(config: ReconstructConfig, loaded: loading.LoadedModel, tokenizer: Any, source: TextSource,
                  dtype_name: str) -> tuple[families.HeadParts, dict[str, Any]]:
    """The head to decode with, per --head-from / --head / --head-part, and what the result file says about it.

    --head-from picks the owner (the model itself, its deepen origin, or a named model); --head then picks that
    owner's pretrained head or one fitted on the owner's frozen final layer. A head borrowed from another model
    keeps this model's own final norm (pre-norm families), which is part of the encoder, not of the head.
    """
    device = next(loaded.model.parameters()).device
    owner, owner_info = _head_owner(config, loaded, device)
    mode = config.head
    has_head = owner.has_pretrained_mlm_head
    if mode == "auto":
        mode = "pretrained" if has_head else "fit"
    if mode == "pretrained":
        if not has_head:
            raise BertscopeError(
                f"{owner.source} has no pretrained masked-LM head (its weights hold none); "
                "use --head fit to fit one on the frozen final layer, or --head auto"
            )
        parts = families.mlm_head_parts(owner.model, config.head_part)  # type: ignore[arg-type]
        if owner is not loaded:
            parts = dataclasses.replace(parts, pre_norm=families.final_norm(loaded.model))
        return parts, {"mode": "pretrained", "requested": config.head, "part": config.head_part,
                       "head_from": owner_info}
    options = FitOptions(steps=config.fit_steps, lr=config.fit_lr, batch_size=config.fit_batch_size,
                         mask_prob=config.fit_mask_prob, tie_decoder=config.fit_tie, max_length=config.max_length,
                         curve=FitOptions.curve if config.fit_curve else ())
    fitted = fit_for_texts(  # fit corpus and measured text are checked for overlap first (issue 11, 6d)
        owner.model, tokenizer, source, fit_corpus=config.fit_corpus, data_dir=config.data_dir,
        overlap=config.fit_overlap, options=options, seed=config.seed, dtype=dtype_name,
        cache_dir=config.head_cache, refit=config.refit, progress=config.progress, model_source=owner.source,
    )
    info = {"mode": "fit", "requested": config.head, "part": "full (fitted)", "fit": fitted.info,
            "head_from": owner_info}
    if config.head_part != "full":
        info["note"] = "--head-part applies to pretrained heads only; the fitted head is always used whole"
    return fitted.parts(loaded.model), info


@dataclass
class Encoded:
    """Tokenised sentences, ready for :func:`lens_pass`."""

    ids: list[torch.Tensor]          # the (possibly masked) input ids per sentence
    targets: list[torch.Tensor]      # the original ids (what the head should reconstruct)
    counted: list[torch.Tensor]      # bool: position enters the metrics
    selected: list[torch.Tensor]     # bool: position was selected for masking
    truncated: int


def encode_sentences(tokenizer: Any, sentences: Sequence[str], *, max_length: int = 128,
                     include_special: bool = False, mask_prob: float = 0.0, seed: int = 0) -> Encoded:
    """Tokenise once; mark counted positions; draw per-sentence seeded BERT masks when ``mask_prob`` > 0."""
    enc = tokenizer(list(sentences), truncation=True, max_length=max_length, return_special_tokens_mask=True)
    full = tokenizer(list(sentences), truncation=False, add_special_tokens=True)["input_ids"]
    truncated = sum(len(f) > max_length for f in full)
    mask_id = tokenizer.mask_token_id
    if mask_prob > 0 and mask_id is None:
        raise BertscopeError("--mask-prob needs a tokenizer with a mask token; this one has none")
    vocab = len(tokenizer)
    out = Encoded([], [], [], [], truncated)
    for i, (ids, special) in enumerate(zip(enc["input_ids"], enc["special_tokens_mask"])):
        ids_t = torch.tensor(ids, dtype=torch.long)
        normal = torch.tensor(special, dtype=torch.bool).logical_not()
        counted = torch.ones_like(normal) if include_special else normal
        if mask_prob > 0:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + i)
            masked, selected = bert_mask(ids_t, normal, mask_prob, generator, mask_id, vocab)
        else:
            masked, selected = ids_t, torch.zeros_like(normal)
        out.ids.append(masked)
        out.targets.append(ids_t)
        out.counted.append(counted)
        out.selected.append(selected)
    return out


def _pad_flags(rows: list[torch.Tensor]) -> torch.Tensor:
    return pad_rows(rows, False, dtype=torch.bool)[0]


def _chunk_size(vocab: int) -> int:
    """Rows of logits decoded at once: about 4M logits (16 MB in fp32; ~137 rows for BERT's vocabulary), at least 16.

    Blocks under glibc's 32 MB mmap ceiling are recycled by the allocator instead of being page-faulted in anew.
    """
    return max(16, min(4 * DEFAULT_CHUNK_SIZE, (1 << 22) // max(1, vocab)))


def lens_pass(
    model: torch.nn.Module,
    head: families.HeadParts,
    encoded: Encoded,
    *,
    layers: Sequence[int],
    batch_size: int = 32,
    pad_id: int | None = 0,
    groups: Sequence[str] = ("all",),
    progress: bool = False,
    on_batch: Callable[[list[int], Sequence[torch.Tensor], torch.Tensor, torch.Tensor], None] | None = None,
) -> dict[tuple[int, str], MetricSums]:
    """Score every layer in ``layers``: one encoder forward per length-sorted batch, head on counted tokens only.

    Returns running sums per (layer, group), each with its agreement with the final layer's top-1 (decoded too when
    ``layers`` leaves it out); groups are ``all``, ``masked`` and ``unmasked``. ``on_batch`` sees
    each batch's sentence indices, hidden states, counted-position mask and attention mask (e.g. to keep examples).
    """
    from tqdm.auto import tqdm

    depth = families.num_layers(model)
    device = next(model.parameters()).device
    pad_id = 0 if pad_id is None else pad_id
    sums = {(layer, g): MetricSums() for layer in layers for g in groups}
    chunk = _chunk_size(head.weight.shape[0])
    order = sorted(range(len(encoded.ids)), key=lambda i: (-encoded.ids[i].shape[0], i))
    encoder = families.base_encoder(model)
    bar = tqdm(total=len(order), desc="reconstructing", unit="sent", disable=not progress, leave=False)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            ids, attention = pad_rows([encoded.ids[i] for i in batch], pad_id)
            ids, attention = ids.to(device), attention.to(device)
            counted = _pad_flags([encoded.counted[i] for i in batch]).to(device) & attention.bool()
            targets = pad_rows([encoded.targets[i] for i in batch], pad_id)[0].to(device)[counted]
            selected = _pad_flags([encoded.selected[i] for i in batch]).to(device)[counted]
            rows = torch.arange(len(batch), device=device).unsqueeze(1).expand_as(counted)[counted]
            hidden_states = encoder(input_ids=ids, attention_mask=attention, output_hidden_states=True).hidden_states
            picks = {"all": None, "masked": selected, "unmasked": ~selected}
            final_top1 = None
            if depth not in layers:  # the final layer's top-1 is the reference of every layer's agreement
                final_top1 = head_top1(head, hidden_states[depth][counted], is_last_layer=True, chunk_size=chunk)
            for layer in sorted(layers, key=lambda x: x != depth):  # the final layer first
                hidden = hidden_states[layer][counted]
                rank, nll, top1 = head_token_stats_top1(head, hidden, targets, is_last_layer=layer == depth,
                                                        chunk_size=chunk)
                if layer == depth:
                    final_top1 = top1
                assert final_top1 is not None
                agree = agrees_with_final(top1, final_top1)
                for g in groups:
                    pick = picks[g]
                    if pick is None:
                        sums[layer, g].add(rank, nll, rows, len(batch))
                        sums[layer, g].add_final_agreement(agree)
                    else:
                        sums[layer, g].add(rank[pick], nll[pick], rows[pick], len(batch))
                        sums[layer, g].add_final_agreement(agree[pick])
            if on_batch is not None:
                on_batch(batch, hidden_states, counted, attention)
            bar.update(len(batch))
    bar.close()
    return sums


def run_reconstruct(config: ReconstructConfig) -> ReconstructResult:
    """Run the lens as configured; writes reconstruct.json/.csv and the figure (.png/.svg/.pdf) when ``config.out``
    is set."""

    started = time.perf_counter()
    source = load_texts(texts=config.texts, task=config.task, split=config.split, data_dir=config.data_dir,
                        max_examples=config.max_examples, seed=config.seed)
    out_dir = prepare_out_dir(config.out)
    device = resolve_device(config.device)
    loaded = loading.load_model(config.model, "masked-lm", device=device, dtype=config.dtype,  # loads quietly
                                attention=config.attention)
    tokenizer = loading.load_tokenizer(config.model)
    model = loaded.model
    depth = families.num_layers(model)
    layers = list(parse_hidden_states(config.layers, depth, option="--layers", default_all=True))
    t_loaded = time.perf_counter()
    head, head_info = _resolve_head(config, loaded, tokenizer, source, config.dtype)
    t_head = time.perf_counter()

    encoded = encode_sentences(tokenizer, source.sentences, max_length=config.max_length,
                               include_special=config.include_special, mask_prob=config.mask_prob, seed=config.seed)
    groups = ("all",) if config.mask_prob == 0 else ("all", "masked", "unmasked")
    vocab = head.weight.shape[0]
    wanted_examples = set(range(min(config.examples, len(encoded.ids))))
    examples: dict[int, dict[str, Any]] = {}

    def keep_examples(batch: list[int], hidden_states: Sequence[torch.Tensor], counted: torch.Tensor,
                      attention: torch.Tensor) -> None:
        for row, index in enumerate(batch):
            if index in wanted_examples:
                examples[index] = _example(tokenizer, head, hidden_states, layers, depth, row, index, encoded,
                                           counted[row], attention[row])

    tuned, comparison = None, None
    if config.lens == "tuned":  # translators from the fit corpus, then both lenses measured on the same batches
        tuned = tuned_for_texts(model, head, tokenizer, source, fit_corpus=config.fit_corpus,
                                data_dir=config.data_dir, overlap=config.fit_overlap, options=config.tuned_options(),
                                seed=config.seed, dtype=config.dtype, cache_dir=config.head_cache,
                                refit=config.refit, progress=config.progress)
        comparison = LensComparison(head, tuned, layers, depth, encoded.targets)
    on_batch = [f for f in (keep_examples if wanted_examples else None, comparison) if f is not None]

    def each_batch(batch: list[int], hidden_states: Sequence[torch.Tensor], counted: torch.Tensor,
                   attention: torch.Tensor) -> None:
        for f in on_batch:
            f(batch, hidden_states, counted, attention)

    sums = lens_pass(model, head, encoded, layers=layers, batch_size=config.batch_size,
                     pad_id=tokenizer.pad_token_id, groups=groups, progress=config.progress,
                     on_batch=each_batch if on_batch else None)
    t_lens = time.perf_counter()

    records = tuple(LayerRecord.of(layer, g, sums[layer, g].result()) for layer in layers for g in groups)
    views = _token_views(config, model, head, tokenizer, encoded, source.sentences, layers)
    config_dict_model = {
        "name": config.model or loading.DEFAULT_MODEL_NAME,
        "source": loaded.source,
        "family": loaded.family.name,
        "model_type": model.config.model_type,
        "num_layers": depth,
        "hidden_size": families.hidden_size(model),
        "vocab_size": vocab,
        "has_pretrained_mlm_head": loaded.has_pretrained_mlm_head,
        "device": str(device),
        "dtype": config.dtype,
        "attention": loaded.attention,
    }
    counting = {
        "positions": "real tokens incl. special tokens" if config.include_special else
                     "real tokens, special tokens ([CLS], [SEP], ...) excluded",
        "padding": "never counted",
        "layers": layers,
        "layer_0": "embedding output (hidden_states[0])",
        "truncated_sentences": encoded.truncated,
        "max_length": config.max_length,
        "masking": None if config.mask_prob == 0 else {
            "prob": config.mask_prob, "scheme": "BERT 80/10/10 over non-special tokens, per-sentence seeded",
            "groups": "masked = selected positions (whatever they were replaced by); unmasked = the rest"},
        "head_application": "ModernBERT-style final norm applied to layers < L" if head.pre_norm is not None
                            else "head applied to the raw hidden state",
    }
    timing = {"load_s": round(t_loaded - started, 3), "head_s": round(t_head - t_loaded, 3),
              "lens_s": round(t_lens - t_head, 3)}
    result = ReconstructResult(
        config=config, model=config_dict_model, head=head_info, texts=source.describe(), records=records,
        examples=tuple(examples[i] for i in sorted(examples)), counting=counting, timing=timing,
        environment=environment_info(), token_views=views,
        lens=lens_section(tuned, comparison, head_info) if tuned is not None and comparison is not None else {},
    )
    if tuned is not None:
        _log.info("tuned lens: %s", "reused from cache" if tuned.info.get("reused") else "trained now")
    if out_dir is not None:
        result = _write(result, out_dir, tuned)
    return result


def _token_views(config: ReconstructConfig, model: torch.nn.Module, head: families.HeadParts, tokenizer: Any,
                 encoded: Encoded, sentences: Sequence[str], layers: list[int]) -> tuple[TokenView, ...]:
    """The token views --token-view / --token-view-sentences ask for: given sentences (unmasked), else the first N
    measured ones exactly as they were measured (same masks)."""
    if config.token_view_sentences is not None:
        texts = [t.strip() for t in config.token_view_sentences.split("|") if t.strip()]
        given = encode_sentences(tokenizer, texts, max_length=config.max_length,
                                 include_special=config.include_special)
        return token_views(model, head, tokenizer, given, texts, layers, indices=None)
    count = min(config.token_view, len(encoded.ids))
    if count == 0:
        return ()
    return token_views(model, head, tokenizer, encoded, sentences, layers, indices=list(range(count)))


def token_views(model: torch.nn.Module, head: families.HeadParts, tokenizer: Any, encoded: Encoded,
                texts: Sequence[str], layers: Sequence[int], *, indices: Sequence[int] | None = None,
                max_tokens: int = MAX_TOKENS) -> tuple[TokenView, ...]:
    """Decode sentences of ``encoded`` (``indices``, default all) at every layer in ``layers``, one sentence at a
    time with no padding: the top-1 token and the input token's probability at each of the first ``max_tokens``
    real positions (special tokens included, marked as not counted unless they are)."""
    depth = families.num_layers(model)
    device = next(model.parameters()).device
    encoder = families.base_encoder(model)
    chosen = range(len(encoded.ids)) if indices is None else indices
    views = []
    with torch.inference_mode():
        for i in chosen:
            ids = encoded.ids[i].to(device).unsqueeze(0)
            targets = encoded.targets[i].to(device)
            states = encoder(input_ids=ids, attention_mask=torch.ones_like(ids),
                             output_hidden_states=True).hidden_states
            top1, prob = [], []
            for layer in layers:
                best, p = decode_tokens(head, states[layer][0], targets, is_last_layer=layer == depth)
                top1.append(tuple(tokenizer.convert_ids_to_tokens(best[:max_tokens].tolist())))
                prob.append(tuple(float(x) for x in p[:max_tokens].tolist()))
            n = int(targets.shape[0])
            views.append(TokenView(
                text=texts[i], tokens=tuple(tokenizer.convert_ids_to_tokens(encoded.targets[i][:max_tokens].tolist())),
                fed=tuple(tokenizer.convert_ids_to_tokens(encoded.ids[i][:max_tokens].tolist())),
                counted=tuple(bool(c) for c in encoded.counted[i][:max_tokens].tolist()), layers=tuple(layers),
                top1=tuple(top1), prob=tuple(prob), index=None if indices is None else i,
                cut=max(0, n - max_tokens)))
    return tuple(views)


def _example(tokenizer: Any, head: families.HeadParts, hidden_states: Sequence[torch.Tensor], layers: list[int],
             depth: int, row: int, index: int, encoded: Encoded, counted: torch.Tensor,
             attention: torch.Tensor) -> dict[str, Any]:
    """One sentence decoded top-1 at every layer (all real positions, counted or not), for reading by eye."""
    n = int(attention.sum())
    decoded = {}
    for layer in layers:
        logits = head.logits(hidden_states[layer][row, :n], is_last_layer=layer == depth)
        decoded[str(layer)] = tokenizer.convert_ids_to_tokens(logits.argmax(-1).tolist())
    return {
        "index": index,
        "input": tokenizer.convert_ids_to_tokens(encoded.targets[index].tolist()),
        "fed": tokenizer.convert_ids_to_tokens(encoded.ids[index].tolist()),
        "counted": counted[:n].tolist(),
        "top1_by_layer": decoded,
    }


def _write(result: ReconstructResult, folder: Path, tuned_lens: TunedLens | None = None) -> ReconstructResult:
    """Write CSV, the figure (PNG, SVG, PDF), then JSON (each atomically); the JSON, written last, lists the files."""
    files = {"json": str(folder / "reconstruct.json"), "csv": str(folder / "reconstruct.csv")}
    head_from = (result.head.get("head_from") or {}).get("from", "self")
    rows = [{"model": result.model["name"], "head": result.head["mode"], "head_from": head_from,
             **dataclasses.asdict(r)} for r in result.records]
    write_csv_atomic(files["csv"], rows)
    files.update(_plot(result, folder / "reconstruct.png"))
    if result.token_views:
        title = (f"What each layer decodes: {model_name(result.model['name'])}, {_head_words(result.head)}; cell = "
                 "top-1 decoded token, colour = probability of the input token")
        notes = ["Rows: hidden states (0 = embedding output, l = output of transformer layer l). Columns: the input "
                 "tokens; grey headers are special tokens, not counted in the metrics unless --include-special.",
                 f"Measured text: {texts_name(result.texts)}."]
        files.update(write_token_views(result.token_views, folder, title, notes))
    if result.lens and tuned_lens is not None:
        files.update(write_lens(result.lens, tuned_lens, folder, result.model["name"], result.texts))
    result = dataclasses.replace(result, files=files)
    write_json_atomic(files["json"], result.to_dict())
    return result


#: line style per group of positions (the legend says which line is which)
_GROUP_STYLES = {"all": "-", "masked": "--", "unmasked": ":"}


def _plot(result: ReconstructResult, path: Path) -> dict[str, str]:
    """The three panels (percentages, NLL, mean rank on a readable log axis), as PNG, SVG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), constrained_layout=True)
    ranks: list[float] = []
    for group in result.groups:
        recs = [r for r in result.records if r.group == group]
        x = [r.layer for r in recs]
        style = _GROUP_STYLES.get(group, "-")
        suffix = "" if group == "all" else f" ({group} positions, {style_words(style)})"
        for name in ("top1", "top5", "exact"):
            axes[0].plot(x, [100 * getattr(r, name) for r in recs], style, marker="o",
                         label=metric_name(name) + suffix)
        axes[0].plot(x, [100 * r.final_agreement for r in recs], style, marker="s",
                     label="top-1 = final layer's top-1" + suffix)
        axes[1].plot(x, [r.nll for r in recs], style, marker="o", label="NLL" + suffix)
        axes[2].plot(x, [r.mean_rank for r in recs], style, marker="o", label="mean rank" + suffix)
        ranks.extend(r.mean_rank for r in recs)
    axes[0].set_ylabel("% of counted tokens (exact: of sentences)")
    axes[0].set_ylim(-2, 102)
    axes[1].set_ylabel(metric_name("nll"))
    axes[2].set_ylabel(f"{metric_name('mean_rank')} (1 = best, log scale)")
    readable_log_axis(axes[2], ranks)
    for ax in axes:
        ax.set_xlabel("hidden state (0 = embeddings, l = output of layer l)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    head = _head_label(result.head)
    fig.suptitle(f"Input reconstruction by the MLM head at every layer: {model_name(result.model['name'])}, "
                 f"head {head}, on {texts_name(result.texts)}; one run, no error bars", fontsize=10)
    return save_figure(fig, path, close=True)


#: The token view adds pictures of chosen sentences; it never changes a number of the run.
NOT_IDENTITY = LOCATION_OPTIONS | {"token_view", "token_view_sentences"}

COMMAND = CommandInfo("reconstruct", ReconstructConfig, run_reconstruct, ReconstructResult,
                      "decode every hidden layer with the MLM head (paper 1)", not_identity=NOT_IDENTITY)
