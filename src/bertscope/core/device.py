"""Which torch device and dtype an option names: ``auto``, ``cpu``, ``cuda:N``; ``float32``, ``bfloat16``...

The one place option strings become ``torch.device`` / ``torch.dtype``, with a one-line error for a name torch does
not know or a device this machine lacks; loading, the training loop and the precision check all ask here.
"""

from __future__ import annotations

import torch

from bertscope.core.errors import BertscopeError

__all__ = ["resolve_device", "resolve_dtype"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` means cuda when available, else cpu; a ``torch.device`` is taken as it is."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise BertscopeError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BertscopeError(f"device {device} asked for, but CUDA is not available here; use --device cpu")
    return resolved


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str) -> torch.dtype:
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise BertscopeError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16") from None
