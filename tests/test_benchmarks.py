"""The GPU benchmark's small mode runs on CPU and its JSON carries peaks and fractions that recompute by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_json(tmp_path_factory: pytest.TempPathFactory, glue_dir: Path) -> dict:
    out = tmp_path_factory.mktemp("gpu") / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "BERTSCOPE_GLUE_DIR": str(glue_dir),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--small", "--device", "cpu", "--threads", "1",
                    "--out", str(out)], cwd=ROOT, env=env, check=True, timeout=300)
    return json.loads(out.read_text())


def test_peaks_measured_per_dtype(gpu_json: dict) -> None:
    assert gpu_json["mode"] == "small" and gpu_json["device"] == "cpu"
    assert gpu_json["attn_implementation"]  # recorded, whichever the family gets
    for part in ("finetune", "lens", "frozen_grid"):
        peak = gpu_json["parts"][part]["peak"]
        assert peak["best"]["fp32"] > 0 and peak["best"]["bf16"] > 0
        assert peak["best"]["fp32"] == max(peak["shapes"]["fp32"].values())


def test_fractions_are_sane(gpu_json: dict) -> None:
    for part in gpu_json["parts"].values():
        fractions = part["efficiency"]["fraction_of_peak"]
        assert fractions, "no side reported"
        for value in fractions.values():
            assert 0 < value <= 1.2
    for sides in gpu_json["mfu_bf16"].values():
        assert all(0 < v <= 1.2 for v in sides.values())


def test_one_fraction_recomputes_by_hand(gpu_json: dict) -> None:
    finetune = gpu_json["parts"]["finetune"]
    report = finetune["efficiency"]
    assert report["dtype"] == "fp32" and report["peak_flops"] == finetune["peak"]["best"]["fp32"]
    seconds = sum(run["train_seconds"] for run in finetune["runs"]["bertscope"])
    assert report["seconds"]["bertscope"] == pytest.approx(seconds)
    by_hand = report["model_flops"]["bertscope"] / seconds / finetune["peak"]["best"]["fp32"]
    assert report["fraction_of_peak"]["bertscope"] == pytest.approx(by_hand, rel=1e-9)
    # the same subset on both sides: the FLOP/s ratio is the throughput ratio
    ratio = report["achieved_flops"]["bertscope"] / report["achieved_flops"]["trainer-dynamic"]
    assert ratio == pytest.approx(gpu_json["finetune_speedup_vs_trainer"], rel=1e-6)
    mfu = report["achieved_flops"]["bertscope"] / gpu_json["bf16_peak_flops"]
    assert gpu_json["mfu_bf16"]["finetune"]["bertscope"] == pytest.approx(mfu)


def test_efficiency_is_flops_over_seconds_over_the_dtype_peak() -> None:
    from benchmarks.peak import efficiency

    peak = {"best": {"fp32": 100.0, "bf16": 400.0}}
    report = efficiency(peak, "bfloat16", {"a": 600.0, "b": 600.0}, {"a": 3.0, "b": 6.0})
    assert report["dtype"] == "bf16" and report["peak_flops"] == 400.0
    assert report["achieved_flops"] == {"a": 200.0, "b": 100.0}
    assert report["fraction_of_peak"] == {"a": 0.5, "b": 0.25}


@pytest.fixture(scope="module")
def precision_json(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from benchmarks import bench_precision

    out = tmp_path_factory.mktemp("precision") / "precision.json"
    bench_precision.main(["--small", "--threads", "1", "--out", str(out)])
    return json.loads(out.read_text())


def test_precision_forms_start_alike_and_are_compared_with_fp32(precision_json: dict) -> None:
    from bertscope.core import precision

    forms = precision_json["forms"]
    assert set(forms) == {"fp32", "autocast", "bf16-weights"}
    assert forms["fp32"]["speedup_vs_fp32"] == pytest.approx(1.0)
    for name, form in forms.items():
        by_hand = forms["fp32"]["total_seconds"] / form["total_seconds"]
        assert form["speedup_vs_fp32"] == pytest.approx(by_hand)
        # the same weights, batches and optimizer: two steps of bf16 compute stay near the fp32 loss
        assert abs(form["mean_loss"] - forms["fp32"]["mean_loss"]) < 0.05, name
        native = precision_json["bf16_native"]
        assert form["peak_dtype"] == ("fp32" if name == "fp32" or not native else "bf16")
    assert precision_json["bf16_native"] == precision.native_support("bfloat16", "cpu")[0]
    assert precision_json["fastest"] in forms


def test_an_emulated_dtype_is_measured_against_the_fp32_peak() -> None:
    from benchmarks.peak import efficiency

    peak = {"best": {"fp32": 100.0, "bf16": 4.0}, "native": {"fp32": True, "bf16": False}}
    report = efficiency(peak, "bfloat16", {"a": 600.0}, {"a": 3.0})
    assert (report["peak_dtype"], report["emulated"], report["peak_flops"]) == ("fp32", True, 100.0)
    assert report["fraction_of_peak"] == {"a": 2.0}


def test_layer_scan_ceiling_is_each_loops_time_over_bertscopes_flops_at_peak() -> None:
    from benchmarks.bench_layer_scan import ceiling

    top = ceiling({"bertscope": 30.0, "naive": 60.0, "plain": 100.0}, bertscope_flops=2000.0, peak_fp32=100.0)
    assert top["bertscope_seconds_at_peak"] == 20.0  # 2000 FLOPs at 100 FLOP/s
    assert top["speedup_at_peak"] == {"naive": 3.0, "plain": 5.0}
    assert top["bertscope_seconds_over_floor"] == 1.5


def test_reference_peak_is_fp32_where_the_dtype_is_emulated_or_unmeasured() -> None:
    from benchmarks.peak import reference_dtype

    assert reference_dtype({"best": {"fp32": 1.0, "bf16": 3.0}, "native": {"bf16": True}}, "bfloat16") == "bf16"
    assert reference_dtype({"best": {"fp32": 1.0, "bf16": 3.0}, "native": {"bf16": False}}, "bfloat16") == "fp32"
    assert reference_dtype({"best": {"fp32": 1.0}}, "bfloat16") == "fp32"
    assert reference_dtype({"best": {"fp32": 1.0}}, "float32") == "fp32"
