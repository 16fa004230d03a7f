"""layer-scan: the prefix-reusing scan against the naive build-every-variant loop, its layer selection (transformer-layer
indices, as deepen counts them) and its result file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertscope.core.errors import BertscopeError
from bertscope.lens import agreement
from bertscope.models import families
from bertscope.surgery import deepen as surgery
from bertscope.surgery import layer_scan
from bertscope.surgery.config import LayerScanConfig
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


def test_scan_layer_maps() -> None:
    assert layer_scan.scan_layer_maps(3, "duplicate") == [(0, [0, 0, 1, 2]), (1, [0, 1, 1, 2]), (2, [0, 1, 2, 2])]
    assert layer_scan.scan_layer_maps(3, "remove", [1]) == [(1, [0, 2])]
    with pytest.raises(BertscopeError, match="at least 2"):
        layer_scan.scan_layer_maps(1, "remove")


@pytest.mark.parametrize(("lengths", "per_pass"), [((10, 10, 6), 4), ((10, 3, 6, 4, 2), 2)],
                         ids=["padded", "packable"])
@pytest.mark.parametrize("name", FAMILY_IDS)
def test_scan_batch_equals_building_each_variant(name: str, lengths: tuple[int, ...], per_pass: int) -> None:
    model = tiny_model(name, num_layers=3)
    head = families.mlm_head_parts(model)
    ids, mask, counted = _inputs(lengths=lengths)
    maps = layer_scan.scan_layer_maps(3, "duplicate") + layer_scan.scan_layer_maps(3, "remove")
    variants = layer_scan._scan_variants(model, maps)
    stats, hits, original_hits = layer_scan.scan_batch(model, head, ids, mask, counted, variants,
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
            want = agreement.agreement_stats(head, original.hidden_states[-1][counted],
                                           families.mlm_head_parts(variant), out.hidden_states[-1][counted])
            assert torch.equal(got[0], want[0]), (layer, "top-1 agreement")
            torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=5e-6)  # float32 KL noise floor
            torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(hit.numpy(), (out.logits.argmax(-1) == ids)[counted].numpy())


@pytest.fixture(scope="module")
def bert3(tiny_checkpoint) -> str:
    return str(tiny_checkpoint("bert", 3))


def test_layers_are_transformer_layer_indices_and_recorded_as_such(bert3, tmp_path) -> None:
    common = {"model": bert3, "max_examples": 6, "progress": False, "device": "cpu", "head": "pretrained"}
    every = layer_scan.run_layer_scan(LayerScanConfig(op="remove", layers="all", **common))
    assert [r["layer"] for r in every.rows] == [0, 1, 2]
    assert [r["layer_map"] for r in every.rows] == ["1,2", "0,2", "0,1"]
    last = layer_scan.run_layer_scan(LayerScanConfig(op="remove", layers="-1", out=str(tmp_path / "s"), **common))
    assert last.rows == every.rows[-1:]
    payload = json.loads((tmp_path / "s" / "layer_scan.json").read_text())
    assert payload["layer_numbering"] == "block" and "0 = the first transformer layer" in payload["layer_numbering_note"]


def test_layer_scan_refuses_layers_out_of_range(bert3) -> None:
    with pytest.raises(BertscopeError, match="--layers .*transformer-layer index 3 is out of range.*0..2"):
        layer_scan.run_layer_scan(LayerScanConfig(model=bert3, layers="3", max_examples=4, progress=False))
