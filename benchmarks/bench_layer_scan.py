"""bertscope layer-scan vs the naive loop (build, save, reload and evaluate every single-layer variant).

Both sides run in one process on the same model, sentences, head and threads, one after the other:

* ``naive``: load the original once; then for every layer i: deep-copy the model with layer i duplicated (or
  removed), ``save_pretrained`` it, reload it with ``AutoModelForMaskedLM.from_pretrained``, run it whole on every
  batch and measure its agreement with the original. Batches hold the sentences in the sample's order, as a plain loop
  batches them (``--naive-batches sorted``: bertscope's length-sorted batches). Two versions: ``plain`` reruns the
  original for every variant (``deepen`` + ``compare`` per layer), ``cached`` computes its outputs once;
* ``bertscope``: ``bertscope layer-scan`` (never saves or reloads; per batch the original's layer inputs are computed
  once, the variant that edits layer i runs only the layers from i on, variants are stacked by layer, and packable
  families run padding-free packed rows).

Reported: wall seconds of each (model load, tokenisation and everything included on both sides), the ratio, the
largest difference between the two sides' per-layer metrics (they must agree), each side's fraction of the fp32 GEMM
peak measured in the same run, and the ``ceiling``: the speed-up bertscope would reach running its own model FLOPs at
100% of that peak (a goal above it needs fewer FLOPs, not a faster implementation). Sentences: ``--texts`` (default
``builtin-all``, the whole 292-sentence built-in sample; ``builtin`` is its 146-sentence measure half).

    python -m benchmarks.bench_layer_scan                       # 12-layer BERT-base shape, 32 sentences
    python -m benchmarks.bench_layer_scan --op remove --max-examples 128
    python -m benchmarks.bench_layer_scan --model ./ckpt        # any local masked-LM checkpoint

Without ``--model`` a randomly initialised ``BertForMaskedLM`` of BERT-base shape (12 layers, hidden 768, the embedded
default's 30522-token vocabulary and tokenizer) is written to a temporary folder: the hub is not needed, and save /
reload costs are those of a real 12-layer base model. The summary is printed and written to
``benchmarks/results/bench_layer_scan.json``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS
from benchmarks.peak import efficiency, measure_peak, print_efficiency
from bertscope import api
from bertscope.core.results import environment_info, write_json_atomic
from bertscope.data.texts import load_texts
from bertscope.lens import agreement
from bertscope.models import families, flops, loading
from bertscope.surgery import compare, layer_scan
from bertscope.surgery import deepen as surgery
from bertscope.surgery.config import LayerScanConfig

CPU_SECONDS: dict[str, float] = {}  # process CPU time per side: less sensitive than wall time to other jobs


def make_base_model(folder: Path, layers: int, hidden: int, heads: int, seed: int) -> str:
    """A random BERT-base-shaped masked LM with the embedded default's tokenizer, saved to ``folder``."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                                     intermediate_size=4 * hidden, vocab_size=30522)
    transformers.BertForMaskedLM(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(loading.default_model_path()).save_pretrained(folder)
    return str(folder)


@torch.no_grad()
def run_naive(args: argparse.Namespace, work: Path, *, cache_original: bool = True) -> tuple[float, list[dict]]:
    """Build, save, reload and evaluate every variant; returns (seconds, rows).

    ``cache_original``: the original's outputs are computed once and reused (a tuned loop); without it they are
    recomputed for every variant, as running ``bertscope deepen`` + ``bertscope compare`` per layer would.
    """
    import transformers

    started, cpu_started = time.perf_counter(), time.process_time()
    tokenizer = loading.load_tokenizer(args.model)
    loaded = loading.load_model(args.model, "masked-lm")
    model, head = loaded.model, families.mlm_head_parts(loaded.model)
    depth = families.num_layers(model)
    sentences = list(load_texts(texts=args.texts, max_examples=args.max_examples, seed=args.seed).sentences)
    config = LayerScanConfig(model=args.model, texts=args.texts, max_examples=args.max_examples,
                             batch_size=args.batch_size, max_length=args.max_length, seed=args.seed, progress=False)
    if args.naive_batches == "sorted":  # the same length-sorted batches as bertscope
        batches = list(compare.sentence_batches(tokenizer, sentences, config, torch.device("cpu")))
    else:  # a plain loop: sentences in the sample's order
        batches = []
        for start in range(0, len(sentences), args.batch_size):
            enc = tokenizer(sentences[start:start + args.batch_size], padding=True, truncation=True,
                            max_length=args.max_length, return_tensors="pt", return_special_tokens_mask=True)
            counted = enc["attention_mask"].bool() & ~enc["special_tokens_mask"].bool()
            batches.append((enc["input_ids"], enc["attention_mask"], counted))
    def original_finals() -> list[torch.Tensor]:
        return [model.base_model(input_ids=i, attention_mask=m).last_hidden_state[c] for i, m, c in batches]

    finals = original_finals() if cache_original else None
    rows = []
    for layer, layer_map in layer_scan.scan_layer_maps(depth, args.op):
        folder = work / f"variant-{layer}"
        surgery.variant_model(model, layer_map).save_pretrained(folder)
        variant = transformers.AutoModelForMaskedLM.from_pretrained(folder).eval()
        vhead = families.mlm_head_parts(variant)
        sums = agreement.AgreementSums()
        for (ids, mask, counted), final in zip(batches, finals if cache_original else original_finals()):
            v_final = variant.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[counted]
            sums.add(*agreement.agreement_stats(head, final, vhead, v_final))
        rows.append({"layer": layer, **sums.result().to_dict()})
        del variant
        shutil.rmtree(folder)
    CPU_SECONDS["naive" if cache_original else "plain"] = time.process_time() - cpu_started
    return time.perf_counter() - started, rows


def run_bertscope(args: argparse.Namespace) -> tuple[float, list[dict[str, Any]], dict[str, Any]]:
    """bertscope layer-scan: (seconds, rows, the description of the sentences it read)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    result = api.layer_scan(model=args.model, op=args.op, texts=args.texts, max_examples=args.max_examples,
                            batch_size=args.batch_size,
                            max_length=args.max_length, seed=args.seed, progress=False, head="pretrained",
                            variants_per_pass=args.variants_per_pass)
    CPU_SECONDS["bertscope"] = time.process_time() - cpu_started
    return time.perf_counter() - started, result.rows, result.texts


@torch.no_grad()
def warm_up(model: str) -> None:
    """Pay one-time costs (imports of the model code, tokenizer files, the text sample) before either side is timed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import transformers

    loaded = loading.load_model(model, "masked-lm")
    tokenizer = loading.load_tokenizer(model)
    loaded.model(**tokenizer(["warm up"], return_tensors="pt"))
    transformers.AutoModelForMaskedLM  # noqa: B018 - resolve the lazy attribute
    load_texts()
    environment_info()


def model_flops(args: argparse.Namespace, positions: int) -> dict[str, float]:
    """Model FLOPs each side's algorithm needs, over the real (unpadded) tokens.

    naive: the original once and every variant whole; plain: plus the original again per variant; bertscope: the
    original once and, per variant, only the layers after its common prefix with the original. All three: the MLM
    head (dense h x h + decoder h x V) on the counted positions, the original's once and each variant's once.
    """
    loaded = loading.load_model(args.model, "masked-lm")
    shape = flops.EncoderShape.from_config(loaded.model.config)
    tokenizer = loading.load_tokenizer(args.model)
    sentences = list(load_texts(texts=args.texts, max_examples=args.max_examples, seed=args.seed).sentences)
    lengths = [len(ids) for ids in tokenizer(sentences, truncation=True, max_length=args.max_length)["input_ids"]]
    per_layer = flops.layer_forward_flops(shape.hidden, shape.intermediate, lengths)
    maps = [m for _, m in layer_scan.scan_layer_maps(shape.layers, args.op)]
    vocab = families.mlm_head_parts(loaded.model).weight.shape[0]
    heads = (1 + len(maps)) * (flops.linear_flops(positions, shape.hidden, shape.hidden)
                               + flops.linear_flops(positions, shape.hidden, vocab))
    original = shape.layers * per_layer
    variants = sum(len(m) for m in maps) * per_layer
    suffixes = sum(len(m) - layer_scan._common_prefix(m) for m in maps) * per_layer
    return {"naive": float(original + variants + heads), "bertscope": float(original + suffixes + heads),
            "plain": float(original * (1 + len(maps)) + variants + heads)}


def ceiling(seconds: dict[str, float], bertscope_flops: float, peak_fp32: float) -> dict[str, Any]:
    """The most any implementation of bertscope's algorithm could gain on this machine: its model FLOPs at 100% of
    the measured fp32 GEMM peak (no load, no tokenisation, no head overhead) against each baseline's measured time.

    A goal above ``speedup_at_peak`` needs fewer FLOPs (another algorithm), not a faster implementation."""
    floor = bertscope_flops / peak_fp32
    return {"bertscope_seconds_at_peak": floor,
            "speedup_at_peak": {name: t / floor for name, t in seconds.items() if name != "bertscope"},
            "bertscope_seconds_over_floor": seconds["bertscope"] / floor}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="local masked-LM checkpoint (default: random BERT-base shape)")
    parser.add_argument("--layers", type=int, default=12, help="depth of the generated model")
    parser.add_argument("--hidden", type=int, default=768, help="hidden size of the generated model")
    parser.add_argument("--heads", type=int, default=12, help="attention heads of the generated model")
    parser.add_argument("--op", choices=("duplicate", "remove"), default="duplicate")
    parser.add_argument("--max-examples", type=int, default=32, help="sentences of the built-in sample")
    parser.add_argument("--texts", default="builtin-all",
                        help="sentences (layer-scan --texts): the whole built-in sample of 292 by default -- the head "
                             "is the checkpoint's own, so no half of it is a fit text")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--naive-batches", choices=("input", "sorted"), default="input",
                        help="naive loop's batches: the sample's order (a plain loop) or bertscope's length-sorted ones")
    parser.add_argument("--variants-per-pass", type=int, default=4, help="bertscope's --variants-per-pass")
    parser.add_argument("--plain", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the plain naive loop that reruns the original for every variant")
    parser.add_argument("--out", default=str(RESULTS / "bench_layer_scan.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with loading.quiet_hugging_face(), tempfile.TemporaryDirectory(prefix="bench-layer-scan-") as tmp:
        work = Path(tmp)
        generated = args.model is None
        if generated:
            args.model = make_base_model(work / "model", args.layers, args.hidden, args.heads, args.seed)
        warm_up(args.model)
        shape = flops.EncoderShape.from_config(loading.load_model(args.model, "base").model.config)
        peak = measure_peak(shape.hidden, shape.intermediate)
        t_scan, rows_scan, texts = run_bertscope(args)
        t_naive, rows_naive = run_naive(args, work)
        t_plain, rows_plain = run_naive(args, work, cache_original=False) if args.plain else (math.nan, [])
        counted_flops = model_flops(args, rows_scan[0]["positions"])
    seconds = {"naive": t_naive, "bertscope": t_scan, **({"plain": t_plain} if args.plain else {})}
    report = efficiency(peak, "float32", {k: counted_flops[k] for k in seconds}, seconds)
    worst = {k: max(abs(a[k] - b[k]) for other in (rows_naive, rows_plain) for a, b in zip(rows_scan, other))
             for k in ("top1_agreement", "mean_kl", "mean_cosine")}
    positions = rows_scan[0]["positions"]
    summary = {
        "benchmark": "layer-scan vs naive build/save/reload/evaluate loop",
        "model": "random BertForMaskedLM" if generated else args.model,
        "shape": {"layers": len(rows_scan), "hidden": args.hidden if generated else None},
        "op": args.op, "texts": args.texts, "sentences": texts["num_sentences"], "naive_batches": args.naive_batches,
        "variants_per_pass": args.variants_per_pass, "positions": positions, "batch_size": args.batch_size,
        "max_length": args.max_length, "threads": torch.get_num_threads(),
        "seconds": {"naive": round(t_naive, 2), "bertscope": round(t_scan, 2)},
        "speedup": round(t_naive / t_scan, 2),
        "cpu_seconds": {k: round(v, 2) for k, v in CPU_SECONDS.items()},
        "cpu_speedup": round(CPU_SECONDS["naive"] / CPU_SECONDS["bertscope"], 2),
        "naive_recomputing_original": {"seconds": round(t_plain, 2), "speedup": round(t_plain / t_scan, 2)}
        if args.plain else None,
        "max_metric_difference": worst,
        "metrics_agree": all(v < 1e-3 or math.isclose(v, 0.0) for v in worst.values()),
        "ceiling": ceiling(seconds, counted_flops["bertscope"], peak["best"]["fp32"]),
        "peak": peak,
        "efficiency": report,
        "environment": environment_info(),
    }
    print(f"layer-scan --op {args.op}, {len(rows_scan)} variants, {args.max_examples} sentences "
          f"({positions} positions), {torch.get_num_threads()} threads")
    print(f"  naive, original cached:              {t_naive:8.2f} s")
    if args.plain:
        print(f"  naive, original rerun per variant:   {t_plain:8.2f} s   ({t_plain / t_scan:.2f}x)")
    print(f"  bertscope layer-scan:                {t_scan:8.2f} s")
    print(f"  speedup vs naive (original cached): {summary['speedup']:.2f}x   max |metric difference|: "
          + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    print("  process CPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in CPU_SECONDS.items())
          + f"   (naive / bertscope: {summary['cpu_speedup']:.2f}x)")
    print_efficiency(report)
    top = summary["ceiling"]
    print(f"  ceiling (bertscope's FLOPs at 100% of the fp32 peak, {top['bertscope_seconds_at_peak']:.1f} s): "
          + ", ".join(f"{k} {v:.2f}x" for k, v in top["speedup_at_peak"].items())
          + f"; bertscope runs at {top['bertscope_seconds_over_floor']:.2f}x that floor")
    write_json_atomic(args.out, summary)
    print(f"  written: {args.out}")
    return summary


if __name__ == "__main__":
    main()
