"""GLUE task table, tsv reading (real local copy + crafted malformed files), metrics against scikit-learn/scipy."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bertscope.core.errors import BertscopeError, DataError, HubUnreachableError
from bertscope.data import glue

# Row counts published in the local copy's README (independent of our reader).
EXPECTED_ROWS = {("cola", "train"): 8551, ("cola", "validation"): 1043, ("sst2", "validation"): 872,
                 ("mrpc", "train"): 3668, ("mrpc", "validation"): 408, ("stsb", "validation"): 1500,
                 ("rte", "validation"): 277, ("wnli", "train"): 635, ("qnli", "validation"): 5463,
                 ("rte", "test"): 3000}


def test_task_table_covers_all_nine_tasks() -> None:
    assert set(glue.TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    assert glue.get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert glue.get_task("stsb").is_regression and glue.get_task("stsb").num_labels == 1
    assert glue.get_task("mnli").num_labels == 3


@pytest.mark.parametrize("alias,name", [("sst2", "sst2"), ("SST-2", "sst2"), ("sst-2", "sst2"), ("STS-B", "stsb"),
                                        ("CoLA", "cola"), ("MNLI", "mnli"), ("qnli", "qnli")])
def test_task_aliases(alias: str, name: str) -> None:
    assert glue.get_task(alias).name == name


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(BertscopeError, match="known tasks: cola, sst2"):
        glue.get_task("squad")


def test_split_aliases() -> None:
    assert glue.get_task("sst2").resolve_split("dev") == "validation"
    mnli = glue.get_task("mnli")
    assert mnli.resolve_split("dev") == "validation_matched"
    assert mnli.resolve_split("dev_mismatched") == "validation_mismatched"
    assert mnli.resolve_split("mismatched") == "validation_mismatched"
    with pytest.raises(BertscopeError, match="splits"):
        glue.get_task("rte").resolve_split("validation_matched")


def _csv_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.mark.parametrize("task,split", sorted(EXPECTED_ROWS))
def test_local_copy_row_counts(real_glue_dir: Path, task: str, split: str) -> None:
    data = glue.load_split(task, split, real_glue_dir)
    assert len(data) == EXPECTED_ROWS[(task, split)] == data.num_available
    assert data.is_labelled == (split != "test")


def test_synthetic_files_are_what_their_script_writes(glue_dir: Path, tmp_path: Path) -> None:
    """tests/data/glue is made by tests/data/make_glue.py (no GLUE row): the files and the script stay equal."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_glue", glue_dir.parent / "make_glue.py")
    assert spec is not None and spec.loader is not None
    make_glue = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_glue)
    make_glue.main(tmp_path)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.tsv"))
    assert written == sorted(p.relative_to(glue_dir) for p in glue_dir.rglob("*.tsv")) and written
    for name in written:
        assert (tmp_path / name).read_bytes() == (glue_dir / name).read_bytes(), name


def test_local_fields_labels_and_bom(glue_dir: Path) -> None:
    cola = glue.load_split("cola", "dev", glue_dir)
    first = _csv_rows(glue_dir / "CoLA/dev.tsv")[0]  # no header in CoLA
    assert cola.examples[0].texts == (first[3],) and cola.examples[0].label == int(first[1])
    mrpc = glue.load_split("mrpc", "train", glue_dir)
    row = _csv_rows(glue_dir / "MRPC/train.tsv")[1]
    assert mrpc.examples[0].texts == (row[3], row[4]) and mrpc.examples[0].label == int(row[0])
    rte = glue.load_split("rte", "validation", glue_dir)
    assert {ex.label for ex in rte.examples} == {0, 1}
    assert rte.examples[0].label == glue.get_task("rte").tsv_labels.index(_csv_rows(glue_dir / "RTE/dev.tsv")[1][3])
    stsb = glue.load_split("stsb", "dev", glue_dir)
    assert all(isinstance(ex.label, float) and 0 <= ex.label <= 5 for ex in stsb.examples)
    # QNLI sentences with unbalanced quotes must not swallow following lines (QUOTE_NONE).
    qnli = glue.load_split("qnli", "validation", glue_dir)
    assert max(len(t) for ex in qnli.examples for t in ex.texts) < 5000


def test_seeded_subsets_are_reproducible_subsets(glue_dir: Path) -> None:
    full = glue.load_split("sst2", "validation", glue_dir)
    a = glue.load_split("sst2", "validation", glue_dir, max_examples=50, seed=1)
    b = glue.load_split("sst2", "validation", glue_dir, max_examples=50, seed=1)
    c = glue.load_split("sst2", "validation", glue_dir, max_examples=50, seed=2)
    assert a.examples == b.examples and a.examples != c.examples and len(a) == 50
    assert set(a.examples) <= set(full.examples)
    assert [ex.idx for ex in a.examples] == sorted(ex.idx for ex in a.examples)


def test_task_folder_spellings_and_missing_files(tmp_path: Path, glue_dir: Path) -> None:
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "dev.tsv").write_text("sentence\tlabel\ngood .\t1\nbad .\t0\n", encoding="utf-8")
    assert len(glue.load_split("SST-2", "dev", tmp_path)) == 2
    assert len(glue.load_split("sst2", "dev", tmp_path / "sst2")) == 2  # the task folder itself
    with pytest.raises(DataError, match=r"QNLI/train\.tsv not found"):
        glue.load_split("qnli", "train", glue_dir)
    with pytest.raises(DataError, match="does not exist"):
        glue.load_split("rte", "train", tmp_path / "nope")


@pytest.mark.parametrize("content,problem", [
    ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n", "expected 4 tab-separated fields, got 3"),
    ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tmaybe\n", "label 'maybe'"),
    ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\nx\ta\tb\tentailment\n", "index 'x'"),
])
def test_malformed_rows_name_file_and_line(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "RTE").mkdir()
    path = tmp_path / "RTE" / "train.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=f"train.tsv:3: malformed row: {problem}"):
        glue.load_split("rte", "train", tmp_path)
    kept = glue.load_split("rte", "train", tmp_path, bad_rows="skip")
    assert len(kept) == 1 and len(kept.skipped) == 1 and ":3:" in kept.skipped[0]


def test_missing_header_column_and_bad_number(tmp_path: Path) -> None:
    (tmp_path / "STS-B").mkdir()
    (tmp_path / "STS-B" / "dev.tsv").write_text("index\tsentence1\tscore\n0\ta\t1.0\n", encoding="utf-8")
    with pytest.raises(DataError, match="lacks column 'sentence2'"):
        glue.load_split("stsb", "dev", tmp_path)
    (tmp_path / "STS-B" / "dev.tsv").write_text("index\tsentence1\tsentence2\tscore\n0\ta\tb\tfive\n",
                                                encoding="utf-8")
    with pytest.raises(DataError, match="dev.tsv:2: .*not a number"):
        glue.load_split("stsb", "dev", tmp_path)



@pytest.mark.parametrize("score", ["-0.5", "5.2", "7", "inf"])
def test_stsb_scores_outside_0_to_5_are_malformed_rows(tmp_path: Path, score: str, capsys) -> None:
    from bertscope.cli import main

    (tmp_path / "STS-B").mkdir()
    rows = ["index\tsentence1\tsentence2\tscore", "0\ta\tb\t0", "1\ta\tb\t5.000", f"2\ta\tb\t{score}"]
    for split in ("train", "dev"):
        (tmp_path / "STS-B" / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"train.tsv:4: malformed row: label '{score}' is not a number in 0..5"):
        glue.load_split("stsb", "train", tmp_path)
    kept = glue.load_split("stsb", "train", tmp_path, bad_rows="skip")
    assert kept.labels == [0.0, 5.0] and len(kept.skipped) == 1  # the range's ends are valid scores
    capsys.readouterr()
    assert main(["finetune", "--task", "stsb", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a number in 0..5" in err and "--bad-rows skip" in err


def test_hub_unreachable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    import huggingface_hub.constants

    monkeypatch.delenv("BERTSCOPE_GLUE_DIR", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnreachableError, match="--data-dir"):
        glue.load_split("rte", "validation")


# ----------------------------------------------------------------------------------------------- metrics


def _random_case(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    preds = np.where(rng.random(n) < 0.7, labels, 1 - labels)
    return preds, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_equal_sklearn(seed: int) -> None:
    preds, labels = _random_case(seed)
    cola = glue.compute_metrics("cola", preds.tolist(), labels.tolist())
    assert cola["matthews_correlation"] == pytest.approx(matthews_corrcoef(labels, preds))
    assert cola["combined_score"] == cola["matthews_correlation"]
    mrpc = glue.compute_metrics("mrpc", preds.tolist(), labels.tolist())
    assert mrpc["f1"] == pytest.approx(f1_score(labels, preds))
    assert mrpc["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert mrpc["combined_score"] == pytest.approx((mrpc["f1"] + mrpc["accuracy"]) / 2)
    rng = np.random.default_rng(seed)
    y3, p3 = rng.integers(0, 3, 100), rng.integers(0, 3, 100)
    assert glue.compute_metrics("mnli", p3, y3)["accuracy"] == pytest.approx(accuracy_score(y3, p3))


@pytest.mark.parametrize("seed", [0, 1])
def test_regression_metrics_equal_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.uniform(0, 5, 300)
    preds = labels + rng.normal(0, 1.5, 300)
    got = glue.compute_metrics("stsb", preds, labels)
    assert got["pearson"] == pytest.approx(pearsonr(preds, labels)[0])
    assert got["spearmanr"] == pytest.approx(spearmanr(preds, labels)[0])
    assert got["combined_score"] == pytest.approx((got["pearson"] + got["spearmanr"]) / 2)


def test_metric_edge_cases() -> None:
    assert glue.matthews([1, 1, 1], [0, 1, 1]) == 0.0
    assert np.isnan(glue.pearson([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]))
    with pytest.raises(BertscopeError):
        glue.accuracy([1, 0], [1])
    with pytest.raises(BertscopeError, match="unlabelled"):
        glue.compute_metrics("sst2", [1], [None])


def test_glue_average_counts_mnli_once() -> None:
    scores = {"cola": 0.5, "mnli-m": 0.8, "mnli-mm": 0.6, "rte": 0.7}
    assert glue.glue_average(scores) == pytest.approx((0.5 + 0.7 + 0.7) / 3)


def test_metric_names_are_evaluates_and_old_names_read_the_same():
    """The names Hugging Face's `evaluate` GLUE metric and run_glue write; bertscope 0.1.0's names map onto them."""
    names = {m for task in glue.TASKS.values() for m in task.metrics}
    assert names == {"accuracy", "f1", "matthews_correlation", "pearson", "spearmanr"}
    assert glue.canonical_metrics({"mcc": 0.3, "score": 0.3}) == {"matthews_correlation": 0.3, "combined_score": 0.3}
    assert glue.canonical_metric_key("final.validation.score") == "final.validation.combined_score"
    assert glue.canonical_metric_key("final.score") == "final.combined_score"
    assert glue.canonical_metric_key("layer 3.validation.spearman") == "layer 3.validation.spearmanr"
    assert glue.canonical_metric_key("layer 3.score") == "layer 3.score"  # a study's own column, not a metric
    assert glue.canonical_metric_key("final.top1") == "final.top1"
