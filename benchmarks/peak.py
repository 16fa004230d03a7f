"""The machine's GEMM peak, measured in the same run as a benchmark, and the fraction of it a run achieves.

``measure_peak`` (``bertscope.core.peak``, shared with ``replicate``'s compute fraction) times ``torch.matmul`` at the shapes a BERT layer multiplies -- ``[tokens x h] @ [h x h]`` (the
attention projections), ``[tokens x h] @ [h x f]`` and ``[tokens x f] @ [f x h]`` (the feed-forward) -- in fp32 and in
bf16 (where the device runs it), with the threads the benchmark itself uses, best of a few repeats. The best shape of
a dtype is that dtype's peak: what this machine can do at this model's shapes, not a datasheet number.

``efficiency`` turns model FLOPs (``bertscope.models.flops``) and seconds into achieved FLOP/s and their fraction of the
peak of the dtype used (MFU). Every benchmark writes both into its JSON under ``peak`` and ``efficiency``.

    python -m benchmarks.peak --hidden 768        # print the peak of this machine at BERT-base shapes
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from bertscope.core.peak import DTYPE_KEYS, measure_peak

__all__ = ["DTYPE_KEYS", "efficiency", "measure_peak", "print_efficiency", "reference_dtype"]


def reference_dtype(peak: dict[str, Any], dtype: str) -> str:
    """The peak key (``fp32``/``bf16``/``fp16``) a run computing in ``dtype`` is measured against: its own, unless
    the device only emulates it (``peak["native"]``) or it was not measured; then fp32, the machine's real limit."""
    key = DTYPE_KEYS.get(dtype, dtype)
    native = peak.get("native", {}).get(key, True)
    return key if native and key in peak["best"] else "fp32"


def efficiency(peak: dict[str, Any], dtype: str, flops: dict[str, float], seconds: dict[str, float]) -> dict[str, Any]:
    """Achieved model FLOP/s of each side and its fraction of the measured peak of ``dtype`` (MFU).

    ``flops[name]`` are the model FLOPs that side computes (``bertscope.models.flops``), ``seconds[name]`` its wall time.
    Where the device only emulates ``dtype`` (``peak["native"]``), the fraction is of the fp32 peak: the emulated
    matmul's speed is no limit (the model's ``F.linear`` under autocast can beat it).
    """
    key = DTYPE_KEYS.get(dtype, dtype)
    peak_key = reference_dtype(peak, dtype)
    emulated = peak_key != key
    peak_flops = peak["best"][peak_key]
    achieved = {name: flops[name] / seconds[name] for name in seconds}
    return {"dtype": key, "peak_dtype": peak_key, "emulated": emulated, "peak_flops": peak_flops, "model_flops": dict(flops), "seconds": dict(seconds),
            "achieved_flops": achieved, "fraction_of_peak": {n: v / peak_flops for n, v in achieved.items()}}


def print_efficiency(report: dict[str, Any]) -> None:
    """One console line: achieved GFLOP/s of each side and its fraction of the peak."""
    parts = [f"{name} {report['achieved_flops'][name] / 1e9:.1f} GFLOP/s ({100 * fraction:.1f}%)"
             for name, fraction in report["fraction_of_peak"].items()]
    against = report.get("peak_dtype", report["dtype"])
    print(f"model FLOP/s ({report['dtype']}) vs measured {against} GEMM peak "
          f"{report['peak_flops'] / 1e9:.1f} GFLOP/s: " + ", ".join(parts), flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = measure_peak(args.hidden, tokens=args.tokens, device=args.device)
    print(json.dumps(peak, indent=1))
    return peak


if __name__ == "__main__":
    main()
