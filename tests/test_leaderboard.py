"""GLUE leaderboard files: the server's file names, header, label strings, and the run's own predictions."""

from __future__ import annotations

import csv

import pytest

from bertscope import api, cli
from bertscope.data import glue
from bertscope.finetune import leaderboard
from bertscope.finetune.command import load_finetuned

pytestmark = pytest.mark.usefixtures("one_thread")


def test_file_names_and_label_strings_follow_the_glue_server():
    assert {leaderboard.submission_file(glue.get_task("mnli"), s) for s in leaderboard.test_splits(glue.get_task("mnli"))} \
        == {"MNLI-m.tsv", "MNLI-mm.tsv"}
    for task in glue.TASKS.values():
        for split in leaderboard.test_splits(task):
            assert leaderboard.submission_file(task, split).endswith(".tsv")
    rte = glue.get_task("rte")
    assert leaderboard.submission_rows(rte, [0, 1], [1, 0]) == [(0, "not_entailment"), (1, "entailment")]
    assert leaderboard.submission_rows(glue.get_task("cola"), [5], [1]) == [(5, "1")]
    assert leaderboard.submission_rows(glue.get_task("stsb"), [0, 1, 2], [-0.2, 2.5, 7]) == \
        [(0, "0.000"), (1, "2.500"), (2, "5.000")]


def test_predict_test_writes_the_runs_predictions_for_every_test_example(tmp_path, tiny_checkpoint, glue_dir):
    out = tmp_path / "rte"
    result = api.finetune(task="rte", model=str(tiny_checkpoint("bert", 2)), data_dir=str(glue_dir), max_train=24,
                          max_eval=8, epochs=1, batch_size=8, max_length=48, progress=False, out=str(out),
                          predict_test=True, save_model=True)
    path = out / "glue_submission" / "RTE.tsv"
    assert result.test_predictions == {"test": str(path)}
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    test = glue.load_split("rte", "test", glue_dir)
    assert rows[0] == ["index", "prediction"] and len(rows) == len(test) + 1
    assert [int(r[0]) for r in rows[1:]] == [ex.idx for ex in test.examples]
    model = load_finetuned(out)  # an independent path to the same predictions: the saved model, reloaded
    logits = model.logits([tuple(ex.texts) for ex in test.examples[:40]], max_length=48)
    expected = [glue.get_task("rte").tsv_labels[i] for i in logits.argmax(-1).tolist()]
    assert [r[1] for r in rows[1:41]] == expected


def test_predict_test_needs_out_and_is_refused_by_studies(capsys):
    assert cli.main(["finetune", "--task", "rte", "--predict-test"]) == 2
    assert "--predict-test needs --out" in capsys.readouterr().err
    assert cli.main(["layers", "--task", "rte", "--predict-test", "--out", "x"]) == 2
    assert "use finetune --predict-test" in capsys.readouterr().err
