"""compare and layer-scan (issue 3): pure agreement metrics against scipy/numpy, the prefix-reusing scan against
the naive build-every-variant loop, and compare on saved folders against the scan and the lens's own curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import rel_entr, softmax

from bertscope import api, compare, families, surgery
from bertscope.configs import CompareConfig, DeepenConfig, LayerScanConfig
from bertscope.errors import BertscopeError
from conftest import FAMILY_IDS, tiny_model


def _inputs(seed: int = 3, lengths: tuple[int, ...] = (10, 10, 6)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (len(lengths), max(lengths)), generator=g)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    for row, n in enumerate(lengths):
        mask[row, n:] = 0
        ids[row, n:] = 0
    counted = mask.bool().clone()
    counted[:, 0] = False
    return ids, mask, counted


# --- pure metrics -------------------------------------------------------------------------------------------------


def test_metrics_match_scipy_and_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 50, generator=g), torch.randn(7, 50, generator=g)
    b[0] = a[0] * 2  # same arg-max, different distribution
    kl = compare.kl_divergence(a, b).numpy()
    want = rel_entr(softmax(a.double().numpy(), axis=1), softmax(b.double().numpy(), axis=1)).sum(axis=1)
    np.testing.assert_allclose(kl, want, rtol=1e-4, atol=1e-6)
    assert compare.kl_divergence(a, a).abs().max() < 1e-6
    np.testing.assert_array_equal(compare.top1_agreement(a, b).numpy(), a.numpy().argmax(1) == b.numpy().argmax(1))
    assert bool(compare.top1_agreement(a, b)[0])
    x, y = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    cos = (x.numpy() * y.numpy()).sum(1) / np.linalg.norm(x.numpy(), axis=1) / np.linalg.norm(y.numpy(), axis=1)
    np.testing.assert_allclose(compare.cosine_similarity(x, y).numpy(), cos, rtol=1e-5)


def test_agreement_sums_do_not_depend_on_batching() -> None:
    g = torch.Generator().manual_seed(1)
    agree, kl, cos = torch.rand(20, generator=g) > 0.3, torch.rand(20, generator=g), torch.rand(20, generator=g)
    whole, parts = compare.AgreementSums(), compare.AgreementSums()
    whole.add(agree, kl, cos)
    parts.add(agree[:7], kl[:7], cos[:7])
    parts.add(agree[7:], kl[7:], cos[7:])
    assert whole.result().positions == parts.result().positions == 20
    for field in ("top1_agreement", "mean_kl", "mean_cosine"):
        assert getattr(parts.result(), field) == pytest.approx(getattr(whole.result(), field))
    assert whole.result().top1_agreement == pytest.approx(float(agree.float().mean()))
    assert np.isnan(compare.AgreementSums().result().mean_kl)


def test_chunked_agreement_equals_unchunked() -> None:
    model = tiny_model("bert")
    head = families.mlm_head_parts(model)
    g = torch.Generator().manual_seed(2)
    ha, hb = torch.randn(9, 32, generator=g), torch.randn(9, 32, generator=g)
    small = compare.agreement_stats(head, ha, head, hb, chunk=2)
    big = compare.agreement_stats(head, ha, head, hb, chunk=1000)
    for s, b in zip(small, big):
        torch.testing.assert_close(s, b)


# --- layer-scan against the naive loop ------------------------------------------------------------------------------


def test_scan_layer_maps() -> None:
    assert compare.scan_layer_maps(3, "duplicate") == [(0, [0, 0, 1, 2]), (1, [0, 1, 1, 2]), (2, [0, 1, 2, 2])]
    assert compare.scan_layer_maps(3, "remove", [1]) == [(1, [0, 2])]
    with pytest.raises(BertscopeError, match="at least 2"):
        compare.scan_layer_maps(1, "remove")


@pytest.mark.parametrize(("lengths", "per_pass"), [((10, 10, 6), 4), ((10, 3, 6, 4, 2), 2)],
                         ids=["padded", "packable"])
@pytest.mark.parametrize("name", FAMILY_IDS)
def test_scan_batch_equals_building_each_variant(name: str, lengths: tuple[int, ...], per_pass: int) -> None:
    model = tiny_model(name, num_layers=3)
    head = families.mlm_head_parts(model)
    ids, mask, counted = _inputs(lengths=lengths)
    maps = compare.scan_layer_maps(3, "duplicate") + compare.scan_layer_maps(3, "remove")
    variants = compare._scan_variants(model, maps)
    stats, hits, original_hits = compare.scan_batch(model, head, ids, mask, counted, variants,
                                                    variants_per_pass=per_pass, chunk=7)
    with torch.no_grad():
        original = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        np.testing.assert_array_equal(original_hits.numpy(), (original.logits.argmax(-1) == ids)[counted].numpy())
        for (layer, layer_map, status), got, hit in zip(variants, stats, hits):
            if status != "ok":
                assert name == "modernbert" and layer == 0 and got is None
                continue
            variant = surgery.variant_model(model, layer_map)  # the naive way: build it, run it whole
            out = variant(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            want = compare.agreement_stats(head, original.hidden_states[-1][counted],
                                           families.mlm_head_parts(variant), out.hidden_states[-1][counted])
            assert torch.equal(got[0], want[0]), (layer, "top-1 agreement")
            torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=5e-6)  # float32 KL noise floor
            torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(hit.numpy(), (out.logits.argmax(-1) == ids)[counted].numpy())


# --- end to end on saved folders ------------------------------------------------------------------------------------


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
    scan = compare.run_layer_scan(LayerScanConfig(op="duplicate", out=str(tmp_path / "scan"), **common))
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
        assert {f"{stem}.json", f"{stem}.csv", f"{stem}.png"} <= {p.name for p in folder.iterdir()}
        payload = json.loads((folder / f"{stem}.json").read_text())
        assert payload["environment"]["versions"]["transformers"] and payload["config"]["model"] == source
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
    with pytest.raises(BertscopeError, match="out of range"):
        compare.run_layer_scan(LayerScanConfig(model=source, layers="3", max_examples=4, progress=False))
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
