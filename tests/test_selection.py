"""Token and layer selection against brute-force references and the full model's hidden states."""

from __future__ import annotations

import pytest
import torch

from bertscope.finetune.batching import Batch
from bertscope.finetune.representation import EncoderRepresentation
from bertscope.finetune.selection import select_tokens
from bertscope.models import families
from conftest import FAMILY_IDS, tiny_model


def _hidden(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 7, 5, generator=g)
    lengths = [7, 4, 2]
    mask = torch.zeros(3, 7, dtype=torch.long)
    special = torch.zeros(3, 7, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        special[row, 0] = special[row, n - 1] = 1
    return hidden, mask, special


def _candidates(mask_row, special_row, include_special):
    idx = [t for t in range(len(mask_row)) if mask_row[t] and (include_special or not special_row[t])]
    return idx or [t for t in range(len(mask_row)) if mask_row[t]]


@pytest.mark.parametrize("include_special", [False, True])
def test_pooling_methods_match_a_per_example_loop(include_special: bool) -> None:
    hidden, mask, special = _hidden()
    # Make a padded position hold the largest vector: it must never be chosen.
    hidden[1, 6] = 100.0
    for method in ("max-norm", "mean", "max"):
        got = select_tokens(hidden, mask, special, method, include_special=include_special)
        for b in range(3):
            cand = _candidates(mask[b].tolist(), special[b].tolist(), include_special)
            vectors = hidden[b, cand]
            if method == "max-norm":
                expected = vectors[vectors.norm(dim=-1).argmax()]
            elif method == "mean":
                expected = vectors.mean(dim=0)
            else:
                expected = vectors.max(dim=0).values
            torch.testing.assert_close(got[b], expected)


def test_example_with_only_special_tokens_falls_back_to_all_real_tokens() -> None:
    hidden, mask, special = _hidden()
    got = select_tokens(hidden, mask, special, "mean")  # row 2 = [CLS] [SEP] only
    torch.testing.assert_close(got[2], hidden[2, :2].mean(dim=0))


def test_cls_and_index_selection() -> None:
    hidden, mask, special = _hidden()
    torch.testing.assert_close(select_tokens(hidden, mask, special, "cls"), hidden[:, 0])
    got = select_tokens(hidden, mask, special, "index", index=3)
    torch.testing.assert_close(got, torch.stack([hidden[0, 3], hidden[1, 3], hidden[2, 1]]))  # clamped for row 2
    last = select_tokens(hidden, mask, special, "index", index=-1)
    torch.testing.assert_close(last, torch.stack([hidden[0, 6], hidden[1, 3], hidden[2, 1]]))


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_reading_a_lower_layer_equals_the_full_models_hidden_state(name: str) -> None:
    model = tiny_model(name, "base", num_layers=3)
    ids = torch.randint(1000, 30000, (2, 8), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    batch = Batch(input_ids=ids, attention_mask=mask, token_type_ids=None, special_mask=torch.zeros_like(ids),
                  labels=None, example_index=torch.arange(2))
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        got = EncoderRepresentation(model, (0, 1), ("mean", None), frozen=True)(batch)
    torch.testing.assert_close(got[:, 0], full[0].mean(dim=1), rtol=1e-5, atol=1e-5)
    if families.family_for(model).final_norm_path is None:
        torch.testing.assert_close(got[:, 1], full[1].mean(dim=1), rtol=1e-5, atol=1e-5)
