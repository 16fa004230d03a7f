"""The one fine-tuning pipeline: prepare -> train -> result, whatever pieces the caller hands in."""

from __future__ import annotations

import pytest
import torch

from bertscope.finetune import pipeline
from bertscope.finetune.config import FinetuneConfig
from bertscope.finetune.pipeline import (
    Shared,
    compute_features,
    head_learning_rate,
    load_task_data,
    prepare,
)
from bertscope.models import loading
from conftest import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def options(glue_dir, tiny_checkpoint, tmp_path):
    return dict(task="rte", model=str(tiny_checkpoint("bert", 3)), data_dir=str(glue_dir), max_train=24, max_eval=12,
                epochs=2, batch_size=8, max_length=40, lr=1e-3, progress=False, cache_dir=str(tmp_path / "cache"))


def _numbers(result):
    return [e["train_loss"] for e in result.epochs], result.final, result.predictions


def test_head_learning_rate_one_rule():
    config = FinetuneConfig(task="rte", lr=3e-5)
    assert head_learning_rate(config, encoder_fully_frozen=False) == 3e-5
    assert head_learning_rate(config, encoder_fully_frozen=True) == 1e-3
    assert head_learning_rate(config.replace(head_lr=0.2), encoder_fully_frozen=True) == 0.2


def test_a_regression_head_starts_at_the_training_labels_mean(options):
    """STS-B's head starts as the constant predictor (bias = the training scores' mean), so training fits the
    similarity, not the scale; a classifier's bias starts at zero, as BERT's initialiser has it."""
    stsb = prepare(FinetuneConfig(**{**options, "task": "stsb"}))
    scores = [float(v) for v in stsb.data.train_data.labels]
    assert 1.0 < sum(scores) / len(scores) < 4.0  # a real STS-B mean, not a zero
    assert stsb.trained_head.classifier.bias.item() == pytest.approx(sum(scores) / len(scores), rel=1e-6)
    rte = prepare(FinetuneConfig(**options))
    assert torch.count_nonzero(rte.trained_head.classifier.bias) == 0
    # before any step the regression head's training loss is about the label variance, not mean^2 + variance
    first = stsb.result(stsb.train()).epochs[0]
    variance = sum((v - sum(scores) / len(scores)) ** 2 for v in scores) / len(scores)
    assert first["train_loss"] < 2 * variance


def test_pieces_handed_in_give_the_numbers_of_pieces_loaded_here(options, tmp_path, bert_tokenizer):
    """A study or cross hands in its tokenizer, data and model: the run must not notice (same seed order). The
    checkpoint holds every weight of the base model, so loading it draws nothing from the global RNG (a checkpoint
    without a pooler would: see the pipeline's module docstring)."""
    folder = tmp_path / "base"
    tiny_model("bert", "base", num_layers=3).save_pretrained(folder)
    bert_tokenizer.save_pretrained(folder)
    config = FinetuneConfig(**{**options, "model": str(folder)}, layer="2", token="mean", dims="random:5")
    alone = prepare(config)
    alone_result = alone.result(alone.train())
    tokenizer = loading.load_tokenizer(config.encoder.model)
    data = load_task_data(config, tokenizer)
    loaded = loading.load_model(config.encoder.model, "base", dtype="float32")
    torch.manual_seed(12345)  # whatever the global RNG did before: prepare seeds first
    shared = prepare(config, Shared(tokenizer=tokenizer, loaded=loaded, data=data))
    shared_result = shared.result(shared.train())
    assert _numbers(shared_result) == _numbers(alone_result)
    assert shared.model is loaded.model  # trained in place: cross carries it to the next stage


def test_cached_and_live_frozen_runs_record_the_same_selection(options):
    frozen = FinetuneConfig(**options, freeze="encoder", layer="1", token="cls")
    live = prepare(frozen)
    live_result = live.result(live.train())
    cached = prepare(frozen.replace(cache_features=True))
    cached_result = cached.result(cached.train())
    assert cached.cached and not live.cached
    for (a, b) in zip(_numbers(live_result)[0], _numbers(cached_result)[0]):
        assert a == pytest.approx(b, rel=1e-5)
    assert live_result.final["validation"] == pytest.approx(cached_result.final["validation"])
    assert live_result.selection.keys() == cached_result.selection.keys()
    assert live_result.selection["layers_computed"] == cached_result.selection["layers_computed"] == 1
    assert live_result.head["head_lr"] == cached_result.head["head_lr"] == 1e-3
    assert cached_result.features is not None and set(cached_result.features["splits"]) == {"train", "validation"}


def test_shared_feature_sets_are_used_not_recomputed(options, monkeypatch):
    config = FinetuneConfig(**options, freeze="encoder", cache_features=True, token="max-norm")
    tokenizer = loading.load_tokenizer(config.encoder.model)
    data = load_task_data(config, tokenizer)
    loaded = loading.load_model(config.encoder.model, "base", dtype="float32")
    features = compute_features(config, loaded.model, data, source=loaded.source)
    monkeypatch.setattr(pipeline, "compute_features", lambda *a, **k: pytest.fail("features computed again"))
    run = prepare(config, Shared(tokenizer=tokenizer, loaded=loaded, data=data, features=features,
                                 feature_root="shared"))
    assert run.result(run.train()).features["root"] == "shared"


def test_prepare_refuses_data_of_another_task(options):
    config = FinetuneConfig(**options)
    data = load_task_data(config, loading.load_tokenizer(config.encoder.model))
    with pytest.raises(ValueError, match="data of rte"):
        prepare(config.replace(task="mrpc"), Shared(data=data))
