"""The feature cache: stored vectors equal the live path's, the cache is keyed and reused, and the cached fast path
of ``finetune`` gives the same numbers as the uncached one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertscope import api
from bertscope.core.errors import BertscopeError
from bertscope.core.options import canonical_token, parse_token
from bertscope.data import glue
from bertscope.finetune import features
from bertscope.finetune.batching import collate, encode_split
from bertscope.finetune.features import FeatureStore
from bertscope.finetune.representation import EncoderRepresentation
from bertscope.finetune.selection import select_tokens
from conftest import FAMILY_IDS, tiny_model

TOKENS = ["cls", "max-norm", "mean", "max", "index:2", "index:-1"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one thread


@pytest.fixture(scope="module")
def rte_split(glue_dir):
    return glue.load_split("rte", "validation", glue_dir, max_examples=10, seed=1)


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_cached_vectors_equal_the_live_representation(family, bert_tokenizer, rte_split, tmp_path):
    """Every (token, layer) vector in the cache equals what the live (truncated, frozen) encoder path selects."""
    model = tiny_model(family, kind="base", num_layers=3)
    data = encode_split(bert_tokenizer, rte_split, 48)
    store = FeatureStore(tmp_path)
    feats = store.get(model, data, TOKENS, batch_size=4)
    assert set(TOKENS) <= set(feats.computed) and len(feats) == len(data)
    batch = collate(data, list(range(len(data))), regression=False)
    for token in TOKENS:
        for layer in range(4):
            if family == "modernbert" and layer == 0:
                continue  # HF ModernBERT truncated to depth 0 returns no hidden states: the live path cannot read 0
            live = EncoderRepresentation(model, [layer], parse_token(token), frozen=True)(batch)
            cached = feats.select(token, [layer])
            torch.testing.assert_close(cached, live.float(), atol=2e-5, rtol=1e-4, msg=f"{family} {token} {layer}")


def test_vectors_match_the_hf_model_run_one_example_at_a_time(bert_tokenizer, rte_split, tmp_path):
    """Independent reference: the HF model's own hidden states of each example alone (no padding at all)."""
    model = tiny_model("bert", kind="base", num_layers=3)
    data = encode_split(bert_tokenizer, rte_split, 48)
    feats = FeatureStore(tmp_path).get(model, data, ["cls", "mean", "max-norm", "max"], batch_size=5)
    for i in range(len(data)):
        ids = torch.tensor([data.input_ids[i]])
        with torch.no_grad():
            states = model(input_ids=ids, token_type_ids=torch.tensor([data.token_type_ids[i]]),
                           output_hidden_states=True).hidden_states
        special = torch.tensor(data.special_masks[i], dtype=torch.bool)
        for layer, hidden in enumerate(states):
            h = hidden[0]
            words = h[~special]
            expected = {"cls": h[0], "mean": words.mean(0), "max": words.max(0).values,
                        "max-norm": words[words.norm(dim=-1).argmax()]}
            for token, vector in expected.items():
                np.testing.assert_allclose(feats.arrays[token][i, layer], vector.numpy(), atol=2e-5, rtol=1e-4)


def test_cache_is_keyed_reused_and_extended(bert_tokenizer, rte_split, tmp_path, monkeypatch):
    model = tiny_model("bert", kind="base", num_layers=2)
    data = encode_split(bert_tokenizer, rte_split, 48)
    store = FeatureStore(tmp_path)
    first = store.get(model, data, ["cls", "mean"])
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert set(manifest["tokens"]) == {"cls", "mean"} and manifest["num_examples"] == len(data)
    assert first.arrays["cls"].shape == (len(data), 3, 32)

    calls = []
    real = features._compute
    monkeypatch.setattr(features, "_compute", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    again = FeatureStore(tmp_path).get(model, data, ["mean", "cls"])
    assert calls == [] and again.encoder_examples == 0 and set(again.reused) == {"cls", "mean"}
    assert isinstance(again.arrays["cls"], np.memmap)
    np.testing.assert_array_equal(again.arrays["mean"], first.arrays["mean"])

    more = FeatureStore(tmp_path).get(model, data, ["cls", "index:-1"])  # only the new strategy is computed
    assert calls == [["index:-1"]] and more.computed == ("index:-1",)
    assert set(json.loads((first.path / "manifest.json").read_text())["tokens"]) == {"cls", "mean", "index:-1"}

    # Anything that changes the vectors changes the key: pooling candidates, the data, the weights.
    other = {store.key(model, data, include_special=True, dtype="float32"),
             store.key(model, encode_split(bert_tokenizer, rte_split, 16), include_special=False, dtype="float32"),
             FeatureStore(tmp_path).key(tiny_model("bert", kind="base", num_layers=2, seed=1), data,
                                        include_special=False, dtype="float32")}
    assert first.key not in other and len(other) == 3


def test_damaged_entry_is_recomputed(bert_tokenizer, rte_split, tmp_path):
    model = tiny_model("bert", kind="base", num_layers=2)
    data = encode_split(bert_tokenizer, rte_split, 48)
    first = FeatureStore(tmp_path).get(model, data, ["cls"])
    reference = np.array(first.arrays["cls"])
    path = first.path / "cls.npy"
    del first
    path.write_bytes(path.read_bytes()[:100])  # a truncated file, e.g. a full disk
    again = FeatureStore(tmp_path).get(model, data, ["cls"])
    assert again.computed == ("cls",)
    np.testing.assert_allclose(again.arrays["cls"], reference, atol=1e-6)
    del again
    third = FeatureStore(tmp_path).get(model, data, ["cls"])  # the recomputed file replaced the damaged one
    assert third.computed == () and third.reused == ("cls",)


@pytest.mark.parametrize("change", ["altered value", "nan", "no checksum", "manifest a list"])
def test_altered_cache_contents_behind_a_valid_header_are_recomputed(change, bert_tokenizer, rte_split, tmp_path):
    """The manifest records each file's SHA-256: a changed value (valid .npy header), a NaN, an entry without a
    checksum or a manifest of another shape is never reused; the vectors are computed again."""
    model = tiny_model("bert", kind="base", num_layers=2)
    data = encode_split(bert_tokenizer, rte_split, 48)
    first = FeatureStore(tmp_path).get(model, data, ["cls"])
    reference = np.array(first.arrays["cls"])
    assert first.manifest["tokens"]["cls"]["sha256"]
    path, manifest_path = first.path / "cls.npy", first.path / "manifest.json"
    del first
    if change in ("altered value", "nan"):
        array = np.load(path)
        array[0, 0, 0] = np.nan if change == "nan" else array[0, 0, 0] + 1.0
        np.save(path, array)
    else:
        manifest = json.loads(manifest_path.read_text())
        del manifest["tokens"]["cls"]["sha256"]
        manifest_path.write_text(json.dumps([manifest] if change == "manifest a list" else manifest))
    again = FeatureStore(tmp_path).get(model, data, ["cls"])
    assert again.computed == ("cls",)
    np.testing.assert_allclose(again.arrays["cls"], reference, atol=1e-6)


def test_temp_files_of_crashed_runs_are_removed_and_live_ones_kept(bert_tokenizer, rte_split, tmp_path):
    """A run SIGKILLed while writing leaves ``.NAME.tmp-OWNER-TAG`` files (a big split: gigabytes); the next run
    that opens the cache removes those whose owner is gone, in every entry, and leaves a live run's alone."""
    import subprocess

    from bertscope.core import publish

    child = subprocess.Popen(["true"])
    child.wait()
    host = publish.owner().rsplit("-", 2)[0]
    other = tmp_path / ("f" * 32)  # another entry, e.g. of a model this run does not use
    other.mkdir()
    crashed = [other / f".cls.npy.tmp-{host}-{child.pid}-0-0badf00d",
               other / f".mean.npy.tmp-{host}-{child.pid}-0-0badf00e"]
    live = publish.temp_path(other / "max.npy")
    for path in (*crashed, live):
        path.write_bytes(b"\0" * 1024)
    model = tiny_model("bert", kind="base", num_layers=2)
    feats = FeatureStore(tmp_path).get(model, encode_split(bert_tokenizer, rte_split, 48), ["cls"])
    assert [p.name for p in other.iterdir()] == [live.name]
    assert not [p for p in feats.path.iterdir() if ".tmp-" in p.name]


def test_select_errors_and_names(bert_tokenizer, rte_split, tmp_path):
    model = tiny_model("bert", kind="base", num_layers=2)
    feats = FeatureStore(tmp_path).get(model, encode_split(bert_tokenizer, rte_split, 48), ["cls"])
    with pytest.raises(BertscopeError, match="no token strategy"):
        feats.select("mean", [1])
    with pytest.raises(BertscopeError, match="out of range"):
        feats.select("cls", [3])
    assert canonical_token("MaxNorm") == "max-norm" and canonical_token("index:-1") == "index:-1"
    with pytest.raises(BertscopeError):
        canonical_token("middle")


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path))
    assert features.cache_root() == tmp_path / "features"
    assert features.cache_root(tmp_path / "x") == tmp_path / "x"


def test_uncached_store_writes_nothing(bert_tokenizer, rte_split, tmp_path):
    model = tiny_model("bert", kind="base", num_layers=2)
    feats = FeatureStore(tmp_path, use_cache=False).get(model, encode_split(bert_tokenizer, rte_split, 48), ["cls"])
    assert feats.path is None and not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------- finetune's fast path


FAST = dict(max_train=48, max_eval=24, epochs=2, max_length=48, batch_size=8, progress=False, freeze="encoder")


@pytest.mark.parametrize("family,options", [
    ("bert", dict(task="rte", token="mean", layer="2", dims="random:20", head="mlp2", dropout=0.2)),
    ("roberta", dict(task="stsb", token="max-norm", layer="1,-1", dims="all", head="linear", pooler=True)),
    ("modernbert", dict(task="mrpc", token="index:-1", layer="1", dims="first:8", head="linear")),
    pytest.param(None, dict(task="cola", token="cls", layer="4", dims="random:3", head="mlp2"), marks=pytest.mark.slow),
])
def test_cached_finetune_equals_uncached(family, options, glue_dir, tiny_checkpoint, tmp_path, monkeypatch):
    """Same seed -> same losses, metrics and predictions, whether the encoder runs or the cache is read."""
    model = None if family is None else str(tiny_checkpoint(family, 3))  # None: the embedded default
    kw = {**FAST, **options, "data_dir": str(glue_dir), "model": model}
    live = api.finetune(**kw)
    cached = api.finetune(**kw, cache_features=True, cache_dir=str(tmp_path))
    assert live.features is None and cached.features["splits"]["train"]["computed"]
    np.testing.assert_allclose([e["train_loss"] for e in cached.epochs], [e["train_loss"] for e in live.epochs],
                               rtol=1e-5, atol=1e-6)
    for split, preds in live.predictions.items():
        np.testing.assert_allclose(cached.predictions[split], preds, rtol=1e-4, atol=1e-5)
    for split, values in live.final.items():
        for name, value in values.items():
            assert cached.final[split][name] == pytest.approx(value, abs=1e-4)

    # A second run reads the cache: no encoder forward at all.
    def no_forward(*args, **kwargs):
        raise AssertionError("the encoder ran although the features are cached")

    monkeypatch.setattr(features, "_compute", no_forward)
    again = api.finetune(**kw, cache_features=True, cache_dir=str(tmp_path))
    assert again.features["splits"]["train"]["computed"] == [] and again.predictions == cached.predictions


def test_cache_features_needs_a_frozen_encoder(glue_dir):
    with pytest.raises(BertscopeError, match="freeze encoder"):
        api.finetune(task="rte", cache_features=True, data_dir=str(glue_dir))
    with pytest.raises(BertscopeError, match="fully frozen"):
        api.finetune(task="rte", cache_features=True, freeze="layers:0-2", max_train=8, max_eval=8, epochs=1,
                     progress=False, data_dir=str(glue_dir))


def test_select_tokens_reference_is_pure():
    """Guard for the cache's assumption: selection depends only on hidden states and masks."""
    hidden = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    special = torch.tensor([[1, 0, 1, 0, 0], [1, 0, 0, 0, 1]])
    first = select_tokens(hidden, mask, special, "mean")
    torch.testing.assert_close(select_tokens(hidden.clone(), mask, special, "mean"), first)
    torch.testing.assert_close(first[0], hidden[0, 1])
