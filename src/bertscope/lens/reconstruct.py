"""``bertscope reconstruct``: decode every hidden layer with the masked-LM head and score the input tokens.

For every hidden state l = 0..L (0 = embedding output, l = output of transformer layer l; ``--layers`` counts
these hidden-state indices, see :mod:`bertscope.core.options`) the head is applied to ``hidden_states[l]`` at every
counted position and the *input* token is scored (top-1, top-5, mean rank, NLL, exact sentences), and each layer's
top-1 decoded token is compared with the final layer's (``final_agreement``, 1.0 at the last layer;
:mod:`bertscope.lens.agreement`): each metric declared once in :data:`bertscope.lens.metrics.LENS_METRICS`, whence
this command's table, figure and result file take their columns, labels and definitions. A few sentences are also
drawn token by token (:mod:`bertscope.lens.token_view`).

Whose head decodes (``--head-from``): a variant made by ``deepen`` records its origin, and by default is decoded with
the *original's* head (its pretrained MLM head, or the head fitted on the original's final layer), as paper 1 keeps
the original output layer; ``--head-from self`` decodes with the variant's own (or one fitted on the variant).

How it runs (and why it is fast): :mod:`bertscope.lens.lens_pass`, the lens pass ``compare``'s curves run too.
Sentences are tokenised once and sorted by length so batches carry little padding; the bare encoder runs once per
batch with all hidden states; only counted positions (real, non-special tokens by default) are gathered, and the head
decodes them chunk by chunk, layer by layer. Masks for ``--mask-prob`` are drawn per sentence from a seeded
generator, so no number depends on batch size, padding or order.

Length: one command end to end -- its result record with its table, figure and file, whose head decodes
(``--head-from``), the run and its token views; the lens pass itself lives in :mod:`bertscope.lens.lens_pass`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bertscope.core.device import resolve_device
from bertscope.core.errors import BertscopeError
from bertscope.core.figures import readable_log_axis, save_figure, style_words
from bertscope.core.options import HIDDEN_STATE, NUMBERING_NOTES, parse_hidden_states
from bertscope.core.progress import progress_setting
from bertscope.core.registry import LOCATION_OPTIONS, CommandInfo
from bertscope.core.results import environment_info, prepare_out_dir, write_csv_atomic, write_json_atomic
from bertscope.data.labels import model_name, texts_name
from bertscope.data.texts import TextSource, load_texts
from bertscope.lens.config import ReconstructConfig
from bertscope.lens.fitted_head import FitOptions, fit_for_texts
from bertscope.lens.lens_pass import Encoded, encode_sentences, lens_pass
from bertscope.lens.metrics import LENS_METRIC_NAMES, LENS_METRICS, LayerMetrics, decode_tokens
from bertscope.lens.token_view import MAX_TOKENS, TokenView, write_token_views
from bertscope.lens.tuned import LensComparison, TunedLens, tuned_for_texts
from bertscope.lens.tuned_view import lens_metrics, lens_section, render_lens, write_lens
from bertscope.models import caveats, families, loading
from bertscope.models.origin import CONFIG_NOTE_KEY, deepen_origin, origin_source

__all__ = ["LayerRecord", "ReconstructResult", "run_reconstruct", "token_views"]

_log = logging.getLogger("bertscope")


@dataclass(frozen=True, kw_only=True)
class LayerRecord(LayerMetrics):
    """Metrics of one layer over one group of positions (``all``, or ``masked`` / ``unmasked`` with --mask-prob)."""

    layer: int
    group: str

    @classmethod
    def of(cls, layer: int, group: str, m: LayerMetrics) -> LayerRecord:
        return cls(layer=layer, group=group, tokens=m.tokens, sentences=m.sentences, values=m.values)

    def to_dict(self) -> dict[str, Any]:
        """``layer``, ``group``, ``tokens``, ``sentences`` and every lens metric: one row of the result file."""
        return {"layer": self.layer, "group": self.group, **super().to_dict()}


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
            "metric_definitions": {m.name: m.definition for m in LENS_METRICS},
            "records": [r.to_dict() for r in self.records],
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
        return caveats.notes(self.config.encoder.model, self.config.text.task, None, path=self.model.get("source"))

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        last = max(r.layer for r in self.records)
        for r in self.records:
            prefix = f"layer{r.layer}" + ("" if r.group == "all" else f".{r.group}")
            for name in LENS_METRIC_NAMES:
                out[f"{prefix}.{name}"] = r.values[name]
            if r.layer == last:
                final = "final" + ("" if r.group == "all" else f".{r.group}")
                for name in LENS_METRIC_NAMES:
                    out[f"{final}.{name}"] = r.values[name]
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
        for label in ("tokens", *(m.column for m in LENS_METRICS)):
            table.add_column(label, justify="right")
        for r in self.records:
            row = [str(r.layer)] + ([r.group] if several else [])
            row += [str(r.tokens), *(m.format(r.values[m.name]) for m in LENS_METRICS)]
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
    """Which text fitted the head and which was measured, the overlap, and the growth curve."""
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
        owner = loading.load_model(name, "masked-lm", device=device, dtype=config.encoder.dtype, attention=config.encoder.attention)
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
    options = FitOptions(steps=config.fit_head.fit_steps, lr=config.fit_head.fit_lr, batch_size=config.fit_head.fit_batch_size,
                         mask_prob=config.fit_head.fit_mask_prob, tie_decoder=config.fit_head.fit_tie, max_length=config.encoder.max_length,
                         curve=FitOptions.curve if config.fit_head.fit_curve else ())
    fitted = fit_for_texts(  # fit corpus and measured text are checked for overlap first
        owner.model, tokenizer, source, fit_corpus=config.fit_head.fit_corpus, data_dir=config.text.data_dir,
        overlap=config.fit_head.fit_overlap, options=options, seed=config.encoder.seed, dtype=dtype_name,
        cache_dir=config.fit_head.head_cache, refit=config.fit_head.refit, progress=progress_setting(config.output.progress, config.log), model_source=owner.source,
    )
    info = {"mode": "fit", "requested": config.head, "part": "full (fitted)", "fit": fitted.info,
            "head_from": owner_info}
    if config.head_part != "full":
        info["note"] = "--head-part applies to pretrained heads only; the fitted head is always used whole"
    return fitted.parts(loaded.model), info


def run_reconstruct(config: ReconstructConfig) -> ReconstructResult:
    """Run the lens as configured; writes reconstruct.json/.csv and the figure (.png/.svg/.pdf) when ``config.output.out``
    is set."""

    started = time.perf_counter()
    source = load_texts(texts=config.text.texts, task=config.text.task, split=config.text.split, data_dir=config.text.data_dir,
                        max_examples=config.text.max_examples, seed=config.encoder.seed)
    out_dir = prepare_out_dir(config.output.out)
    device = resolve_device(config.encoder.device)
    loaded = loading.load_model(config.encoder.model, "masked-lm", device=device, dtype=config.encoder.dtype,  # loads quietly
                                attention=config.encoder.attention)
    tokenizer = loading.load_tokenizer(config.encoder.model)
    model = loaded.model
    families.check_max_length(config.encoder.max_length, model)
    depth = families.num_layers(model)
    layers = list(parse_hidden_states(config.layers, depth, option="--layers", default_all=True))
    t_loaded = time.perf_counter()
    head, head_info = _resolve_head(config, loaded, tokenizer, source, config.encoder.dtype)
    t_head = time.perf_counter()

    encoded = encode_sentences(tokenizer, source.sentences, max_length=config.encoder.max_length,
                               include_special=config.include_special, mask_prob=config.mask_prob, seed=config.encoder.seed)
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
        tuned = tuned_for_texts(model, head, tokenizer, source, fit_corpus=config.fit_head.fit_corpus,
                                data_dir=config.text.data_dir, overlap=config.fit_head.fit_overlap, options=config.tuned_options(),
                                seed=config.encoder.seed, dtype=config.encoder.dtype, cache_dir=config.fit_head.head_cache,
                                refit=config.fit_head.refit, progress=progress_setting(config.output.progress, config.log))
        comparison = LensComparison(head, tuned, layers, depth, encoded.targets)
    on_batch = [f for f in (keep_examples if wanted_examples else None, comparison) if f is not None]

    def each_batch(batch: list[int], hidden_states: Sequence[torch.Tensor], counted: torch.Tensor,
                   attention: torch.Tensor) -> None:
        for f in on_batch:
            f(batch, hidden_states, counted, attention)

    sums = lens_pass(model, head, encoded, layers=layers, batch_size=config.encoder.batch_size,
                     pad_id=tokenizer.pad_token_id, groups=groups, progress=progress_setting(config.output.progress, config.log),
                     on_batch=each_batch if on_batch else None)
    t_lens = time.perf_counter()

    records = tuple(LayerRecord.of(layer, g, sums[layer, g].result()) for layer in layers for g in groups)
    views = _token_views(config, model, head, tokenizer, encoded, source.sentences, layers)
    if tuned is not None:  # the same sentences through the tuned lens, drawn beside the logit lens's
        views += _token_views(config, model, head, tokenizer, encoded, source.sentences, layers, tuned=tuned)
    config_dict_model = {
        "name": config.encoder.model or loading.DEFAULT_MODEL_NAME,
        "source": loaded.source,
        "family": loaded.family.name,
        "model_type": model.config.model_type,
        "num_layers": depth,
        "hidden_size": families.hidden_size(model),
        "vocab_size": vocab,
        "has_pretrained_mlm_head": loaded.has_pretrained_mlm_head,
        "device": str(device),
        "dtype": config.encoder.dtype,
        "attention": loaded.attention,
    }
    counting = {
        "positions": "real tokens incl. special tokens" if config.include_special else
                     "real tokens, special tokens ([CLS], [SEP], ...) excluded",
        "padding": "never counted",
        "layers": layers,
        "layer_0": "embedding output (hidden_states[0])",
        "truncated_sentences": encoded.truncated,
        "max_length": config.encoder.max_length,
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
                 encoded: Encoded, sentences: Sequence[str], layers: list[int],
                 tuned: TunedLens | None = None) -> tuple[TokenView, ...]:
    """The token views --token-view / --token-view-sentences ask for: given sentences (unmasked), else the first N
    measured ones exactly as they were measured (same masks); with ``tuned``, decoded through its translators."""
    if config.token_view_sentences is not None:
        texts = [t.strip() for t in config.token_view_sentences.split("|") if t.strip()]
        given = encode_sentences(tokenizer, texts, max_length=config.encoder.max_length,
                                 include_special=config.include_special)
        return token_views(model, head, tokenizer, given, texts, layers, indices=None, tuned=tuned)
    count = min(config.token_view, len(encoded.ids))
    if count == 0:
        return ()
    return token_views(model, head, tokenizer, encoded, sentences, layers, indices=list(range(count)), tuned=tuned)


def token_views(model: torch.nn.Module, head: families.HeadParts, tokenizer: Any, encoded: Encoded,
                texts: Sequence[str], layers: Sequence[int], *, indices: Sequence[int] | None = None,
                max_tokens: int = MAX_TOKENS, tuned: TunedLens | None = None) -> tuple[TokenView, ...]:
    """Decode sentences of ``encoded`` (``indices``, default all) at every layer in ``layers``, one sentence at a
    time with no padding: the top-1 token and the input token's probability at each of the first ``max_tokens``
    real positions (special tokens included, marked as not counted unless they are). With ``tuned``, each hidden
    state first goes through its layer's translator (the tuned lens's view of the same sentence)."""
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
                hidden = states[layer][0]
                if tuned is not None:
                    hidden = tuned.translators(hidden.float(), layer).to(hidden.dtype)
                best, p = decode_tokens(head, hidden, targets, is_last_layer=layer == depth)
                top1.append(tuple(tokenizer.convert_ids_to_tokens(best[:max_tokens].tolist())))
                prob.append(tuple(float(x) for x in p[:max_tokens].tolist()))
            n = int(targets.shape[0])
            views.append(TokenView(
                text=texts[i], tokens=tuple(tokenizer.convert_ids_to_tokens(encoded.targets[i][:max_tokens].tolist())),
                fed=tuple(tokenizer.convert_ids_to_tokens(encoded.ids[i][:max_tokens].tolist())),
                counted=tuple(bool(c) for c in encoded.counted[i][:max_tokens].tolist()), layers=tuple(layers),
                top1=tuple(top1), prob=tuple(prob), index=None if indices is None else i,
                cut=max(0, n - max_tokens), lens="logit" if tuned is None else "tuned"))
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
             **r.to_dict()} for r in result.records]
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
#: the figure's panel of each scale of lens metric (shares in percent; log-scale metrics on a readable log axis)
_PANELS = {"share": 0, "linear": 1, "log": 2}


def _plot(result: ReconstructResult, path: Path) -> dict[str, str]:
    """The three panels (percentages, NLL, mean rank on a readable log axis: each lens metric on its scale's panel),
    as PNG, SVG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), constrained_layout=True)
    logged: list[float] = []
    for group in result.groups:
        recs = [r for r in result.records if r.group == group]
        x = [r.layer for r in recs]
        style = _GROUP_STYLES.get(group, "-")
        suffix = "" if group == "all" else f" ({group} positions, {style_words(style)})"
        for m in LENS_METRICS:
            values = [r.values[m.name] * (100 if m.scale == "share" else 1) for r in recs]
            marker = "s" if m.accumulation == "final agreement" else "o"
            label = m.label if m.scale == "share" else m.column  # one metric per other panel: its axis names it
            axes[_PANELS[m.scale]].plot(x, values, style, marker=marker, label=label + suffix)
            if m.scale == "log":
                logged.extend(values)
    axes[0].set_ylabel("% of counted tokens (exact: of sentences)")
    axes[0].set_ylim(-2, 102)
    for m in LENS_METRICS:
        if m.scale != "share":
            axes[_PANELS[m.scale]].set_ylabel(m.label + (", log scale" if m.scale == "log" else ""))
    readable_log_axis(axes[2], logged)
    for ax in axes:
        ax.set_xlabel("hidden state (0 = embeddings, l = output of layer l)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    head = _head_label(result.head)
    fig.suptitle(f"Input reconstruction by the MLM head at every layer: {model_name(result.model['name'])}, "
                 f"head {head}, on {texts_name(result.texts)}; one run, no error bars", fontsize=10)
    return save_figure(fig, path, close=True)


#: The token view adds pictures of chosen sentences; it never changes a number of the run.
NOT_IDENTITY = LOCATION_OPTIONS | {"token_view", "token_view_sentences", "log"}

COMMAND = CommandInfo("reconstruct", ReconstructConfig, run_reconstruct, ReconstructResult,
                      "decode every hidden layer with the MLM head (paper 1)", not_identity=NOT_IDENTITY)
