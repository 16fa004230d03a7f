"""The machine's GEMM peak: ``torch.matmul`` timed at the shapes a BERT layer multiplies.

``measure_peak`` times ``[tokens x h] @ [h x h]`` (the attention projections), ``[tokens x h] @ [h x f]`` and
``[tokens x f] @ [f x h]`` (the feed-forward) in each asked dtype the device runs, with the current torch threads,
best of a few repeats. The best shape of a dtype is that dtype's peak: what this machine can do at this model's
shapes, not a datasheet number. Why in the package: the benchmarks (``benchmarks/peak.py``) and ``replicate``'s
compute fraction divide model FLOPs by the same measured peak.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from bertscope.core import precision

__all__ = ["DTYPE_KEYS", "measure_peak"]

DTYPE_KEYS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_matmul(a: torch.Tensor, b: torch.Tensor, repeats: int, min_seconds: float) -> float:
    """Best FLOP/s of ``a @ b`` over ``repeats`` timings, each long enough (``min_seconds``) to be measurable."""
    flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
    device = a.device
    torch.matmul(a, b)  # warm-up (allocations, kernel choice)
    _sync(device)
    started = time.perf_counter()
    torch.matmul(a, b)
    _sync(device)
    once = max(time.perf_counter() - started, 1e-6)
    inner = max(1, int(min_seconds / once))
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b)
        _sync(device)
        best = max(best, inner * flops / (time.perf_counter() - started))
    return best


def _supports(dtype: torch.dtype, device: torch.device) -> bool:
    if device.type == "cuda":
        return dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()
    try:
        torch.matmul(torch.ones(2, 2, dtype=dtype), torch.ones(2, 2, dtype=dtype))
    except RuntimeError:
        return False
    return dtype != torch.float16  # fp16 GEMM on CPU exists but is not a speed path


def measure_peak(hidden: int, intermediate: int | None = None, *, tokens: int = 2048, device: str = "cpu",
                 dtypes: tuple[str, ...] = ("float32", "bfloat16"), repeats: int = 3,
                 min_seconds: float = 0.1) -> dict[str, Any]:
    """Peak GEMM FLOP/s per dtype and shape on ``device`` with the current torch threads.

    Returns ``{"device", "threads", "tokens", "shapes": {dtype: {shape: flops}}, "best": {dtype: flops}}`` (dtype
    keys ``fp32``/``bf16``/``fp16``); a dtype the device does not run is left out.
    """
    ffn = intermediate or 4 * hidden
    dev = torch.device(device)
    shapes = {f"{tokens}x{hidden}@{hidden}x{hidden}": (hidden, hidden),
              f"{tokens}x{hidden}@{hidden}x{ffn}": (hidden, ffn),
              f"{tokens}x{ffn}@{ffn}x{hidden}": (ffn, hidden)}
    generator = torch.Generator().manual_seed(0)
    measured: dict[str, dict[str, float]] = {}
    for name in dtypes:
        dtype = getattr(torch, name)
        if not _supports(dtype, dev):
            continue
        per_shape = {}
        for label, (k, n) in shapes.items():
            a = torch.randn(tokens, k, generator=generator).to(dev, dtype)
            b = torch.randn(k, n, generator=generator).to(dev, dtype)
            per_shape[label] = _time_matmul(a, b, repeats, min_seconds)
        measured[DTYPE_KEYS[name]] = per_shape
    native = {DTYPE_KEYS[name]: precision.native_support(name, dev)[0] for name in dtypes}
    return {"device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "tokens": tokens, "hidden": hidden, "intermediate": ffn,
            "shapes": measured, "best": {k: max(v.values()) for k, v in measured.items()}, "native": native}
