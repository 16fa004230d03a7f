"""The selecting head: dimension mask, seeded initialisation, save/load, and equality with
AutoModelForSequenceClassification."""

from __future__ import annotations

import pytest
import torch
import transformers

from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_dims, parse_hidden_states, parse_token
from bertscope.finetune.batching import Batch
from bertscope.finetune.head import HeadSpec, SelectingHead
from bertscope.finetune.representation import EncoderRepresentation
from bertscope.models import families
from conftest import tiny_config, tiny_model


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
    spec = HeadSpec(num_labels=2, hidden_size=32, layers=parse_hidden_states("-1", num_layers, keep_order=True), dims=parse_dims("all", 32),
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


def test_pooler_is_refused_cleanly_for_families_without_one() -> None:
    assert families.pooler_parts(tiny_model("distilbert", "base")) is None
    assert families.pooler_parts(tiny_model("albert", "base")) is not None
    assert isinstance(tiny_config("bert"), transformers.PretrainedConfig)


def test_a_truncated_head_file_is_one_line_naming_it(tmp_path):
    from bertscope.core.errors import BertscopeError

    head = SelectingHead(HeadSpec(num_labels=2, hidden_size=8, layers=(1,), dims=(0, 3)), seed=0)
    head.save(tmp_path)
    weights = tmp_path / "head.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(BertscopeError, match="head.safetensors") as info:
        SelectingHead.load(tmp_path)
    assert "\n" not in str(info.value)


# --- feature normalisation -----------------------------------------------------------------------------------------


def _norm_spec(feature_norm: str, **changes) -> HeadSpec:
    values = {"num_labels": 3, "hidden_size": 6, "layers": (1, 2), "dims": (4, 1, 5), "dropout": 0.0,
              "feature_norm": feature_norm, **changes}
    return HeadSpec(**values)


def test_standardize_buffers_normalise_the_selected_features() -> None:
    head = SelectingHead(_norm_spec("standardize"), seed=0).eval()
    assert head.feature_mean.shape == (6,) and head.feature_std.shape == (6,)
    vectors = torch.randn(5, 2, 6) * 7 + 3
    selected = vectors[:, :, [4, 1, 5]].flatten(1)
    torch.testing.assert_close(head.features(vectors), selected)  # identity until the statistics are set
    mean, std = torch.linspace(-2, 2, 6), torch.linspace(0.5, 3, 6)
    std[2] = 0.0  # a constant feature is only centred
    head.set_standardizer(mean, std)
    expected = (selected - mean) / torch.where(std > 0, std, torch.ones(6))
    torch.testing.assert_close(head.features(vectors), expected)
    with pytest.raises(ValueError, match="expected"):
        head.set_standardizer(torch.zeros(5), torch.ones(5))
    assert "feature_mean" not in SelectingHead(_norm_spec("none"), seed=0).state_dict()


def test_layernorm_matches_torch_layer_norm_without_affine() -> None:
    head = SelectingHead(_norm_spec("layernorm"), seed=0).eval()
    vectors = torch.randn(4, 2, 6) * 50
    selected = vectors[:, :, [4, 1, 5]].flatten(1)
    torch.testing.assert_close(head.features(vectors), torch.nn.functional.layer_norm(selected, (6,), eps=1e-5))
    assert not any("norm" in name for name, _ in head.named_parameters())  # no learned affine
    with pytest.raises(BertscopeError, match="single feature"):
        _norm_spec("layernorm", layers=(1,), dims=(3,))
    with pytest.raises(BertscopeError, match="feature normalisation"):
        _norm_spec("auto")  # a head holds the resolved choice


@pytest.mark.parametrize("feature_norm", ["standardize", "layernorm", "none"])
def test_feature_norm_round_trips_through_save_and_load(tmp_path, feature_norm: str) -> None:
    head = SelectingHead(_norm_spec(feature_norm, head="mlp2", head_hidden=4), seed=3).eval()
    if feature_norm == "standardize":
        head.set_standardizer(torch.randn(6), torch.rand(6) + 0.1)
    head.save(tmp_path / "h", seed=3)
    loaded = SelectingHead.load(tmp_path / "h").eval()
    assert loaded.spec == head.spec and loaded.spec.feature_norm == feature_norm
    vectors = torch.randn(4, 2, 6) * 10
    torch.testing.assert_close(loaded(vectors), head(vectors))


def test_a_head_saved_before_feature_norm_loads_as_a_plain_head(tmp_path) -> None:
    import json

    head = SelectingHead(_norm_spec("none"), seed=0)
    head.save(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "head_config.json").read_text())
    config.pop("feature_norm")
    (tmp_path / "old" / "head_config.json").write_text(json.dumps(config))
    assert SelectingHead.load(tmp_path / "old").spec.feature_norm == "none"
