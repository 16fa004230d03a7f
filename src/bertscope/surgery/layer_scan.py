"""``bertscope layer-scan``: every single-layer variant (one layer duplicated, or removed) measured in memory.

The claim of paper 1's first version: removing or duplicating most single layers barely changes the outputs. The scan
builds each variant's layer map (:func:`scan_layer_maps`; layers are transformer-layer (block) indices 0..L-1, 0 = the
first transformer layer, as ``deepen`` counts them) and measures its agreement with the original
(:func:`bertscope.lens.agreement.agreement_with_variants`) without ever saving or reloading a checkpoint. It reuses
the shared prefix of the computation: the original's layer inputs are computed once per batch, and the variant that
edits layer ``i`` only runs the layers from ``i`` on (:func:`bertscope.models.runners.run_layers`), stacked with the
other variants that need the same layer next, on packed rows where the family allows (:mod:`bertscope.models.packing`).
Sentences and the head are chosen as ``compare`` chooses them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bertscope.core.device import resolve_device
from bertscope.core.errors import BertscopeError
from bertscope.core.figures import readable_log_axis, save_figure
from bertscope.core.options import BLOCK, NUMBERING_NOTES, parse_blocks
from bertscope.core.progress import progress_bar
from bertscope.core.registry import CommandInfo
from bertscope.core.results import environment_info, prepare_out_dir, write_csv_atomic, write_json_atomic
from bertscope.data.labels import model_name, texts_name
from bertscope.lens.agreement import CHUNK, AgreementSums, agreement_with_variants
from bertscope.lens.metrics import metric_label
from bertscope.models import families, loading, packing, runners
from bertscope.models.families import HeadParts
from bertscope.surgery.compare import choose_heads, load_sentences, sentence_batches
from bertscope.surgery.config import LayerScanConfig
from bertscope.surgery.layer_map import check_layer_map

__all__ = ["LayerScanResult", "run_layer_scan", "scan_batch", "scan_layer_maps"]


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
                "environment": self.environment, "layer_numbering": BLOCK,
                "layer_numbering_note": NUMBERING_NOTES[BLOCK],
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
            check_layer_map(model, layer_map)
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
            out = runners.run_layers(model, stacked, None if mask is None else mask.repeat(n, 1), [layer],
                                      start=position, segments=None if segments is None else segments.repeat(n, 1))
            for k, hidden in zip(members, out.split(batch)):  # all_states=False: one tensor (typed overload)
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

    Returns what :func:`bertscope.lens.agreement.agreement_with_variants` returns for the batch's final hidden
    states (the original's and every variant's, at the counted positions). Families that
    can (:func:`bertscope.models.packing.can_pack`) run the layers on packed rows when that saves padding.
    """
    depth = families.num_layers(model)
    hidden0 = runners.embed(model, ids, mask)
    layout = packing.layout_for(mask) if packing.can_pack(model) else None
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
    states = runners.run_layers(model, hidden0, run_mask, list(range(depth)), all_states=True, segments=segments)
    inputs = [hidden0, *states]  # inputs[p] = input of stack position p (inputs[depth] = raw last output)
    final = pick(families.finalize_hidden(model, states[-1]))
    targets = ids[counted]
    raw = _run_suffixes(model, inputs, run_mask, segments, variants, max(1, variants_per_pass))
    del inputs, states
    v_finals = [None if r is None else pick(families.finalize_hidden(model, r)) for r in raw]
    return agreement_with_variants(head, final, v_finals, targets, chunk=chunk)


def run_layer_scan(config: LayerScanConfig) -> LayerScanResult:
    """Every single-layer duplicate (or remove) variant of ``config.encoder.model``, measured against the original."""
    device = resolve_device(config.encoder.device)
    prepare_out_dir(config.output.out)
    torch.manual_seed(config.encoder.seed)
    source = load_sentences(config)
    tokenizer = loading.load_tokenizer(config.encoder.model)
    loaded = loading.load_model(config.encoder.model, "masked-lm", device=device, dtype=config.encoder.dtype,
                                attention=config.encoder.attention)
    model = loaded.model
    families.check_max_length(config.encoder.max_length, model)
    depth = families.num_layers(model)
    chosen = list(parse_blocks(config.layers, depth, option="--layers", default_all=True))
    variants = _scan_variants(model, scan_layer_maps(depth, config.op, chosen))
    heads, head_info = choose_heads(config, [loaded], tokenizer, source)
    head = heads[0]
    sums = [AgreementSums() for _ in variants]
    variant_hits = [0 for _ in variants]
    original_hits = positions = 0
    sentences = list(source.sentences)
    n_batches = math.ceil(len(sentences) / config.encoder.batch_size)
    for ids, mask, counted in progress_bar(sentence_batches(tokenizer, sentences, config, device), total=n_batches,
                                           desc=f"layer-scan {config.op}", progress=config.output.progress):
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
                             environment={**environment_info(), "attention": loaded.attention})
    if config.output.out:
        files = _write_scan(Path(config.output.out), result)
        result = LayerScanResult(**{**result.__dict__, "files": files})
        write_json_atomic(Path(config.output.out) / "layer_scan.json", result.to_dict())
    return result


def _write_scan(out: Path, result: LayerScanResult) -> dict[str, str]:
    write_csv_atomic(out / "layer_scan.csv", result.rows)
    return {"json": str(out / "layer_scan.json"), "csv": str(out / "layer_scan.csv"),
            **_plot_scan(out / "layer_scan.png", result)}


def _plot_scan(path: Path, result: LayerScanResult) -> dict[str, str]:
    """Agreement, KL and cosine of every variant with the original, by edited layer (PNG, SVG, PDF); KL on a
    readable log axis when it spans more than a decade. One run: no error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in result.rows if r["status"] == "ok"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.0), constrained_layout=True)
    xs = [r["layer"] for r in done]
    edited = {"duplicate": "duplicated", "remove": "removed"}.get(result.config.op, f"{result.config.op}d")
    for ax, key in zip(axes, ("top1_agreement", "mean_kl", "mean_cosine")):
        values = [r[key] for r in done]
        ax.plot(xs, values, marker="o")
        ax.set(xlabel=f"{edited} layer (0 = first transformer layer)", ylabel=metric_label(key))
        positive = [v for v in values if v is not None and v > 0]
        if key == "mean_kl" and positive and max(positive) / min(positive) > 10:
            readable_log_axis(ax, positive)
        if xs:
            ax.set_xticks(xs)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Every single-layer {result.config.op} variant of {model_name(result.config.encoder.model)} "
                 f"({result.depth} layers) vs the original on {texts_name(result.texts)}; one run, no error bars",
                 fontsize=10)
    return save_figure(fig, path, close=True, bbox_inches="tight")


COMMAND = CommandInfo("layer-scan", LayerScanConfig, run_layer_scan, LayerScanResult,
                      "measure every single-layer duplicate/remove variant in memory")
