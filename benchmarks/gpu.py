"""The GPU benchmark in one call: finetune vs the HF Trainer, the lens vs naive, the frozen grid, and their MFU.

    python -m benchmarks.gpu --out gpu.json              # on a GPU, BERT-base shape, well within 8 minutes
    python -m benchmarks.gpu --small --out /tmp/gpu.json # on CPU, tiny shapes, for the CI smoke test

It runs the existing benchmarks (``bench_finetune``, ``bench_lens``, ``bench_features``: their own code, their own
peaks and FLOP counts) on one model and device, measures the device's GEMM peak once more at the model's shapes,
and writes one JSON holding every part's summary, each side's achieved model FLOP/s as a fraction of the device's
**bf16** peak (``mfu_bf16``), and the goals set for it (fine-tuning >= 2x the Trainer, >= 40% MFU).

* finetune: bertscope (its defaults: dynamic padding, length-grouped batches) against the Trainer with dynamic
  padding and ``group_by_length``, both in bf16 on the GPU (fp32 on CPU), same subset, hyper-parameters and seed;
  both load the model with transformers' default attention (SDPA where the family supports it, recorded as
  ``attn_implementation``).
* lens: bench_lens (naive loop, lens, floor), fp32.
* frozen grid: bench_features (the cached study of ``--configs`` heads vs separate frozen fine-tunings).
* precision forms: bench_precision (one training step in fp32, bf16 autocast, bf16 weights with fp32 master weights,
  and compiled autocast): which form ``--dtype bfloat16`` should use on this device.

Without ``--model`` a randomly initialised BERT-base-shaped masked LM (12 x 768, 12 heads, the embedded tokenizer) is
generated: no hub is needed and the costs are those of BERT-base; its dev scores are those of an untrained model (the
JSON says so). SST-2 comes from the local GLUE copy (``--data-dir`` or ``$BERTSCOPE_GLUE_DIR``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import bench_features, bench_finetune, bench_lens, bench_precision
from benchmarks.bench_layer_scan import make_base_model
from benchmarks.common import RESULTS, require_glue_dir
from benchmarks.peak import measure_peak, reference_dtype
from bertscope.core.device import resolve_device
from bertscope.core.results import environment_info, write_json_atomic
from bertscope.models import flops, loading

__all__ = ["main", "mfu"]

GOAL_SPEEDUP = 2.0
GOAL_MFU = 0.40

# (full, small) settings of each part
SHAPE = {"full": (12, 768, 12), "small": (2, 64, 2)}
FINETUNE = {"full": ["--train", "8000", "--eval", "872"], "small": ["--train", "64", "--eval", "32"]}
LENS = {"full": ["--max-examples", "872", "--rounds", "2"], "small": ["--max-examples", "24", "--rounds", "1"]}
FEATURES = {"full": ["--train", "2000", "--eval", "872", "--configs", "100", "--baseline-configs", "3"],
            "small": ["--train", "48", "--eval", "24", "--configs", "3", "--baseline-configs", "1", "--epochs", "1"]}
PRECISION = {"full": ["--steps", "20", "--warmup", "3", "--forms", "fp32,autocast,bf16-weights,compiled-autocast"],
             "small": ["--small", "--forms", "fp32,autocast,bf16-weights"]}


def mfu(report: dict[str, Any], bf16_peak: float) -> dict[str, float]:
    """Each side's achieved model FLOP/s (a benchmark's ``efficiency`` block) over the device's bf16 peak."""
    return {name: value / bf16_peak for name, value in report["achieved_flops"].items()}


def _part(name: str, run: Any, argv: list[str]) -> dict[str, Any]:
    print(f"\n=== {name}: {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    summary = run(argv)
    summary["part_wall_seconds"] = time.perf_counter() - started
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny shapes and data: a CPU smoke test (< 1 minute)")
    parser.add_argument("--model", default=None, help="local checkpoint (default: random-init BERT-base shape)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cuda, cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default=str(RESULTS / "gpu.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    mode = "small" if args.small else "full"
    device = str(resolve_device(args.device))
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    data_dir = require_glue_dir(args.data_dir)
    os.environ["BERTSCOPE_GLUE_DIR"] = data_dir  # bench_lens reads SST-2 dev sentences from it
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        if args.model is None:
            layers, hidden, heads = SHAPE[mode]
            model = make_base_model(work / "model", layers, hidden, heads, seed=0)
            model_note = f"random-init BertForMaskedLM, {layers} layers x {hidden} hidden, {heads} heads (no hub)"
        else:
            model, model_note = args.model, args.model
        shape = flops.EncoderShape.from_config(loading.load_model(model, "base").model.config)
        peak = measure_peak(shape.hidden, shape.intermediate, device=device,
                            tokens=256 if args.small else 4096, min_seconds=0.05 if args.small else 0.2)
        common = ["--model", model, "--device", device]
        finetune = _part("finetune", bench_finetune.main,
                         [*common, *FINETUNE[mode], "--dtype", dtype, "--batch-size", str(args.batch_size),
                          "--skip", "trainer-padded", "--data-dir", data_dir, "--out", str(work / "finetune.json")])
        lens = _part("lens", bench_lens.main, [*common, *LENS[mode], "--out", str(work / "lens.json")])
        features = _part("frozen grid", bench_features.main,
                         [*common, *FEATURES[mode], "--data-dir", data_dir, "--out", str(work / "features.json")])
        forms = _part("precision forms", bench_precision.main,
                      [*common, *PRECISION[mode], "--batch-size", str(args.batch_size), "--data-dir", data_dir,
                       "--out", str(work / "precision.json")])
        # what bertscope loads (the family's first choice, bertscope.models.families) and the Trainer gets by default
        attention = loading.load_model(model, "base").attention
    # the MFU reference: the bf16 peak where the device runs bf16 natively, else its fp32 peak
    mfu_dtype = reference_dtype(peak, "bfloat16")
    bf16_peak = peak["best"][mfu_dtype]
    parts = {"finetune": finetune, "lens": lens, "frozen_grid": features}
    mfus = {name: mfu(part["efficiency"], bf16_peak) for name, part in parts.items()}
    speedup = finetune["speedup_vs_trainer-dynamic"]
    summary = {
        "benchmark": "gpu", "mode": mode, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "device": device, "device_name": peak["device_name"], "dtype_finetune": dtype, "model": model_note,
        "attn_implementation": attention, "scores_meaningful": args.model is not None,
        "peak": peak, "bf16_peak_flops": bf16_peak, "mfu_peak_dtype": mfu_dtype,
        "mfu_bf16": mfus,
        "finetune_speedup_vs_trainer": speedup, "lens_speedup_vs_naive": lens["speedup_vs_naive"],
        "frozen_grid_speedup": features["speedup_total"],
        "goals": {"finetune_speedup_vs_trainer": {"goal": GOAL_SPEEDUP, "value": speedup,
                                                  "met": speedup >= GOAL_SPEEDUP},
                  "finetune_mfu_bf16": {"goal": GOAL_MFU, "value": mfus["finetune"]["bertscope"],
                                        "met": mfus["finetune"]["bertscope"] >= GOAL_MFU,
                                        "applies": mode == "full" and device.startswith("cuda")}},
        "precision_forms": {name: {k: form[k] for k in ("seconds_per_step", "speedup_vs_fp32", "final_loss",
                                                         "fraction_of_peak")}
                            for name, form in forms["forms"].items()},
        "fastest_precision_form": forms["fastest"], "precision_detail": forms,
        "parts": parts, "wall_seconds": time.perf_counter() - started, "environment": environment_info(),
    }
    write_json_atomic(args.out, summary)
    print("\n=== gpu benchmark:", json.dumps({k: summary[k] for k in (
        "device_name", "bf16_peak_flops", "finetune_speedup_vs_trainer", "lens_speedup_vs_naive",
        "frozen_grid_speedup", "mfu_bf16")}, indent=1))
    print(f"written {args.out} ({summary['wall_seconds']:.0f} s)")
    return summary


if __name__ == "__main__":
    main()
