"""Chance and majority-class reference values, checked against scikit-learn on the local GLUE dev labels."""

from __future__ import annotations

import csv
from collections import Counter

import pytest
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bertscope.data import glue
from bertscope.data.baselines import (
    chance_baseline,
    describe,
    dev_provenances,
    majority_baseline,
    task_baseline,
)


def _dev_labels(glue_dir, folder, column):
    with open(glue_dir / folder / "dev.tsv", encoding="utf-8-sig", newline="") as handle:
        return [row[column] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]


def test_majority_baseline_of_rte_and_mrpc_matches_sklearn_on_the_dev_files(glue_dir):
    rte = _dev_labels(glue_dir, "RTE", "label")
    top, count = Counter(rte).most_common(1)[0]
    baseline = task_baseline("rte", data_dir=str(glue_dir))
    assert baseline.kind == "majority" and baseline.majority_label == top
    for key in ("final.score", "score", "final.validation.accuracy", "final.combined_score"):
        assert baseline.value(key) == pytest.approx(count / len(rte))
    mrpc = [int(v) for v in _dev_labels(glue_dir, "MRPC", "Quality")]
    majority = Counter(mrpc).most_common(1)[0][0]
    predicted = [majority] * len(mrpc)
    expected = {"f1": f1_score(mrpc, predicted), "accuracy": accuracy_score(mrpc, predicted)}
    b = task_baseline("mrpc", data_dir=str(glue_dir))
    assert b.value("final.validation.f1") == pytest.approx(expected["f1"])
    assert b.value("final.score") == pytest.approx((expected["f1"] + expected["accuracy"]) / 2)
    assert b.examples == (len(mrpc),) and str(glue_dir / "MRPC" / "dev.tsv") in b.detail()


def test_majority_of_a_seeded_subset_is_the_runs_subset(glue_dir):
    subset = glue.load_split("rte", "validation", data_dir=glue_dir, max_examples=16, seed=3)
    count = Counter(subset.labels).most_common(1)[0][1]
    from_provenance = task_baseline("rte", [subset.provenance()])
    from_options = task_baseline("rte", data_dir=str(glue_dir), max_eval=16, seed=3)
    assert from_provenance.value("score") == from_options.value("score") == pytest.approx(count / 16)
    assert from_provenance.examples == (16,)


def test_cola_majority_has_zero_matthews_correlation_like_sklearn():
    labels = [1, 1, 0, 1, 0, 1]
    b = majority_baseline("cola", {"validation": labels})
    assert b.value("matthews_correlation") == pytest.approx(matthews_corrcoef(labels, [1] * 6))
    assert b.value("final.validation.mcc") == b.value("final.validation.matthews") == b.value("score")


def test_uniform_chance_when_no_local_labels_and_none_for_regression(tmp_path):
    rte = task_baseline("rte")
    assert rte.kind == "chance" and rte.value("final.score") == pytest.approx(0.5)
    assert task_baseline("mnli").value("final.validation_mismatched.accuracy") == pytest.approx(1 / 3)
    assert chance_baseline("mrpc").value("score") is None  # F1 has no chance value without labels
    assert chance_baseline("cola").value("score") == 0.0
    assert task_baseline("stsb") is None and task_baseline("not-a-task") is None
    missing = task_baseline("rte", data_dir=str(tmp_path))
    assert missing.kind == "chance" and str(tmp_path) in describe([missing], "score")
    assert task_baseline("rte", [{"task": "rte", "split": "validation", "source": "hub:nyu-mll/glue/rte"}]).kind == \
        "chance"


def test_dev_provenances_are_found_in_finetune_study_and_cross_payloads():
    record = {"task": "rte", "split": "validation", "source": "/d/RTE/dev.tsv", "max_examples": None, "seed": 0}
    train = {**record, "split": "train"}
    finetune = {"config": {"task": "rte"}, "data": {"train": train, "eval": {"validation": record}}}
    study = {"runs": [{"result": finetune}, {"result": finetune}]}
    cross = {"runs": [{"data": {"eval": {"validation": record}}}]}
    for payload in (finetune, study, cross):
        found = dev_provenances(payload, "rte")
        assert found and all(p == record for p in found)
    assert dev_provenances(finetune, "mrpc") == []


def test_describe_names_kind_values_and_missing_ones(glue_dir):
    rte = _dev_labels(glue_dir, "RTE", "label")
    share = Counter(rte).most_common(1)[0][1] / len(rte)
    text = describe([task_baseline("rte", data_dir=str(glue_dir)), task_baseline("mrpc")], "final.score")
    assert text.startswith("Majority-class baseline") and f"RTE {share:.3f}" in text
    assert "No baseline value for MRPC" in text
