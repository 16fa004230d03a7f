"""Freezing policies: what is frozen per family, and that frozen parameters never reach the optimizer."""

from __future__ import annotations

import pytest
import torch

from bertscope.core.errors import BertscopeError
from bertscope.finetune.freezing import apply_freezing, trainable_parameters
from bertscope.models import families
from conftest import tiny_model


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


def test_a_freeze_list_freezes_exactly_the_hidden_states_it_names() -> None:
    """``layers:LIST`` counts hidden-state indices: 0 = the embeddings, l = transformer layer l (``layers[l - 1]``)."""
    model = tiny_model("bert", "base", num_layers=3)
    info = apply_freezing(model, "layers:0,2", read_layers=(3,))
    assert info["frozen"] == ["embeddings", "layer 2"] and info["not_computed"] == []
    layers = families.get_layers(model)
    assert [all(not p.requires_grad for p in layer.parameters()) for layer in layers] == [False, True, False]
    assert all(not p.requires_grad for p in families.embeddings_module(model).parameters())
    again = apply_freezing(model, "layers:-3--2", read_layers=(3,))  # hidden states 1 and 2 of 0..3
    assert again["frozen"] == ["layer 1", "layer 2"]
    with pytest.raises(BertscopeError, match="--freeze 'layers:4'.*out of range"):
        apply_freezing(model, "layers:4")
