"""Whether a device computes in a reduced precision natively, and what bertscope records and says about it.

Why this exists: ``--dtype bfloat16`` only pays where the hardware multiplies bf16 matrices itself -- CUDA GPUs of
compute capability 8.0 and newer, CPUs with AVX-512 BF16 or AMX. Elsewhere PyTorch emulates it: on an AVX2-only
CPU (measured with ``python -m benchmarks.peak``: 68 GFLOP/s fp32, 1.7 GFLOP/s bf16, 2 threads) one MiniLM training
step took 13x as long in bf16 as in fp32. A user who asks for bf16 there gets one warning line saying so, and every
result records what the device could do (:func:`precision_info`), so a slow or a differing run can be explained
afterwards.

Pure queries, no state: :func:`native_support` asks torch (CUDA: ``torch.cuda.is_bf16_supported`` without emulation;
CPU: the ``torch.cpu`` ISA probes, falling back to oneDNN's own check).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from bertscope.core.device import resolve_device

__all__ = ["emulation_warning", "native_support", "precision_info", "warn_if_emulated"]

_REDUCED = frozenset({"bfloat16", "float16"})  # the dtypes a device may only emulate


def _cpu_probe(name: str) -> bool | None:
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if callable(probe) else None
    except Exception:  # an old or unusual build: fall back to the next probe
        return None


def native_support(dtype: str, device: torch.device | str) -> tuple[bool, str]:
    """``(native, how)``: whether ``device`` multiplies ``dtype`` matrices in hardware, and the feature that says so.

    float32 is always native. ``how`` names the feature found (``"AMX"``, ``"AVX512_BF16"``, ``"CUDA sm_90"``) or
    why not (``"emulated: no AVX512_BF16/AMX (cpu capability AVX2)"``).
    """
    device = torch.device(device)
    if dtype not in _REDUCED:
        return True, "float32"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if dtype == "bfloat16":
            native = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        else:
            native = major >= 6
        return native, f"CUDA sm_{major}{minor}" if native else f"emulated: CUDA sm_{major}{minor}"
    if device.type == "mps":
        return True, "MPS (not measured by bertscope)"
    if device.type != "cpu":
        return False, f"unknown for device type {device.type}"
    capability = torch.backends.cpu.get_cpu_capability()
    if dtype == "bfloat16":
        if _cpu_probe("_is_amx_tile_supported"):
            return True, "AMX"
        found = _cpu_probe("_is_avx512_bf16_supported")
        if found is None:
            found = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return (True, "AVX512_BF16") if found else (False, f"emulated: no AVX512_BF16/AMX (cpu capability "
                                                           f"{capability})")
    found = _cpu_probe("_is_amx_fp16_supported")
    if not found:
        found = bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return (True, "AMX/AVX512_FP16") if found else (False, f"emulated: no AVX512_FP16/AMX-FP16 (cpu capability "
                                                           f"{capability})")


def emulation_warning(dtype: str, device: torch.device | str) -> str | None:
    """One line for a user who asked for a reduced precision the device only emulates; None where it is native."""
    native, how = native_support(dtype, device)
    if native:
        return None
    return (f"--dtype {dtype} on {torch.device(device).type} is {how}: matrix products run far slower than in "
            f"float32 here (measure it: python -m benchmarks.peak); --dtype float32 is faster on this machine")


def precision_info(dtype: str, device: torch.device | str) -> dict[str, Any]:
    """What a result records about its compute precision: the dtype, whether the device runs it natively, and how."""
    native, how = native_support(dtype, device)
    return {"dtype": dtype, "native": native, "support": how}


def warn_if_emulated(config: Any) -> None:
    """Warn once per process (logger ``bertscope``) when a config asks for a precision its device only emulates.

    Called where every command's config is made (the CLI and :mod:`bertscope.api`), before anything heavy runs;
    configs without ``dtype``/``device`` fields pass silently. A device string that does not resolve is left to the
    command's own one-line error."""
    values = config.to_dict()  # flat option names: the groups a config holds do not matter here
    dtype, device = values.get("dtype"), values.get("device")
    if dtype not in _REDUCED or device is None:
        return


    try:
        resolved = resolve_device(device)
    except Exception:
        return
    _warn_once(dtype, str(resolved))


@functools.cache
def _warn_once(dtype: str, device: str) -> None:
    line = emulation_warning(dtype, device)
    if line is not None:
        logging.getLogger("bertscope").warning("%s", line)
