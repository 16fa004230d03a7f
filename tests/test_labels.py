"""Human names of metric keys (both the old bertscope and the ``evaluate`` spellings), axes, tasks and models."""

from __future__ import annotations

import pytest

from bertscope.data import glue
from bertscope.data.labels import (
    METRIC_NAMES,
    axis_name,
    canonical_metric,
    metric_name,
    model_name,
    task_name,
    texts_name,
)
from bertscope.models import loading


@pytest.mark.parametrize("key, name", [
    ("final.score", "dev GLUE score"), ("score", "GLUE score"), ("final.combined_score", "dev GLUE score"),
    ("final.validation.accuracy", "dev accuracy"), ("final.accuracy", "dev accuracy"),
    ("final.validation_matched.accuracy", "dev-matched accuracy"), ("test.score", "test GLUE score"),
    ("final.validation.mcc", "dev Matthews correlation"), ("final.validation.matthews", "dev Matthews correlation"),
    ("final.validation.matthews_correlation", "dev Matthews correlation"),
    ("final.validation.spearman", "dev Spearman correlation"), ("final.validation.spearmanr", "dev Spearman correlation"),
    ("layer 4.score", "GLUE score (layer 4)"), ("top1_agreement", "top-1 agreement with the original"),
])
def test_metric_names(key, name):
    assert metric_name(key) == name


def test_unknown_keys_and_non_glue_scores_stay_as_they_are():
    assert metric_name("train.examples_per_second") == "training examples per second"
    assert metric_name("offset") == "offset" and metric_name("my.custom") == "my.custom"
    assert metric_name("score", glue=False) == "score" and metric_name("top1") == "top1"  # the lens names its own
    names = {"top1": "top-1 reconstruction"}  # a floor above brings its names (the lens's declarations)
    assert metric_name("top1", glue=False, names=names) == "top-1 reconstruction"
    assert metric_name("final.top1", names=names) == "dev top-1 reconstruction"


def test_every_official_glue_metric_has_a_name_under_both_spellings():
    for info in glue.TASKS.values():
        for metric in (*info.metrics, "score"):
            assert metric in METRIC_NAMES and canonical_metric(metric) in METRIC_NAMES
            assert metric_name(canonical_metric(metric)) == metric_name(metric)
    assert {canonical_metric(m) for m in ("mcc", "matthews", "matthews_correlation")} == {"matthews_correlation"}
    assert canonical_metric("spearman") == canonical_metric("spearmanr") == "spearmanr"
    assert canonical_metric("combined_score") == canonical_metric("score") == "combined_score"


def test_axes_tasks_models_and_texts():
    assert axis_name("layer") == "layer read (0 = embeddings)" and axis_name("nope") == "nope"
    assert [task_name(t) for t in ("rte", "sst2", "SST-2", "cola", "none")] == ["RTE", "SST-2", "SST-2", "CoLA", "none"]
    default = model_name(None)
    assert default == model_name(loading.DEFAULT_MODEL_NAME) and "MiniLM" in default
    assert model_name("bert-base-uncased") == "bert-base-uncased"
    assert model_name("/tmp/runs/abc/model") == "abc/model"
    assert texts_name({"kind": "glue", "task": "rte", "split": "validation", "num_sentences": 10}) == \
        "RTE dev sentences (n = 10)"
    assert texts_name({"kind": "file", "file": "/x/notes.txt", "num_sentences": 3}) == "sentences of notes.txt (n = 3)"
    assert texts_name({"kind": "builtin"}) == "the built-in English sample"
