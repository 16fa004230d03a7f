"""Frozen-encoder study of many head configurations: the cached fast path vs one frozen fine-tuning per configuration.

Side by side in one process (same data, seeds, threads, moment):

* ``encoder pass``: one plain forward pass of the encoder over the data (train + dev), all hidden states: the unit
  of cost the goal is stated in;
* ``cached``: a :class:`bertscope.studies.common.HeadRunner` training ``--configs`` head configurations (token x layer
  x dimensions x linear/mlp2, a seeded sample of the grid) on cached features, in a fresh cache folder (so the time
  includes building the cache: one encoder pass computing every token strategy of every layer);
* ``baseline``: the same configurations as separate ``finetune --freeze encoder`` runs (the encoder runs every epoch
  and for every evaluation). This costs about ``epochs + 1`` encoder passes *per configuration*, so only the first
  ``--baseline-configs`` run and the total for all ``--configs`` is projected from their mean (stated as such). Their
  scores are compared with the cached runs' (they must agree: same seed, same numbers).

Goal: cached >= 20x faster than the baseline, and the head training of all configurations together costs at
most 2 encoder passes.

    python -m benchmarks.bench_features                                  # sst2, 1000 train / 500 dev, 100 configs
    python -m benchmarks.bench_features --train 300 --eval 200 --configs 20 --baseline-configs 2   # quick

The summary is printed and written to ``benchmarks/results/bench_features.json`` (other tasks:
``bench_features-<task>.json``).
"""

from __future__ import annotations

import argparse
import itertools
import random
import tempfile
import time
from typing import Any

import torch

from benchmarks.common import RESULTS, require_glue_dir
from benchmarks.peak import efficiency, measure_peak, print_efficiency
from bertscope.core.device import resolve_device
from bertscope.core.results import environment_info, write_json_atomic
from bertscope.data import glue
from bertscope.finetune.batching import encode_split
from bertscope.finetune.command import run_finetune
from bertscope.finetune.config import FinetuneConfig
from bertscope.models import families, flops, loading
from bertscope.studies.common import HeadRunner


def head_grid(depth: int, n: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of ``n`` head configurations from token x layer x dims x head."""
    tokens = ["cls", "max-norm", "mean", "max", "index:-1"]
    layers = [str(layer) for layer in range(1, depth + 1)]
    dims = ["all", "random:2", "random:16", "random:64"]
    heads = ["linear", "mlp2"]
    grid = [dict(token=t, layer=layer, dims=d, head=h) for t, layer, d, h in itertools.product(tokens, layers, dims, heads)]
    random.Random(seed).shuffle(grid)
    if n > len(grid):
        raise SystemExit(f"--configs {n} exceeds the grid ({len(grid)} configurations)")
    return grid[:n]


def split_lengths(config: FinetuneConfig) -> tuple[list[int], list[int]]:
    """Real (truncated, unpadded) token counts of the train and the dev examples."""
    task = glue.get_task(config.data.task or "")
    tokenizer = loading.load_tokenizer(config.encoder.model)
    splits = [glue.load_split(task, "train", config.data.data_dir, config.data.max_train, config.encoder.seed),
              glue.load_split(task, task.default_eval_split, config.data.data_dir, config.data.max_eval, config.encoder.seed)]
    train, dev = (list(map(len, encode_split(tokenizer, split, config.encoder.max_length).input_ids)) for split in splits)
    return train, dev


def encoder_pass_seconds(config: FinetuneConfig) -> float:
    """One forward pass of the frozen encoder over train + dev (all hidden states), as the study would do it."""
    task = glue.get_task(config.data.task or "")
    tokenizer = loading.load_tokenizer(config.encoder.model)
    device = resolve_device(config.encoder.device)
    model = loading.load_model(config.encoder.model, "base", device=device).model.eval()
    splits = [glue.load_split(task, "train", config.data.data_dir, config.data.max_train, config.encoder.seed),
              glue.load_split(task, task.default_eval_split, config.data.data_dir, config.data.max_eval, config.encoder.seed)]
    start = time.perf_counter()
    with torch.no_grad():
        for split in splits:
            data = encode_split(tokenizer, split, config.encoder.max_length)
            order = sorted(range(len(data)), key=lambda i: -len(data.input_ids[i]))
            for b in range(0, len(order), config.encoder.batch_size):
                rows = [data.input_ids[i] for i in order[b:b + config.encoder.batch_size]]
                width = max(map(len, rows))
                ids = torch.tensor([r + [data.pad_id] * (width - len(r)) for r in rows])
                mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
                model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--model", default=None, help="default: the embedded MiniLM-L6-H384")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train", type=int, default=1000, help="training examples (seeded subset)")
    parser.add_argument("--eval", type=int, default=500, help="dev examples (seeded subset)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--configs", type=int, default=100, help="head configurations of the study")
    parser.add_argument("--baseline-configs", type=int, default=3, help="configurations run uncached (projected)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--fit", default="auto", choices=("auto", "sgd", "converged"),
                        help="how the heads are fitted (finetune --fit; auto: linear heads on the frozen encoder are "
                             "converged probes, an L2 grid of L-BFGS solves)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/bench_features[-<task>].json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = require_glue_dir(args.data_dir)
    base = FinetuneConfig(task=args.task, model=args.model, data_dir=data_dir, max_train=args.train,
                          max_eval=args.eval, epochs=args.epochs, max_length=args.max_length,
                          batch_size=args.batch_size, freeze="encoder", progress=False, seed=args.seed,
                          device=args.device, fit=args.fit)
    encoder = loading.load_model(args.model, "base").model
    depth = families.num_layers(encoder)
    shape = flops.EncoderShape.from_config(encoder.config)
    peak = measure_peak(shape.hidden, shape.intermediate, device=args.device)
    grid = head_grid(depth, args.configs, args.seed)

    pass_seconds = encoder_pass_seconds(base)
    print(f"one encoder pass over {args.train} + {args.eval} examples: {pass_seconds:.2f} s")

    with tempfile.TemporaryDirectory(prefix="bench-features-") as cache:
        runner = HeadRunner(["cls", "max-norm", "mean", "max", "index:-1"])
        cached_config = base.replace(cache_features=True, cache_dir=cache)
        start = time.perf_counter()
        runner.shared(cached_config)  # load model + data, one encoder pass filling the cache
        setup_seconds = time.perf_counter() - start
        cached: list[dict[str, Any]] = []
        start = time.perf_counter()
        for options in grid:
            t0 = time.perf_counter()
            result, _ = runner.run(cached_config.replace(**options))
            cached.append({**options, "score": result.final_score, "seconds": time.perf_counter() - t0})
        heads_seconds = time.perf_counter() - start
    cached_total = setup_seconds + heads_seconds
    print(f"cached: setup (load + cache build) {setup_seconds:.2f} s, {len(grid)} heads {heads_seconds:.2f} s "
          f"({heads_seconds / len(grid):.3f} s each)")

    baseline = []
    for options, reference in zip(grid[:args.baseline_configs], cached):
        start = time.perf_counter()
        result = run_finetune(base.replace(**options))
        baseline.append({**options, "score": result.final_score, "seconds": time.perf_counter() - start,
                         "cached_score": reference["score"],
                         "abs_diff": abs(result.final_score - reference["score"])})
        print(f"baseline {options}: {baseline[-1]['seconds']:.2f} s, score {result.final_score:.4f} "
              f"(cached {reference['score']:.4f})")
    per_config = sum(b["seconds"] for b in baseline) / max(len(baseline), 1)
    baseline_projected = per_config * len(grid)
    # model FLOPs (the encoder's; the heads' are negligible and left out): the pass and the cached study need one
    # forward of all layers over train + dev; a baseline run reads layer L, so it computes L layers, every epoch, over
    # train (training) and dev (evaluation)
    train_lengths, dev_lengths = split_lengths(base)
    one_pass = flops.encoder_forward_flops(shape, train_lengths + dev_lengths)
    baseline_flops = sum(args.epochs * flops.encoder_forward_flops(shape, train_lengths + dev_lengths, int(b["layer"]))
                         for b in baseline)
    report = efficiency(peak, "float32", {"encoder_pass": one_pass, "cached": one_pass, "baseline": baseline_flops},
                        {"encoder_pass": pass_seconds, "cached": cached_total,
                         "baseline": sum(b["seconds"] for b in baseline)})
    summary = {
        "task": args.task, "model": loading.resolve_model_source(args.model), "train": args.train,
        "eval": args.eval, "epochs": args.epochs, "max_length": args.max_length, "batch_size": args.batch_size,
        "configs": len(grid), "fit": args.fit, "baseline_configs_run": len(baseline),
        "threads": torch.get_num_threads(),
        "encoder_pass_seconds": pass_seconds, "cached_setup_seconds": setup_seconds,
        "cached_heads_seconds": heads_seconds, "cached_total_seconds": cached_total,
        "cached_seconds_per_head": heads_seconds / len(grid),
        "baseline_seconds_per_config": per_config, "baseline_projected_total_seconds": baseline_projected,
        "speedup_total": baseline_projected / cached_total,
        "heads_cost_in_encoder_passes": heads_seconds / pass_seconds,
        "total_cost_in_encoder_passes": cached_total / pass_seconds,
        "max_abs_score_diff_cached_vs_baseline": max((b["abs_diff"] for b in baseline), default=None),
        "goal_speedup_20x": baseline_projected / cached_total >= 20,
        "goal_heads_within_2_passes": heads_seconds <= 2 * pass_seconds,
        "peak": peak, "efficiency": report,
        "baseline": baseline, "cached": cached, "environment": environment_info(),
    }
    print(f"\nspeedup (baseline projected to {len(grid)} configs / cached total): {summary['speedup_total']:.1f}x")
    print(f"{len(grid)} heads cost {summary['heads_cost_in_encoder_passes']:.2f} encoder passes "
          f"(with the cache build: {summary['total_cost_in_encoder_passes']:.2f})")
    print(f"max |score(cached) - score(baseline)| = {summary['max_abs_score_diff_cached_vs_baseline']}")
    print_efficiency(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "bench_features.json" if args.task == "sst2" else f"bench_features-{args.task}.json"
    write_json_atomic(args.out or RESULTS / name, summary)
    return summary


if __name__ == "__main__":
    main()
