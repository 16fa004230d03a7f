"""compare on saved folders: against the in-memory layer-scan row of the same variant, the lens's own curves, a
model against itself, and its user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertscope import api
from bertscope.core.errors import BertscopeError
from bertscope.surgery import compare, layer_scan
from bertscope.surgery import deepen as surgery
from bertscope.surgery.config import CompareConfig, DeepenConfig, LayerScanConfig


@pytest.fixture(scope="module")
def bert_pair(tiny_checkpoint, tmp_path_factory) -> tuple[str, str]:
    source = str(tiny_checkpoint("bert", 3))
    out = tmp_path_factory.mktemp("cmp") / "dup1"
    surgery.run_deepen(DeepenConfig(model=source, duplicate="1", out=str(out)))
    return source, str(out)


def test_compare_of_a_saved_variant_equals_its_layer_scan_row(bert_pair, tmp_path) -> None:
    source, variant = bert_pair
    common = {"model": source, "max_examples": 24, "batch_size": 7, "progress": False, "device": "cpu"}
    cmp = compare.run_compare(CompareConfig(variant=variant, out=str(tmp_path / "cmp"), **common))
    scan = layer_scan.run_layer_scan(LayerScanConfig(op="duplicate", out=str(tmp_path / "scan"), **common))
    row = next(r for r in scan.rows if r["layer"] == 1)
    assert row["layer_map"] == "0,1,1,2" and row["status"] == "ok"
    assert cmp.agreement.positions == row["positions"] > 0
    assert cmp.agreement.top1_agreement == pytest.approx(row["top1_agreement"], abs=1e-9)
    assert cmp.agreement.mean_kl == pytest.approx(row["mean_kl"], rel=1e-4, abs=1e-7)
    assert cmp.agreement.mean_cosine == pytest.approx(row["mean_cosine"], rel=1e-6)
    assert cmp.agreement.top1_agreement < 1.0  # a duplicated layer does change a random model
    # the variant's final-layer curve point is the variant's own top-1 reconstruction
    assert cmp.curves["variant"][-1]["top1"] == pytest.approx(row["variant_top1"])
    assert [len(cmp.curves["original"]), len(cmp.curves["variant"])] == [4, 5]
    for folder, stem in ((tmp_path / "cmp", "compare"), (tmp_path / "scan", "layer_scan")):
        figures = {f"{stem}.png", f"{stem}.svg", f"{stem}.pdf"}  # every figure as PNG (300 dpi), SVG and PDF
        assert {f"{stem}.json", f"{stem}.csv", *figures} <= {p.name for p in folder.iterdir()}
        payload = json.loads((folder / f"{stem}.json").read_text())
        assert {Path(payload["files"][fmt]).name for fmt in ("png", "svg", "pdf")} == figures
        assert payload["environment"]["versions"]["transformers"] and payload["config"]["model"] == source
        assert payload["layer_numbering"] == {"compare": "hidden_state", "layer_scan": "block"}[stem]
    assert len(scan.rows) == 3 and scan.metrics()["min_top1_agreement"] <= 1.0


def test_compare_curves_equal_the_lens_reconstruct_curves(bert_pair, tmp_path) -> None:
    source, variant = bert_pair
    common = {"max_examples": 16, "progress": False, "device": "cpu", "head": "pretrained"}
    cmp = compare.run_compare(CompareConfig(model=source, variant=variant, **common))
    for name, folder in (("original", source), ("variant", variant)):
        lens = api.reconstruct(model=folder, **common)
        theirs = [r.top1 for r in lens.records if getattr(r, "group", "all") == "all"]
        mine = [r["top1"] for r in cmp.curves[name]]
        assert mine == pytest.approx(theirs, abs=1e-9)


def test_a_model_agrees_with_itself(bert_pair) -> None:
    source, _ = bert_pair
    cmp = compare.run_compare(CompareConfig(model=source, variant=source, max_examples=12, progress=False,
                                            curves=False))
    assert cmp.agreement.top1_agreement == 1.0
    assert cmp.agreement.mean_kl == pytest.approx(0.0, abs=1e-6)
    assert cmp.agreement.mean_cosine == pytest.approx(1.0, abs=1e-6)


def test_compare_refuses_bad_input(bert_pair, tiny_checkpoint, tmp_path) -> None:
    source, variant = bert_pair
    with pytest.raises(BertscopeError, match="--variant is required"):
        CompareConfig(model=source)
    with pytest.raises(BertscopeError, match="does not exist"):
        compare.run_compare(CompareConfig(model=source, variant=str(tmp_path / "missing"), progress=False))
    with pytest.raises(BertscopeError, match="no pretrained masked-LM head"):
        compare.run_compare(CompareConfig(variant=source, head="pretrained", max_examples=4, progress=False))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BertscopeError, match="not a folder"):
        compare.run_compare(CompareConfig(model=source, variant=variant, out=str(blocker), progress=False))


@pytest.mark.slow
def test_deepened_default_model_runs_through_compare_and_the_lens_offline(tmp_path, monkeypatch) -> None:
    """The embedded default has no MLM head: one head is fitted on the original and shared by both models."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    deep = tmp_path / "deep"
    surgery.run_deepen(DeepenConfig(duplicate="4", out=str(deep)))
    fit = {"fit_steps": 3, "fit_batch_size": 8, "head_cache": str(tmp_path / "heads"), "progress": False,
           "max_examples": 8, "batch_size": 8}
    cmp = compare.run_compare(CompareConfig(variant=str(deep), out=str(tmp_path / "cmp"), **fit))
    assert cmp.head["mode"] == "fit" and cmp.depths == {"original": 6, "variant": 7}
    assert 0.0 <= cmp.agreement.top1_agreement <= 1.0 and cmp.agreement.mean_cosine > 0.5
    assert len(cmp.curves["variant"]) == 8
    lens = api.reconstruct(model=str(deep), **fit)
    assert len([r for r in lens.records if getattr(r, "group", "all") == "all"]) == 8
    assert Path(tmp_path / "cmp" / "compare.png").is_file()
