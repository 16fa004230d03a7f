"""The family registry: every family's head, applied through bertscope, equals the Hugging Face model's own."""

from __future__ import annotations

import operator

import pytest
import torch

from bertscope.core.errors import BertscopeError, UnsupportedModelError
from bertscope.models import families, runners
from conftest import FAMILY_IDS, tiny_model


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (3, 11), generator=g)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    return ids, mask


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_full_head_on_last_hidden_state_equals_masked_lm_logits(name: str) -> None:
    model = tiny_model(name)
    ids, mask = _inputs()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        parts = families.mlm_head_parts(model, "full")
        last = len(out.hidden_states) - 1
        logits = parts.logits(out.hidden_states[last], is_last_layer=True)
    assert last == families.num_layers(model)
    torch.testing.assert_close(logits, out.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_truncated_model_computes_exactly_the_lower_hidden_states(name: str) -> None:
    model = tiny_model(name, num_layers=3)
    ids, mask = _inputs()
    with torch.no_grad():
        full = model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        with runners.truncated(model, 2):
            part = model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert families.num_layers(model) == 3
    assert len(part) == 3
    for a, b in zip(part[:2], full[:2]):
        torch.testing.assert_close(a, b)
    if families.family_for(model).final_norm_path is None:
        torch.testing.assert_close(part[2], full[2])


@pytest.mark.parametrize("name", ["bert", "roberta", "distilbert", "deberta-v2", "modernbert"])
def test_decoder_only_head_skips_the_transform(name: str) -> None:
    model = tiny_model(name)
    parts = families.mlm_head_parts(model, "decoder")
    h = torch.randn(4, families.family_for(model) and (model.config.dim if name == "distilbert" else 32))
    expected = h @ parts.weight.T + (parts.bias if parts.bias is not None else 0)
    torch.testing.assert_close(parts.logits(h, is_last_layer=True), expected)


@pytest.mark.parametrize("name", ["albert", "electra"])
def test_decoder_only_head_is_refused_when_decoder_reads_embedding_size(name: str) -> None:
    with pytest.raises(BertscopeError, match="decoder"):
        families.mlm_head_parts(tiny_model(name), "decoder")


def test_unsupported_model_type_names_the_supported_ones() -> None:
    import transformers

    config = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2)
    with pytest.raises(UnsupportedModelError, match="supported: .*bert"):
        families.family_for(config)


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_every_path_of_the_table_entry_resolves_on_the_familys_model(name: str) -> None:
    """A new entry with a wrong path fails here, naming the path, before any behaviour test runs."""
    model = tiny_model(name)
    family = families.family_for(model)
    base = model.base_model
    depth = families.num_layers(model)
    groups = int(getattr(model.config, family.groups_key, 0)) if family.shared_layers else depth
    assert len(families.get_layers(model)) == groups
    assert families.hidden_size(model) == 32
    for path in family.depth_paths:
        assert operator.attrgetter(path)(base) == depth, path
    for path in (family.embeddings_path, *([family.final_norm_path] if family.final_norm_path else [])):
        assert isinstance(base.get_submodule(path), torch.nn.Module), path
    heads = [k for k in model.state_dict() if k.startswith(family.head_prefixes)]
    assert heads, f"no state-dict key starts with {family.head_prefixes}"
    assert len(families.mlm_head_parts(model).weight) == model.config.vocab_size
    assert family.runner in runners.RUNNERS, f"{family.runner!r} is no runner of bertscope.models.runners"


def test_every_model_type_has_one_family_and_every_family_a_tiny_model() -> None:
    types = [t for family in families.FAMILIES for t in family.model_types]
    assert len(types) == len(set(types)) and sorted(types) == families.supported_model_types()
    untested = [f.name for f in families.FAMILIES if not set(f.model_types) & set(FAMILY_IDS)]
    assert not untested, f"add a tiny config to tests/conftest.py for {untested}"
