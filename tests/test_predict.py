"""``bertscope predict``: a saved model on a GLUE split (test included), a tsv or a text file, with label names,
probabilities and, where the data has labels, the official metrics; user mistakes are one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sklearn.metrics import accuracy_score

from bertscope import api
from bertscope.cli import main
from bertscope.core.errors import BertscopeError
from bertscope.data import glue

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"max_train": 32, "max_eval": 24, "batch_size": 8, "max_length": 48, "progress": False, "epochs": 2,
         "lr": 1e-3, "head_lr": 1e-2}
RTE = glue.get_task("rte")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_checkpoint, glue_dir) -> dict[str, Path]:
    """A tiny rte model (a head that needs bertscope: mean token, 8 dims) and a tiny stsb one, saved."""
    root = tmp_path_factory.mktemp("saved")
    api.finetune(model=str(tiny_checkpoint("bert", 2)), task="rte", data_dir=str(glue_dir), token="mean",
                 dims="first:8", save_model=True, out=str(root / "rte"), **SMALL)
    api.finetune(model=str(tiny_checkpoint("bert", 2)), task="stsb", data_dir=str(glue_dir), pooler=True,
                 save_model=True, out=str(root / "stsb"), **SMALL)
    return {"rte": root / "rte", "stsb": root / "stsb"}


def test_the_test_split_gets_label_names_and_no_metrics(saved, glue_dir, tmp_path) -> None:
    out = tmp_path / "test"
    result = api.predict(model=str(saved["rte"] / "model"), data_dir=str(glue_dir), split="test", max_examples=20,
                         progress=False, out=str(out))
    rows = _rows(out / "predictions.csv")
    test = glue.load_split("rte", "test", glue_dir, 20, 0)
    assert [int(r["idx"]) for r in rows] == [ex.idx for ex in test.examples]
    assert [(r["text"], r["text_pair"]) for r in rows] == [ex.texts for ex in test.examples]
    assert "label" not in rows[0] and "label_name" not in rows[0]
    for row in rows:
        probabilities = [float(row[f"p_{name}"]) for name in RTE.label_names]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-9)
        assert row["prediction_name"] == RTE.label_names[probabilities.index(max(probabilities))]
    payload = json.loads((out / "predict.json").read_text())
    assert payload["metrics"] is None and result.scores is None and payload["num_examples"] == 20
    assert payload["data"]["split"] == "test" and payload["label_names"] == list(RTE.label_names)
    assert sum(payload["prediction_summary"].values()) == 20 and payload["max_length"] == 48  # as trained
    assert result.metrics() == {"examples": 20.0}


def test_a_tsv_and_a_text_file_give_the_glue_splits_predictions_and_metrics(saved, glue_dir, tmp_path) -> None:
    model = str(saved["rte"])
    reference = api.predict(model=model, data_dir=str(glue_dir), max_examples=12, progress=False)
    dev = glue.load_split("rte", "validation", glue_dir, 12, 0)
    gold = [RTE.label_names[ex.label] for ex in dev.examples]
    tsv = tmp_path / "mine.tsv"
    tsv.write_text("claim\tpremise\tgold\n" + "".join(f"{b}\t{a}\t{g}\n" for (a, b), g in
                                                      zip((ex.texts for ex in dev.examples), gold)),
                   encoding="utf-8")
    from_tsv = api.predict(model=model, tsv=str(tsv), text_column="premise", text_pair_column="claim",
                           label_column="gold", progress=False, out=str(tmp_path / "tsv"))
    texts = tmp_path / "pairs.txt"
    texts.write_text("".join(f"{a}\t{b}\n\n" for a, b in (ex.texts for ex in dev.examples)), encoding="utf-8")
    from_texts = api.predict(model=model, texts=str(texts), progress=False)
    for a, b, c in zip(reference.rows, from_tsv.rows, from_texts.rows):
        for name in RTE.label_names:
            assert b[f"p_{name}"] == pytest.approx(a[f"p_{name}"], abs=1e-6)
            assert c[f"p_{name}"] == pytest.approx(a[f"p_{name}"], abs=1e-6)
    assert [r["idx"] for r in from_tsv.rows] == list(range(12))  # no index column: the row number
    assert [r["idx"] for r in from_texts.rows] == list(range(0, 24, 2))  # the line number (blank lines skipped)
    assert [r["label_name"] for r in from_tsv.rows] == gold
    expected = accuracy_score([ex.label for ex in dev.examples], [r["prediction"] for r in from_tsv.rows])
    assert from_tsv.scores["accuracy"] == pytest.approx(expected) == pytest.approx(reference.scores["accuracy"])
    assert _rows(tmp_path / "tsv" / "predictions.csv")[0]["label_name"] == gold[0]
    assert from_texts.scores is None and "label" not in from_texts.rows[0]


def test_stsb_predictions_are_scores_scored_by_pearson_and_spearman(saved, glue_dir) -> None:
    result = api.predict(model=str(saved["stsb"]), data_dir=str(glue_dir), max_examples=24, progress=False)
    theirs = _rows(saved["stsb"] / "predictions.csv")
    assert [r["idx"] for r in result.rows] == [int(r["idx"]) for r in theirs]
    for ours, row in zip(result.rows, theirs):
        assert ours["prediction"] == pytest.approx(float(row["prediction"]), abs=1e-5)
        assert "prediction_name" not in ours and not any(k.startswith("p_") for k in ours)
    payload = json.loads((saved["stsb"] / "results.json").read_text())
    assert result.scores["pearson"] == pytest.approx(payload["final"]["validation"]["pearson"], abs=1e-4)
    assert set(result.summary) == {"mean", "min", "max"}


def test_user_mistakes_are_one_line_errors(saved, glue_dir, tmp_path, capsys) -> None:
    model = str(saved["rte"])
    (tmp_path / "mixed.txt").write_text("one\ttwo\nthree\n", encoding="utf-8")
    (tmp_path / "bad.tsv").write_text("a\tb\nx\ty\n", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    cases = [
        ({}, "--model is required"),
        ({"model": model, "tsv": "x.tsv", "texts": "y.txt"}, "not both"),
        ({"model": model, "text_column": "a"}, "apply to --tsv only"),
        ({"model": model, "texts": "y.txt", "task": "rte"}, "GLUE split"),
        ({"model": str(tmp_path / "empty")}, "no bertscope selecting head"),
        ({"model": str(tmp_path / "nothing")}, "not a folder"),
        ({"model": model, "task": "sst2", "data_dir": str(glue_dir)}, "other labels"),
        ({"model": model, "split": "dev_mismatched", "data_dir": str(glue_dir)}, "no split"),
        ({"model": model, "texts": str(tmp_path / "mixed.txt")}, "separate the two texts"),
        ({"model": model, "tsv": str(tmp_path / "bad.tsv")}, "no columns sentence1, sentence2"),
        ({"model": model, "tsv": str(tmp_path / "bad.tsv"), "text_column": "a", "text_pair_column": "c"},
         "no column 'c'"),
        ({"model": model, "tsv": str(tmp_path / "bad.tsv"), "text_column": "a", "text_pair_column": "b",
          "label_column": "b"}, "not one of entailment"),
        ({"model": model, "max_examples": 0}, "at least 1"),
    ]
    for options, message in cases:
        with pytest.raises(BertscopeError, match=message) as info:
            api.predict(progress=False, **options)
        assert "\n" not in str(info.value)
    assert main(["predict", "--model", str(tmp_path / "empty")]) == 2
    assert "bertscope predict: error:" in capsys.readouterr().err


def test_the_cli_writes_predictions_for_a_text_file(saved, tmp_path) -> None:
    texts = tmp_path / "pairs.txt"
    texts.write_text("A man sleeps.\tSomeone rests.\nIt rains.\tThe street is dry.\n", encoding="utf-8")
    out = tmp_path / "cli"
    assert main(["predict", "--model", str(saved["rte"]), "--texts", str(texts), "--no-progress",
                 "--out", str(out)]) == 0
    rows = _rows(out / "predictions.csv")
    assert [r["text"] for r in rows] == ["A man sleeps.", "It rains."] and rows[1]["text_pair"] == "The street is dry."
    assert {r["prediction_name"] for r in rows} <= set(RTE.label_names)
