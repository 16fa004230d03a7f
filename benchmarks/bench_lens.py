"""Benchmark: the output-layer lens against a naive baseline and against the floor, in one run, on the same data.

    python -m benchmarks.bench_lens                       # embedded MiniLM-L6, 500 SST-2 dev sentences
    python -m benchmarks.bench_lens --max-examples 200 --rounds 3 --threads 1

* naive:  what one would write first -- batches in file order padded to their longest sentence, one
  ``AutoModelForMaskedLM`` forward with all hidden states, then the head on every layer over every padded position
  ([B, T, V] logits in fp32), log-softmax, top-5 by ``topk``, rank by comparison; padding/special tokens masked out
  afterwards.
* lens:   ``bertscope.lens.lens_pass.lens_pass`` (length-sorted batches, bare encoder, counted tokens only, chunked head,
  rank/NLL without ``topk`` or a softmax).
* floor:  the same batches through the bare encoder plus the head's matmuls over the counted tokens only, nothing
  else: no metric can be computed for less.

The head is a BERT-shaped head (dense -> GELU -> LayerNorm -> decoder tied to the input embeddings + bias) with
random weights: the timing does not depend on its values, and the same head is used by all three. The naive and the
lens results are checked to be equal. Prints the ratios and writes ``benchmarks/results/bench_lens.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch

from benchmarks.common import RESULTS, find_glue_dir
from benchmarks.peak import efficiency, measure_peak, print_efficiency
from bertscope.core.results import environment_info, write_json_atomic
from bertscope.data.texts import load_texts
from bertscope.lens.fitted_head import HeadModule
from bertscope.lens.lens_pass import Encoded, chunk_size, encode_sentences, lens_pass
from bertscope.lens.metrics import MetricSums
from bertscope.models import families, flops, loading
from bertscope.models.packing import pad_rows


def naive(model: torch.nn.Module, tokenizer: Any, head: families.HeadParts, sentences: list[str], batch_size: int,
          max_length: int) -> dict[tuple[int, str], MetricSums]:
    depth = families.num_layers(model)
    sums = {(layer, "all"): MetricSums() for layer in range(depth + 1)}
    with torch.inference_mode():
        for start in range(0, len(sentences), batch_size):
            enc = tokenizer(sentences[start:start + batch_size], padding=True, truncation=True,
                            max_length=max_length, return_special_tokens_mask=True, return_tensors="pt")
            enc = enc.to(head.weight.device)
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True)
            valid = (enc["attention_mask"] == 1) & (enc["special_tokens_mask"] == 0)
            targets = enc["input_ids"]
            rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)
            for layer, hidden in enumerate(out.hidden_states):
                logits = head.logits(hidden, is_last_layer=layer == depth).float()  # [B, T, V]
                logp = torch.log_softmax(logits, dim=-1)
                nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                top5 = torch.topk(logits, 5, dim=-1).indices
                assert top5.shape[-1] == 5
                rank = (logits > logits.gather(-1, targets.unsqueeze(-1))).sum(-1)
                sums[layer, "all"].add(rank[valid], nll[valid], rows[valid], targets.shape[0])
    return sums


def floor(model: torch.nn.Module, head: families.HeadParts, encoded: Encoded, batch_size: int, pad_id: int) -> float:
    """Encoder forward on the lens's batches + head matmuls over counted tokens; returns a checksum."""
    depth = families.num_layers(model)
    chunk = chunk_size(head.weight.shape[0])
    order = sorted(range(len(encoded.ids)), key=lambda i: (-encoded.ids[i].shape[0], i))
    encoder = families.base_encoder(model)
    checksum = 0.0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            ids, attention = (t.to(head.weight.device) for t in pad_rows([encoded.ids[i] for i in batch], pad_id))
            counted = pad_rows([encoded.counted[i] for i in batch], False, dtype=torch.bool)[0].to(ids.device)
            counted &= attention.bool()
            states = encoder(input_ids=ids, attention_mask=attention, output_hidden_states=True).hidden_states
            for layer in range(depth + 1):
                features = head.features(states[layer][counted], is_last_layer=layer == depth)
                for lo in range(0, features.shape[0], chunk):
                    checksum += float(head.decode(features[lo:lo + chunk])[0, 0])
    return checksum


def _records(sums: dict[tuple[int, str], MetricSums]) -> dict[int, dict[str, float]]:
    return {layer: s.result().to_dict() for (layer, _), s in sorted(sums.items())}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model (default: the embedded MiniLM-L6-H384)")
    parser.add_argument("--task", default="sst2", help="GLUE task whose dev sentences are used (local copy)")
    parser.add_argument("--max-examples", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3,
                        help="repeat the three timings interleaved, keep each one's best (robust to other load)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--out", default=str(RESULTS / "bench_lens.json"))
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    glue_dir = find_glue_dir()
    if glue_dir is not None:
        source = load_texts(task=args.task, split="validation", data_dir=glue_dir, max_examples=args.max_examples)
    else:  # no local GLUE: the built-in sample
        source = load_texts(max_examples=args.max_examples)
    sentences = list(source.sentences)
    loaded = loading.load_model(args.model, "masked-lm", device=args.device)
    tokenizer = loading.load_tokenizer(args.model)
    model = loaded.model
    torch.manual_seed(0)
    module = HeadModule(families.hidden_size(model), model.get_input_embeddings().weight.detach(), tie_decoder=True)
    module.to(args.device)
    with torch.no_grad():
        module.bias.normal_(0, 1)
    head = families.HeadParts(transform=module.transform, weight=module.weight, bias=module.bias.detach(),
                              pre_norm=families.final_norm(model))
    pad_id = tokenizer.pad_token_id or 0
    encoded = encode_sentences(tokenizer, sentences, max_length=args.max_length)
    layers = list(range(families.num_layers(model) + 1))
    counted = sum(int(c.sum()) for c in encoded.counted)
    real = sum(int(c.numel()) for c in encoded.counted)
    padded = sum(max(len(tokenizer(s, truncation=True, max_length=args.max_length)["input_ids"])
                     for s in sentences[i:i + args.batch_size]) * len(sentences[i:i + args.batch_size])
                 for i in range(0, len(sentences), args.batch_size))
    print(f"{len(sentences)} sentences from {source.kind} ({source.describe().get('task', '')}); tokens: "
          f"{counted} counted, {real} real, {padded} padded positions (naive); torch threads {torch.get_num_threads()}")

    shape = flops.EncoderShape.from_config(model.config)
    peak = measure_peak(shape.hidden, shape.intermediate, device=args.device)
    hidden, vocab = shape.hidden, head.weight.shape[0]
    # the same useful work for all three: the encoder over the real tokens, the head on every layer's counted tokens
    model_flops = flops.encoder_forward_flops(shape, [int(c.numel()) for c in encoded.counted]) + (
        len(layers) * (flops.linear_flops(counted, hidden, hidden) + flops.linear_flops(counted, hidden, vocab)))

    best = {"naive": float("inf"), "lens": float("inf"), "floor": float("inf")}
    cpu = dict(best)
    results: dict[str, Any] = {}
    for round_ in range(args.rounds):
        for name in ("floor", "lens", "naive"):
            started, started_cpu = time.perf_counter(), time.process_time()
            if name == "naive":
                results[name] = naive(model, tokenizer, head, sentences, args.batch_size, args.max_length)
            elif name == "lens":
                results[name] = lens_pass(model, head, encoded, layers=layers, batch_size=args.batch_size,
                                          pad_id=pad_id)
            else:
                floor(model, head, encoded, args.batch_size, pad_id)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed, elapsed_cpu = time.perf_counter() - started, time.process_time() - started_cpu
            best[name] = min(best[name], elapsed)
            cpu[name] = min(cpu[name], elapsed_cpu)
            print(f"round {round_ + 1}: {name:5s} {elapsed:8.2f} s wall, {elapsed_cpu:8.2f} s cpu", flush=True)

    a, b = _records(results["naive"]), _records(results["lens"])
    worst = {"top1": 0.0, "top5": 0.0, "exact": 0.0, "nll_rel": 0.0, "mean_rank_rel": 0.0}
    for layer in a:
        assert a[layer]["tokens"] == b[layer]["tokens"], "naive and lens counted different tokens"
        for name in ("top1", "top5", "exact"):
            worst[name] = max(worst[name], abs(a[layer][name] - b[layer][name]))
        worst["nll_rel"] = max(worst["nll_rel"], abs(a[layer]["nll"] - b[layer]["nll"]) / abs(a[layer]["nll"]))
        worst["mean_rank_rel"] = max(worst["mean_rank_rel"],
                                     abs(a[layer]["mean_rank"] - b[layer]["mean_rank"]) / a[layer]["mean_rank"])
    equal = worst["nll_rel"] < 1e-4 and worst["mean_rank_rel"] < 1e-3 and max(
        worst["top1"], worst["top5"], worst["exact"]) < 2.0 / max(1, counted)
    speedup = best["naive"] / best["lens"]
    over_floor = best["lens"] / best["floor"]
    print(f"naive {best['naive']:.2f} s | lens {best['lens']:.2f} s | floor {best['floor']:.2f} s (best wall); "
          f"cpu: naive {cpu['naive']:.2f} s | lens {cpu['lens']:.2f} s | floor {cpu['floor']:.2f} s "
          f"(ratios {cpu['naive'] / cpu['lens']:.2f}x, {cpu['lens'] / cpu['floor']:.2f}x)")
    print(f"speed-up over naive: {speedup:.2f}x (goal >= 2)   lens / floor: {over_floor:.2f}x (goal <= 1.3)   "
          f"equal results: {equal} (max differences {json.dumps({k: float(f'{v:.2g}') for k, v in worst.items()})})")
    report = efficiency(peak, "float32", dict.fromkeys(best, float(model_flops)), best)
    print_efficiency(report)
    summary = {
        "benchmark": "bench_lens",
        "command": "python -m benchmarks.bench_lens " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out" and v is not None),
        "model": args.model or loading.DEFAULT_MODEL_NAME,
        "data": source.describe(),
        "sentences": len(sentences),
        "tokens": {"counted": counted, "real": real, "naive_padded_positions": padded},
        "batch_size": args.batch_size,
        "seconds": best,
        "cpu_seconds": cpu,
        "speedup_vs_naive_cpu": cpu["naive"] / cpu["lens"],
        "lens_over_floor_cpu": cpu["lens"] / cpu["floor"],
        "torch_threads": torch.get_num_threads(),
        "speedup_vs_naive": speedup,
        "lens_over_floor": over_floor,
        "equal_results": equal,
        "max_differences": worst,
        "records_lens": b,
        "peak": peak,
        "efficiency": report,
        "environment": environment_info(),
        "load_average": os.getloadavg(),
    }
    write_json_atomic(args.out, summary)
    print(f"wrote {args.out}")
    return summary


if __name__ == "__main__":
    main()
