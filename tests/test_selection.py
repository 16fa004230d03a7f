"""Selection functions against brute-force references; the head against AutoModelForSequenceClassification."""

from __future__ import annotations

import pytest
import torch
import transformers

from bertscope import families
from bertscope.errors import BertscopeError
from bertscope.selection import (
    HeadSpec,
    SelectingHead,
    apply_freezing,
    parse_dims,
    parse_freeze,
    parse_layers,
    parse_token,
    select_tokens,
    trainable_parameters,
)
from bertscope.train import Batch, EncoderRepresentation
from conftest import FAMILY_IDS, tiny_config, tiny_model


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


def test_parsers_and_their_errors() -> None:
    assert parse_layers("-1", 6) == (6,)
    assert parse_layers("0,3,-2", 6) == (0, 3, 5)
    assert parse_layers(-7, 6) == (0,)
    for bad in ("7", "-8", "x", "3,3", ""):
        with pytest.raises(BertscopeError):
            parse_layers(bad, 6)
    assert parse_dims("all", 4) == (0, 1, 2, 3)
    assert parse_dims("first:2", 10) == (0, 1)
    assert parse_dims("idx:17,3", 384) == (17, 3)
    a, b = parse_dims("random:5", 384, seed=3), parse_dims("random:5", 384, seed=3)
    assert a == b and len(set(a)) == 5 and all(0 <= i < 384 for i in a)
    assert parse_dims("random:5", 384, seed=4) != a
    for bad in ("first:0", "random:385", "idx:384", "idx:1,1", "some", "idx:"):
        with pytest.raises(BertscopeError):
            parse_dims(bad, 384)
    assert parse_token("max-norm") == ("max-norm", None)
    assert parse_token("index:-1") == ("index", -1)
    with pytest.raises(BertscopeError):
        parse_token("first")
    assert parse_freeze("layers:0-2", 6) == ("layers", (0, 2))
    with pytest.raises(BertscopeError):
        parse_freeze("layers:3-9", 6)


def test_dimension_mask_cuts_unselected_dimensions_off() -> None:
    spec = HeadSpec(num_labels=2, hidden_size=6, layers=(1, 2), dims=(4, 1), dropout=0.0)
    head = SelectingHead(spec, seed=0).eval()
    vectors = torch.randn(3, 2, 6)
    changed = vectors.clone()
    changed[:, :, [0, 2, 3, 5]] = torch.randn(3, 2, 4)  # only unselected dimensions differ
    torch.testing.assert_close(head(vectors), head(changed))
    torch.testing.assert_close(head.features(vectors), vectors[:, :, [4, 1]].flatten(1))
    assert head.classifier.in_features == 4


def test_head_initialisation_ignores_the_global_rng() -> None:
    spec = HeadSpec(num_labels=3, hidden_size=8, layers=(1,), dims=tuple(range(8)), head="mlp2", head_hidden=5)
    torch.manual_seed(1)
    a = SelectingHead(spec, seed=7)
    torch.manual_seed(2)
    b = SelectingHead(spec, seed=7)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(pa, pb, msg=name)
    c = SelectingHead(spec, seed=8)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_head_save_and_load_round_trip(tmp_path) -> None:
    spec = HeadSpec(num_labels=2, hidden_size=8, layers=(0, 2), dims=(1, 5, 6), head="mlp2", pooler=True)
    head = SelectingHead(spec, seed=3).eval()
    with torch.no_grad():
        head.pooler_dense.weight.normal_()
    head.save(tmp_path, seed=3)
    again = SelectingHead.load(tmp_path).eval()
    assert again.spec == spec
    x = torch.randn(4, 2, 8)
    torch.testing.assert_close(again(x), head(x))
    with pytest.raises(BertscopeError, match="selecting head"):
        SelectingHead.load(tmp_path / "nothing")


@pytest.mark.parametrize("num_layers", [2, 3])
def test_cls_last_layer_pooler_head_equals_sequence_classification_logits(num_layers: int) -> None:
    """The issue's check: --token cls --layer -1 --dims all --pooler with the classifier copied = HF's logits."""
    reference = tiny_model("bert", "sequence-classification", num_layers=num_layers)
    reference.config.num_labels = 2
    base = reference.bert
    spec = HeadSpec(num_labels=2, hidden_size=32, layers=parse_layers("-1", num_layers), dims=parse_dims("all", 32),
                    token="cls", pooler=True)
    head = SelectingHead(spec, seed=0, pooler=families.pooler_parts(base)).eval()
    head.classifier.load_state_dict(reference.classifier.state_dict())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (3, 9), generator=g)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    batch = Batch(input_ids=ids, attention_mask=mask, token_type_ids=types, special_mask=torch.zeros_like(ids),
                  labels=None, example_index=torch.arange(3))
    represent = EncoderRepresentation(base, spec.layers, parse_token("cls"), frozen=True)
    with torch.no_grad():
        ours = head(represent(batch))
        theirs = reference(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


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


@pytest.mark.parametrize("name", ["bert", "distilbert", "modernbert", "albert"])
def test_freezing_policies(name: str) -> None:
    model = tiny_model(name, "base", num_layers=3)
    info = apply_freezing(model, "encoder", read_layers=(3,))
    assert info["encoder_fully_frozen"] and not trainable_parameters(model)
    info = apply_freezing(model, "embeddings", read_layers=(3,))
    emb = {id(p) for p in families.embeddings_module(model).parameters()}
    assert emb and all(not p.requires_grad for p in families.embeddings_module(model).parameters())
    assert any(p.requires_grad for p in model.parameters() if id(p) not in emb)
    if name != "albert":
        info = apply_freezing(model, "layers:1-2", read_layers=(2,))
        layers = families.get_layers(model)
        assert all(not p.requires_grad for i in (0, 1, 2) for p in layers[i].parameters())  # 3 not computed
        assert info["not_computed"] == ["layer 3"]
        assert all(p.requires_grad for p in families.embeddings_module(model).parameters())
    else:
        with pytest.raises(BertscopeError, match="shares"):
            apply_freezing(model, "layers:1-2", read_layers=(3,))
        apply_freezing(model, "embeddings", read_layers=(3,))
    pooler = families.pooler_parts(model)
    if pooler is not None:
        assert not any(p.requires_grad for p in pooler[0].parameters())


def test_frozen_parameters_get_no_gradient_and_no_optimizer_state() -> None:
    model = tiny_model("bert", "base", num_layers=2).train()
    apply_freezing(model, "layers:0-1", read_layers=(2,))
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    ids = torch.randint(1000, 30000, (2, 6))
    model(input_ids=ids).last_hidden_state.sum().backward()
    optimizer.step()
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)
    assert all(id(p) not in {id(q) for q in optimizer.state} for p in frozen)
    assert len(optimizer.state) == len(params)


def test_pooler_is_refused_cleanly_for_families_without_one() -> None:
    assert families.pooler_parts(tiny_model("distilbert", "base")) is None
    assert families.pooler_parts(tiny_model("albert", "base")) is not None
    assert isinstance(tiny_config("bert"), transformers.PretrainedConfig)
