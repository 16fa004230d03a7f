"""Native or emulated reduced precision: what is detected, what a user is told, what a result records."""

from __future__ import annotations

import logging

import pytest
import torch

from bertscope.core import precision
from bertscope.finetune.config import FinetuneConfig


def test_float32_is_always_native() -> None:
    assert precision.native_support("float32", "cpu") == (True, "float32")
    assert precision.emulation_warning("float32", "cpu") is None


def test_cpu_bf16_support_agrees_with_torchs_own_probes() -> None:
    native, how = precision.native_support("bfloat16", "cpu")
    probes = [getattr(torch.cpu, name, lambda: False)() for name in ("_is_amx_tile_supported",
                                                                        "_is_avx512_bf16_supported")]
    assert native == any(probes)
    assert ("emulated" in how) == (not native)
    if not native:
        assert torch.backends.cpu.get_cpu_capability() in how


def test_cpu_bf16_support_agrees_with_the_kernels_cpu_flags() -> None:
    """Independent of torch: the flags Linux reports for the CPU (``avx512_bf16`` or ``amx_bf16``)."""
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("flags")), [])
    assert precision.native_support("bfloat16", "cpu")[0] == bool({"avx512_bf16", "amx_bf16"} & set(flags))


@pytest.mark.parametrize("native", [True, False])
def test_one_warning_line_only_where_emulated(native: bool, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(precision, "native_support",
                        lambda dtype, device: (native, "AMX" if native else "emulated: no AVX512_BF16/AMX"))
    precision._warn_once.cache_clear()
    config = FinetuneConfig(task="rte", dtype="bfloat16", device="cpu")
    with caplog.at_level(logging.WARNING, logger="bertscope"):
        precision.warn_if_emulated(config)
        precision.warn_if_emulated(config)  # once per process, not once per call
    lines = [r.getMessage() for r in caplog.records]
    if native:
        assert lines == []
    else:
        assert len(lines) == 1 and "\n" not in lines[0]
        assert "--dtype bfloat16" in lines[0] and "float32" in lines[0]
    precision._warn_once.cache_clear()


def test_float32_configs_never_warn(caplog: pytest.LogCaptureFixture) -> None:
    precision._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="bertscope"):
        precision.warn_if_emulated(FinetuneConfig(task="rte"))
    assert caplog.records == []


def test_precision_info_is_what_native_support_says() -> None:
    info = precision.precision_info("bfloat16", "cpu")
    assert (info["native"], info["support"]) == precision.native_support("bfloat16", "cpu")
    assert info["dtype"] == "bfloat16"


def test_environment_records_the_cpus_capability() -> None:
    from bertscope.core.results import environment_info

    info = environment_info()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["bfloat16_support"]["cpu"] == precision.native_support("bfloat16", "cpu")[1]
