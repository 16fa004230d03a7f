"""Packed rows (bertscope.models.packing) and runners.run_layers on them, against the padded batch the model itself runs."""

from __future__ import annotations

import pytest
import torch

from bertscope.models import families, packing, runners
from conftest import FAMILY_IDS, ragged_batch, tiny_model


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_rows_matches_torch_pad_sequence(side: str) -> None:
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(1, 50, (n,), generator=g) for n in (3, 7, 1, 7, 5)]
    padded, mask = packing.pad_rows([r.tolist() for r in rows], -2, side=side)
    expected = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-2, padding_side=side)
    ones = torch.nn.utils.rnn.pad_sequence([torch.ones_like(r) for r in rows], batch_first=True, padding_side=side)
    assert padded.dtype == torch.long and mask.dtype == torch.long
    assert torch.equal(padded, expected) and torch.equal(mask, ones)
    flags, flag_mask = packing.pad_rows([r > 25 for r in rows], False, dtype=torch.bool, side=side)
    assert flags.dtype == torch.bool and torch.equal(flags, expected > 25) and torch.equal(flag_mask, ones)
    empty, empty_mask = packing.pad_rows([], 0)
    assert empty.shape == empty_mask.shape == (0, 0)
    with pytest.raises(ValueError, match="side"):
        packing.pad_rows(rows, 0, side="middle")


def test_plan_rows_places_every_sequence_once_within_the_width() -> None:
    lengths = [9, 2, 7, 3, 3, 1, 9, 5]
    rows = packing.plan_rows(lengths, 9)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 9 for row in rows)
    assert len(rows) == 5  # first-fit decreasing: [9] [9] [7,2] [5,3,1] [3]
    with pytest.raises(ValueError, match="does not fit"):
        packing.plan_rows([3, 10], 9)


def test_pack_then_unpack_returns_the_real_tokens_in_order() -> None:
    _, mask = ragged_batch([6, 2, 3, 1, 5], 6)
    mask[1] = torch.tensor([0, 0, 0, 0, 1, 1])  # a left-padded row too
    hidden = torch.randn(5, 6, 4)
    layout = packing.layout_for(mask)
    packed = packing.pack(hidden, mask, layout)
    assert packed.shape == (layout.rows, 6, 4) and layout.rows == 3 < 5
    torch.testing.assert_close(packing.unpack(packed, layout), hidden[mask.bool()], rtol=0, atol=0)
    real = layout.segments > 0
    assert int(real.sum()) == int(mask.sum())
    for i, n in enumerate(mask.sum(1).tolist()):
        assert int((layout.segments == i + 1).sum()) == n
    padding_ids = layout.segments[~real]
    assert padding_ids.unique().numel() == padding_ids.numel()  # every padding position is its own segment


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("name", FAMILY_IDS)
def test_packed_rows_give_the_padded_batch_outputs(name: str, implementation: str) -> None:
    model = tiny_model(name, num_layers=2).eval()
    ids, mask = ragged_batch([8, 3, 4, 2, 8, 5], 8)
    if not packing.can_pack(model):
        with pytest.raises(ValueError, match="cannot run packed rows"):
            runners.run_layers(model, torch.zeros(1, 8, 1), None, [0], segments=torch.ones(1, 8, dtype=torch.long))
        return
    model.set_attn_implementation(implementation)
    with torch.no_grad():
        want = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()]
        layout = packing.layout_for(mask)
        assert layout.positions < mask.numel()
        packed = packing.pack(runners.embed(model, ids, mask), mask, layout)
        out = runners.run_layers(model, packed, None, [0, 1], segments=layout.segments)
        got = packing.unpack(families.finalize_hidden(model, out), layout)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
