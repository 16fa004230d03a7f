"""The attention implementation: chosen per family from the table, passed explicitly on every load, recorded in the
results, never part of a run's identity, and the fast paths (sdpa, packed rows, the one-position top layer) give the
plain eager path's numbers on every tiny family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from bertscope import api
from bertscope.core.errors import BertscopeError
from bertscope.finetune.config import FinetuneConfig
from bertscope.models import families, loading, packing, runners
from bertscope.models.options import ATTENTION_CHOICES
from conftest import (
    FAMILY_IDS,
    PINNED_SPEC_IDS,
    PINNED_STAGE_ID,
    PINNED_STUDY_RUN_ID,
    pinned_spec_ids,
    ragged_batch,
    tiny_config,
    tiny_model,
    user_error,
)

LENGTHS = [9, 3, 6, 1, 7]  # a padded batch of different lengths (one sentence of a single token)
WIDTH = 9
ATOL = 1e-5


def _ragged_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return ragged_batch(LENGTHS, WIDTH, seed, vocab=900)


def _family(name: str) -> families.Family:
    return families.family_for(tiny_config(name))


def _with_attention(model: torch.nn.Module, implementation: str) -> torch.nn.Module:
    """The same weights under another attention implementation (a deep copy: the original keeps its own)."""
    import copy

    other = copy.deepcopy(model)
    other.set_attn_implementation(implementation)
    assert families.attention_in_use(other) == implementation
    return other.eval()


class _CountSdpa:
    """Counts calls of torch's fused kernel, so a test can tell that the sdpa model really ran it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = torch.nn.functional.scaled_dot_product_attention

        def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)


# --- the table and the resolver ------------------------------------------------------------------------------------


def test_every_family_lists_implementations_bertscope_knows_and_the_option_offers_them() -> None:
    assert ("auto", *families.ATTENTION_IMPLEMENTATIONS) == ATTENTION_CHOICES
    for family in families.FAMILIES:
        assert family.attention, family.name
        assert set(family.attention) <= set(families.ATTENTION_IMPLEMENTATIONS), family.name
        assert len(set(family.attention)) == len(family.attention), family.name


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_the_table_says_what_transformers_accepts(name: str) -> None:
    """Each implementation a family lists loads with transformers (and runs it); each it leaves out, transformers
    refuses: the table is neither wrong nor needlessly cautious for this transformers version."""
    config = tiny_config(name, num_layers=1)
    family = families.family_for(config)
    for implementation in families.ATTENTION_IMPLEMENTATIONS:
        if implementation in family.attention:
            model = transformers.AutoModelForMaskedLM.from_config(config, attn_implementation=implementation)
            assert families.attention_in_use(model) == implementation
        else:
            with pytest.raises((ValueError, ImportError)):
                transformers.AutoModelForMaskedLM.from_config(config, attn_implementation=implementation)


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_auto_is_the_family_first_choice_and_an_explicit_one_is_itself(name: str) -> None:
    config = tiny_config(name, num_layers=1)
    family = families.family_for(config)
    expected = "sdpa" if "sdpa" in family.attention else "eager"
    assert families.attention_implementation(config, "auto") == expected
    assert families.attention_implementation(config.model_type) == expected  # a model_type string works too
    for implementation in family.attention:
        assert families.attention_implementation(config, implementation) == implementation
        assert families.attention_implementation(config, implementation.upper()) == implementation


def test_deberta_refuses_sdpa_in_one_line_naming_the_family_and_what_it_supports() -> None:
    config = tiny_config("deberta-v2", num_layers=1)
    assert families.attention_implementation(config) == "eager"
    with pytest.raises(BertscopeError) as caught:
        families.attention_implementation(config, "sdpa")
    message = str(caught.value)
    assert "\n" not in message and "deberta-v2" in message and "eager" in message and "'sdpa'" in message
    with pytest.raises(BertscopeError, match="flash_attention_2.*bert"):
        families.attention_implementation("bert", "flash_attention_2")  # not one bertscope has tested


def test_loading_passes_the_choice_and_refuses_before_reading_weights(tiny_checkpoint, tmp_path) -> None:
    bert = tiny_checkpoint("bert", 1)
    for requested, expected in (("auto", "sdpa"), ("sdpa", "sdpa"), ("eager", "eager")):
        loaded = loading.load_model(str(bert), "base", attention=requested)
        assert loaded.attention == expected == loaded.model.config._attn_implementation
    for requested, expected in (("auto", "sdpa"), ("eager", "eager")):
        assert loading.load_saved_architecture(str(bert), attention=requested).attention == expected
    assert loading.load_model(str(tiny_checkpoint("deberta-v2", 1))).attention == "eager"
    tiny_config("deberta-v2", num_layers=1).save_pretrained(tmp_path)  # a config and no weights at all
    with pytest.raises(BertscopeError, match="not available for deberta-v2"):
        loading.load_model(str(tmp_path), attention="sdpa")


def test_an_unknown_or_unsupported_attention_is_one_line(tiny_checkpoint, capsys) -> None:
    with pytest.raises(BertscopeError, match="'attention' must be one of auto, sdpa, eager; got 'flash'"):
        FinetuneConfig(task="rte", attention="flash")  # a sweep spec or the API (the CLI's argparse says the same)
    err = user_error(["reconstruct", "--model", str(tiny_checkpoint("deberta-v2", 1)), "--attention", "sdpa",
                      "--max-examples", "2", "--no-progress"], capsys)
    assert "deberta-v2" in err and "eager" in err


# --- the fast paths give the plain path's numbers --------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_sdpa_gives_the_eager_hidden_states_of_every_layer(name: str, one_thread, monkeypatch) -> None:
    """Same weights, a padded batch of different lengths: every hidden state 0..L at every real token agrees."""
    if "sdpa" not in _family(name).attention:
        pytest.skip(f"{name} runs eager only (the resolver test covers it)")
    fast = tiny_model(name)
    fast.set_attn_implementation("sdpa")
    plain = _with_attention(fast, "eager")
    ids, mask = _ragged_batch()
    counter = _CountSdpa(monkeypatch)
    with torch.no_grad():
        want = plain(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        assert counter.calls == 0  # eager never calls the fused kernel
        got = fast(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        assert counter.calls > 0  # ... and the sdpa model really did
    real = mask.bool()
    assert len(got.hidden_states) == len(want.hidden_states) == families.num_layers(fast) + 1
    for layer, (g, w) in enumerate(zip(got.hidden_states, want.hidden_states)):
        torch.testing.assert_close(g[real], w[real], rtol=1e-5, atol=ATOL, msg=f"{name} hidden state {layer}")
    torch.testing.assert_close(got.logits[real], want.logits[real], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_padding_is_masked_the_same_on_every_path(name: str, one_thread) -> None:
    """The plain path itself is a fair reference: each sentence of the padded batch, run alone without padding,
    gives the padded batch's last hidden state under every implementation the family lists."""
    model = tiny_model(name, num_layers=2)
    ids, mask = _ragged_batch(seed=1)
    for implementation in _family(name).attention:
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            batch = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            for row, n in enumerate(LENGTHS):
                alone = model.base_model(input_ids=ids[row:row + 1, :n]).last_hidden_state[0]
                torch.testing.assert_close(batch[row, :n], alone, rtol=1e-5, atol=ATOL,
                                           msg=f"{name} {implementation} row {row}")


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_packed_rows_give_the_padded_eager_hidden_states(name: str, one_thread) -> None:
    """runners.run_layers on packed rows (every implementation the family lists) equals the padded batch the
    eager model runs, at every layer."""
    model = tiny_model(name)
    if not packing.can_pack(model):
        pytest.skip(f"{name} layers read positions: never packed")
    plain = _with_attention(model, "eager")
    ids, mask = _ragged_batch(seed=2)
    real = mask.bool()
    depth = families.num_layers(model)
    with torch.no_grad():
        want = plain.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        layout = packing.layout_for(mask)
        assert layout.rows < len(LENGTHS)  # sequences really share rows
        for implementation in _family(name).attention:
            fast = _with_attention(model, implementation)
            packed = packing.pack(runners.embed(fast, ids, mask), mask, layout)
            states = runners.run_layers(fast, packed, None, range(depth), segments=layout.segments, all_states=True)
            assert len(states) == depth
            for layer, state in enumerate(states, start=1):
                got = packing.unpack(state if layer < depth else families.finalize_hidden(fast, state), layout)
                torch.testing.assert_close(got, want[layer][real], rtol=1e-5, atol=ATOL,
                                           msg=f"{name} {implementation} packed layer {layer}")


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_one_position_top_layer_equals_the_full_eager_layer(name: str, one_thread) -> None:
    """runners.layer_at_positions (its own sdpa call) equals the whole layer the eager model runs, at one real
    position per sentence, for every layer, whichever implementation the model was loaded with."""
    model = tiny_model(name)
    if not _family(name).bert_layer:
        assert runners.layer_at_positions(model, 0, torch.zeros(1, 2, 32), torch.ones(1, 2), torch.zeros(1)) is None
        return
    plain = _with_attention(model, "eager")
    ids, mask = _ragged_batch(seed=3)
    g = torch.Generator().manual_seed(3)
    positions = torch.tensor([int(torch.randint(0, n, (1,), generator=g)) for n in LENGTHS])
    rows = torch.arange(len(LENGTHS))
    with torch.no_grad():
        states = plain.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for implementation in _family(name).attention:
            fast = _with_attention(model, implementation)
            for layer in range(families.num_layers(model)):
                got = runners.layer_at_positions(fast, layer, states[layer], mask, positions)
                assert got is not None
                torch.testing.assert_close(got, states[layer + 1][rows, positions], rtol=1e-5, atol=ATOL,
                                           msg=f"{name} {implementation} layer {layer}")


# --- identity: a run-only option --------------------------------------------------------------------------------------


def test_attention_is_never_part_of_a_run_identity() -> None:
    checked = 0
    for info in api.COMMANDS.values():
        if "attention" not in info.config.field_names():
            continue
        values = {name: f"value-{name}" for name in info.config.field_names()}
        identities = [info.identity({**values, "attention": a}) for a in ATTENTION_CHOICES]
        assert "attention" not in identities[0], info.name
        assert all(i == identities[0] for i in identities), info.name
        checked += 1
    assert checked >= 9  # reconstruct, compare, layer-scan, finetune, predict and the four studies


def test_attention_moves_no_run_id(tmp_path) -> None:
    """The pinned ids (computed before the option existed) stay, whatever --attention says."""
    from bertscope.studies import cross
    from bertscope.studies.config import CrossConfig
    from bertscope.studies.store import finetune_run_id

    def ids(extra: dict[str, Any]) -> list[str]:
        return pinned_spec_ids(tmp_path, extra)

    before = PINNED_SPEC_IDS
    for attention in ATTENTION_CHOICES:
        assert ids({"attention": attention}) == before, attention
        config = FinetuneConfig(task="rte", max_train=64, attention=attention)
        assert finetune_run_id(config) == PINNED_STUDY_RUN_ID
        stage = cross._stage_id(CrossConfig(tasks="rte,mrpc", epochs=1, out="o", attention=attention), 1)
        assert stage == PINNED_STAGE_ID


# --- recorded in the results ------------------------------------------------------------------------------------------


def _sst2(root: Path) -> Path:
    """A tiny SST-2 folder in the GLUE tsv layout (no network, no shared copy needed)."""
    words = ["good", "bad", "fine", "awful", "great", "poor", "nice", "dull"]
    (root / "SST-2").mkdir(parents=True)
    for split, n in (("train", 24), ("dev", 12)):
        rows = [f"a {words[i % 8]} film number {i} .\t{int(words[i % 8] in ('good', 'fine', 'great', 'nice'))}\n"
                for i in range(n)]
        (root / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(rows), encoding="utf-8")
    return root


def test_fine_tuning_records_the_attention_and_gives_the_same_numbers(tmp_path, tiny_checkpoint, one_thread) -> None:
    """A frozen encoder (no dropout, so both runs draw the same random numbers) read by an sgd head: the eager run
    and the sdpa run record what they used and agree on every loss and every prediction."""
    data = _sst2(tmp_path / "glue")
    options = {"model": str(tiny_checkpoint("bert", 2)), "task": "sst2", "data_dir": str(data), "epochs": 2,
               "batch_size": 8, "max_length": 24, "freeze": "encoder", "fit": "sgd", "feature_norm": "none",
               "head_lr": 1e-2, "progress": False}
    runs = {a: api.finetune(**options, attention=a, out=str(tmp_path / a), save_model=a == "eager")
            for a in ("auto", "eager")}
    assert runs["auto"].timing["attention"] == "sdpa" and runs["eager"].timing["attention"] == "eager"
    saved = json.loads((tmp_path / "eager" / "results.json").read_text(encoding="utf-8"))
    assert saved["timing"]["attention"] == "eager" and saved["config"]["attention"] == "eager"
    losses = {a: [e["train_loss"] for e in r.epochs] for a, r in runs.items()}
    assert losses["auto"] == pytest.approx(losses["eager"], rel=1e-5)
    assert runs["auto"].final == runs["eager"].final
    assert runs["auto"].predictions == runs["eager"].predictions  # every dev prediction

    texts = tmp_path / "texts.txt"
    texts.write_text("a good film .\na dull film .\n", encoding="utf-8")
    for attention, expected in (("auto", "sdpa"), ("eager", "eager")):
        predicted = api.predict(model=str(tmp_path / "eager" / "model"), texts=str(texts), attention=attention,
                                progress=False)
        assert predicted.environment["attention"] == expected


def test_the_lens_commands_record_the_attention(tiny_checkpoint, one_thread) -> None:
    folder = str(tiny_checkpoint("bert", 2))
    common = {"model": folder, "max_examples": 4, "max_length": 24, "head": "pretrained", "progress": False}
    for attention, expected in (("auto", "sdpa"), ("eager", "eager")):
        lens = api.reconstruct(**common, attention=attention, examples=0, token_view=0)
        assert lens.model["attention"] == expected
        scan = api.layer_scan(**common, attention=attention, layers="0")
        assert scan.environment["attention"] == expected
        compared = api.compare(**common, variant=folder, attention=attention, curves=False)
        assert compared.environment["attention"] == {"original": expected, "variant": expected}
        assert compared.agreement.top1_agreement == 1.0  # the model against itself
    deberta = str(tiny_checkpoint("deberta-v2", 2))
    assert api.reconstruct(**{**common, "model": deberta}, examples=0, token_view=0).model["attention"] == "eager"
