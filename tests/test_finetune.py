"""`bertscope finetune` end to end on tiny checkpoints and the local GLUE copy (the heavy runs are marked slow)."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, matthews_corrcoef

from bertscope import api
from bertscope.cli import main
from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_dims
from bertscope.data import glue
from bertscope.finetune.command import load_finetuned
from conftest import user_error as _user_error

SMALL = {"max_train": 32, "max_eval": 24, "batch_size": 8, "max_length": 48, "progress": False}


def _predictions(out: Path) -> list[dict[str, str]]:
    with open(out / "predictions.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_results_file_records_options_dims_and_official_metric(tmp_path, tiny_checkpoint, glue_dir) -> None:
    out = tmp_path / "run"
    result = api.finetune(model=str(tiny_checkpoint("bert", 3)), task="rte", data_dir=str(glue_dir), epochs=2,
                          dims="random:5", token="max-norm", layer="1,-1", seed=3, out=str(out), **SMALL)
    payload = json.loads((out / "results.json").read_text())
    assert payload["complete"] and payload["command"] == "finetune"
    assert payload["config"]["dims"] == "random:5" and payload["config"]["token"] == "max-norm"
    assert payload["selection"]["dims"] == list(parse_dims("random:5", 32, seed=3))
    assert payload["selection"]["layers"] == [1, 3]
    assert len(payload["epochs"]) == 2 and payload["head"]["dims"] == payload["selection"]["dims"]
    assert payload["environment"]["versions"]["torch"] and "git" in payload["environment"]
    assert payload["timing"]["train_examples"] == 2 * 32 and payload["timing"]["train_examples_per_second"] > 0
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    rows = _predictions(out)
    dev = glue.load_split("rte", "validation", glue_dir, 24, 3)
    assert [int(r["idx"]) for r in rows] == [ex.idx for ex in dev.examples]
    preds = [int(float(r["prediction"])) for r in rows]
    assert payload["final"]["validation"]["accuracy"] == pytest.approx(accuracy_score(dev.labels, preds))
    names = glue.get_task("rte").label_names
    for row, ex in zip(rows, dev.examples):  # label names and the probability of every label
        assert row["label_name"] == names[ex.label] and row["prediction_name"] == names[int(row["prediction"])]
        probabilities = [float(row[f"p_{name}"]) for name in names]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-9)
        assert probabilities.index(max(probabilities)) == int(row["prediction"])
    assert result.metrics()["final.accuracy"] == payload["final"]["validation"]["accuracy"]
    assert result.metrics()["final.combined_score"] == payload["final_score"]


def test_cola_and_stsb_metrics_equal_sklearn_and_scipy_on_the_runs_predictions(tmp_path, tiny_checkpoint,
                                                                               glue_dir) -> None:
    for task, check in (("cola", "matthews_correlation"), ("stsb", "pearson")):
        out = tmp_path / task
        api.finetune(model=str(tiny_checkpoint("bert", 2)), task=task, data_dir=str(glue_dir), epochs=1,
                     head="mlp2", head_hidden=16, out=str(out), **SMALL)
        payload = json.loads((out / "results.json").read_text())
        rows = _predictions(out)
        labels = [float(r["label"]) for r in rows]
        preds = [float(r["prediction"]) for r in rows]
        if check == "matthews_correlation":
            expected = matthews_corrcoef(np.array(labels, int), np.array(preds, int))
        else:
            expected = pearsonr(preds, labels)[0]
        assert payload["final"]["validation"][check] == pytest.approx(expected, abs=1e-9)
        assert payload["head"]["num_labels"] == glue.get_task(task).num_labels
        probability_columns = [k for k in rows[0] if k.startswith("p_")]
        assert probability_columns == ([] if task == "stsb" else ["p_unacceptable", "p_acceptable"])


def test_saved_model_reloads_with_transformers_and_bertscope(tmp_path, tiny_checkpoint, glue_dir) -> None:
    import transformers

    out = tmp_path / "saved"
    api.finetune(model=str(tiny_checkpoint("bert", 3)), task="mrpc", data_dir=str(glue_dir), epochs=1,
                 layer="2", dims="idx:17,3,30", pooler=True, head="mlp2", head_hidden=8, save_model=True,
                 out=str(out), **SMALL)
    plain = transformers.AutoModel.from_pretrained(out / "model")
    assert plain.config.num_hidden_layers == 3
    reloaded = load_finetuned(out)
    assert reloaded.spec.dims == (17, 3, 30) and reloaded.spec.layers == (2,) and reloaded.spec.pooler
    torch.testing.assert_close(reloaded.head.pooler_dense.weight, plain.pooler.dense.weight)
    dev = glue.load_split("mrpc", "validation", glue_dir, 24, 0)
    logits = reloaded.logits([ex.texts for ex in dev.examples], max_length=48)
    rows = _predictions(out)
    assert logits.argmax(-1).tolist() == [int(float(r["prediction"])) for r in rows]
    probabilities = torch.softmax(logits.double(), -1)
    for row, p in zip(rows, probabilities):
        assert [float(row["p_not_equivalent"]), float(row["p_equivalent"])] == pytest.approx(p.tolist(), abs=1e-5)
    config = json.loads((out / "model" / "config.json").read_text())  # not a standard classifier: the encoder
    assert config["architectures"] == ["BertModel"] and config["id2label"]["1"] == "equivalent"
    assert "load_finetuned" in (out / "model" / "README.md").read_text()


def test_frozen_encoder_is_unchanged_and_head_uses_its_own_rate(tmp_path, tiny_checkpoint, glue_dir) -> None:
    import transformers

    source = tiny_checkpoint("bert", 2)
    out = tmp_path / "frozen"
    api.finetune(model=str(source), task="sst2", data_dir=str(glue_dir), epochs=1, freeze="encoder",
                 token="mean", save_model=True, out=str(out), **SMALL)
    payload = json.loads((out / "results.json").read_text())
    assert payload["freezing"]["encoder_fully_frozen"] and payload["parameters"]["encoder_trainable"] == 0
    assert payload["head"]["head_lr"] == pytest.approx(1e-3)
    before = transformers.AutoModel.from_pretrained(source).state_dict()
    after = transformers.AutoModel.from_pretrained(out / "model").state_dict()
    for key in after:
        if not key.startswith("pooler"):
            torch.testing.assert_close(after[key], before[key], msg=key)


def _write_mnli(root: Path) -> None:
    header = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
              "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n")
    labels = ["entailment", "neutral", "contradiction"]
    (root / "MNLI").mkdir(parents=True)
    for name, n in (("train.tsv", 24), ("dev_matched.tsv", 9), ("dev_mismatched.tsv", 6)):
        lines = [header] + [f"{i}\t1\t1a\tfiction\t-\t-\t-\t-\tA man sleeps {i} .\tSomeone rests .\t"
                            f"{labels[i % 3]}\t{labels[i % 3]}\n" for i in range(n)]
        (root / "MNLI" / name).write_text("".join(lines), encoding="utf-8")


def test_mnli_evaluates_matched_and_mismatched(tmp_path, tiny_checkpoint) -> None:
    _write_mnli(tmp_path / "glue")
    result = api.finetune(model=str(tiny_checkpoint("bert", 2)), task="MNLI", data_dir=str(tmp_path / "glue"),
                          epochs=1, **SMALL)
    assert set(result.final) == {"validation_matched", "validation_mismatched"}
    assert result.final_score == pytest.approx(
        (result.final["validation_matched"]["combined_score"] + result.final["validation_mismatched"]["combined_score"]) / 2)
    assert "final.validation_mismatched.accuracy" in result.metrics()


@pytest.mark.parametrize("name", ["distilbert", "modernbert", "albert"])
def test_other_families_fine_tune(name: str, tmp_path, tiny_checkpoint, glue_dir) -> None:
    result = api.finetune(model=str(tiny_checkpoint(name, 2)), task="rte", data_dir=str(glue_dir), epochs=1,
                          token="cls", layer="1", **SMALL)
    assert 0.0 <= result.final["validation"]["accuracy"] <= 1.0


def test_deepened_folder_fine_tunes_like_any_model(tmp_path, tiny_checkpoint, glue_dir) -> None:
    deep = tmp_path / "deep"
    api.deepen(model=str(tiny_checkpoint("bert", 2)), out=str(deep), duplicate="1")
    result = api.finetune(model=str(deep), task="rte", data_dir=str(glue_dir), epochs=1, **SMALL)
    assert result.selection["num_layers"] == 3 and result.selection["layers"] == [3]


def test_user_errors_are_one_line_bertscope_errors(tmp_path, tiny_checkpoint, glue_dir) -> None:
    model = str(tiny_checkpoint("distilbert", 2))
    cases = [
        ({"layer": "5"}, "out of range"),
        ({"dims": "idx:99"}, "out of range"),
        ({"eval_split": "test"}, "no labels"),
        ({"freeze": "layers:2-1"}, "freeze"),
        ({"token": "first"}, "--token"),
        ({"task": "squad"}, "known tasks"),
        ({"save_model": True}, "--out"),
    ]
    for options, message in cases:
        merged = {"model": model, "task": "rte", "data_dir": str(glue_dir), **SMALL, **options}
        with pytest.raises(BertscopeError, match=message) as info:
            api.finetune(**merged)
        assert "\n" not in str(info.value)


def test_interrupted_run_leaves_no_complete_results_and_cli_exit_codes(tmp_path, tiny_checkpoint, glue_dir,
                                                                       monkeypatch, capsys) -> None:
    import bertscope.finetune.pipeline as pipeline

    out = tmp_path / "interrupted"
    args = ["finetune", "--model", str(tiny_checkpoint("bert", 2)), "--task", "rte", "--data-dir", str(glue_dir),
            "--max-train", "16", "--max-eval", "8", "--epochs", "1", "--no-progress", "--out", str(out)]

    def interrupt(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "train_loop", interrupt)
    assert main(args) == 130
    assert not (out / "results.json").exists()
    assert json.loads((out / "status.json").read_text())["state"] == "interrupted"
    monkeypatch.undo()
    assert main(args) == 0
    assert json.loads((out / "results.json").read_text())["complete"]
    assert main(args) == 2  # results.json exists: refused without --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--layer", "9"]) == 2
    monkeypatch.setattr(pipeline, "train_loop", interrupt)
    assert main([*args, "--overwrite"]) == 130  # the old complete file is moved aside, not left looking current
    assert not (out / "results.json").exists() and (out / "results.previous.json").exists()


def test_a_diverging_run_stops_in_one_line_and_leaves_no_complete_result(tmp_path, tiny_checkpoint, glue_dir,
                                                                        capsys) -> None:
    """The issue's check: --lr 1e3 drives a tiny model's loss to NaN; exit 2, one line, status failed, no
    results.json (also with --overwrite over a finished run); --on-divergence continue finishes."""
    out = tmp_path / "diverged"
    args = ["finetune", "--model", str(tiny_checkpoint("bert", 2)), "--task", "rte", "--data-dir", str(glue_dir),
            "--max-train", "32", "--max-eval", "16", "--batch-size", "8", "--epochs", "6", "--lr", "1e3",
            "--warmup-ratio", "0", "--grad-clip", "0", "--no-progress"]
    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.fullmatch(r"bertscope finetune: error: training diverged: (loss is (nan|inf|-inf) at epoch \d+, "
                        r"step \d+|epoch \d+'s mean loss \S+ is over 10 times \S+ \(the larger of the constant "
                        r"predictor's loss and epoch 1's\)) \(lower --lr, or --on-divergence continue\)", err[0])
    assert sorted(p.name for p in out.iterdir()) == ["status.json"]  # nothing complete-looking
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == "BertscopeError"

    kept = tmp_path / "continued"
    assert main([*args, "--out", str(kept), "--on-divergence", "continue"]) == 0
    err = capsys.readouterr().err
    assert err.count("training diverged") == 1 and "continuing" in err
    assert json.loads((kept / "results.json").read_text())["complete"]
    assert main([*args, "--out", str(kept), "--overwrite"]) == 2  # a finished run's results.json is moved aside
    assert not (kept / "results.json").exists() and (kept / "results.previous.json").exists()
    assert json.loads((kept / "status.json").read_text())["state"] == "failed"





def test_user_errors_are_one_line_before_any_training(tmp_path, tiny_checkpoint, glue_dir, capsys,
                                                      monkeypatch) -> None:
    """An unwritable --out, a --max-length beyond the positions, an --token index:K no input has: one line, exit
    2, before the model is loaded (train_loop must not run), nothing left behind."""
    from bertscope.finetune import pipeline

    def never(*_: object, **__: object) -> None:
        raise AssertionError("the run got as far as training")

    monkeypatch.setattr(pipeline, "train_loop", never)
    base = ["finetune", "--task", "rte", "--data-dir", str(glue_dir), "--max-train", "8", "--max-eval", "8",
            "--no-progress"]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    err = _user_error([*base, "--model", str(tiny_checkpoint("bert", 2)), "--out", str(blocker / "run")], capsys)
    assert "cannot write to --out" in err and blocker.read_text(encoding="utf-8") == "not a folder"
    roberta = str(tiny_checkpoint("roberta", 2))  # max_position_embeddings 140, positions start after pad id 0
    out = tmp_path / "run"
    err = _user_error([*base, "--model", roberta, "--max-length", "140", "--out", str(out)], capsys)
    assert "--max-length 140" in err and "139" in err and not out.exists()
    err = _user_error([*base, "--model", roberta, "--max-length", "48", "--token", "index:48", "--out", str(out)],
                      capsys)
    assert "index:48" in err and "--max-length 48" in err and not out.exists()
    err = _user_error([*base, "--model", roberta, "--max-length", "48", "--token", "index:-49"], capsys)
    assert "index:-49" in err
    import transformers

    from bertscope.finetune.config import FinetuneConfig

    model_config = transformers.AutoConfig.from_pretrained(roberta)
    for token, length in (("index:47", 48), ("index:-48", 48), ("cls", 139)):  # the limits themselves pass
        pipeline.check_lengths(FinetuneConfig(model=roberta, task="rte", max_length=length, token=token),
                               model_config)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_one_line(tmp_path, tiny_checkpoint, glue_dir, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        err = _user_error(["finetune", "--model", str(tiny_checkpoint("bert", 2)), "--task", "rte", "--data-dir",
                           str(glue_dir), "--out", str(locked / "run"), "--no-progress"], capsys)
    finally:
        locked.chmod(0o755)
    assert "cannot write to --out" in err and not (locked / "run").exists()


@pytest.mark.slow
def test_default_model_learns_sst2_and_random_two_dims_runs(tmp_path, glue_dir) -> None:
    """The issue's check: a short CPU run with the embedded model is clearly above the majority class, and
    ``--dims random:2`` runs end to end (lr 1e-4: the small MiniLM barely moves in one short epoch at 2e-5)."""
    dev = glue.load_split("sst2", "validation", glue_dir)
    majority = max(dev.labels.count(0), dev.labels.count(1)) / len(dev)
    result = api.finetune(task="sst2", data_dir=str(glue_dir), max_train=1000, epochs=1, lr=1e-4, batch_size=32,
                          progress=False, out=str(tmp_path / "full"))
    assert result.final["validation"]["accuracy"] > majority + 0.15
    two = api.finetune(task="sst2", data_dir=str(glue_dir), max_train=500, epochs=1, lr=1e-4, dims="random:2",
                       token="max-norm", seed=3, progress=False, out=str(tmp_path / "two"))
    assert two.selection["dims"] == list(parse_dims("random:2", 384, seed=3))
    assert 0.0 <= two.final["validation"]["accuracy"] <= 1.0
    assert json.loads((tmp_path / "two" / "results.json").read_text())["complete"]


def test_results_record_the_feature_norm_and_flag_a_head_that_did_not_learn(tmp_path, tiny_checkpoint,
                                                                           glue_dir) -> None:
    out = tmp_path / "stalled"
    result = api.finetune(model=str(tiny_checkpoint("bert", 2)), task="sst2", data_dir=str(glue_dir), epochs=1,
                          freeze="encoder", fit="sgd", head_lr=1e-9, out=str(out), **SMALL)  # a head that cannot move
    payload = json.loads((out / "results.json").read_text())
    assert payload["config"]["feature_norm"] == "auto"
    assert payload["head"]["feature_norm"] == "standardize"  # auto with --freeze encoder
    assert payload["head"]["feature_stats"]["examples"] == 32
    assert payload["learning"]["learned"] is False and payload["learning"]["remedy"]
    assert "constant predictor" in payload["learning"]["reason"]
    assert result.metrics()["learned"] == 0.0
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(result.render())
    assert "did not learn" in console.export_text()
    plain = api.finetune(model=str(tiny_checkpoint("bert", 2)), task="sst2", data_dir=str(glue_dir), epochs=1,
                         lr=1e-9, **SMALL)
    assert plain.head["feature_norm"] == "none" and plain.head["feature_stats"] is None  # fine-tuning: auto = none


def test_bfloat16_fine_tuning_stays_near_float32_and_records_its_precision(tmp_path, tiny_checkpoint,
                                                                           glue_dir) -> None:
    """Same seed, batches and weights: bf16 autocast changes only rounding, so the training loss and dev accuracy stay
    close to the fp32 run's, and the result says whether the device computed bf16 natively."""
    from bertscope.core.precision import precision_info

    runs = {dtype: api.finetune(model=str(tiny_checkpoint("bert", 2)), task="sst2", data_dir=str(glue_dir),
                                epochs=1, dtype=dtype, out=str(tmp_path / dtype), **SMALL)
            for dtype in ("float32", "bfloat16")}
    for dtype, result in runs.items():
        assert result.timing["precision"] == precision_info(dtype, "cpu")
        saved = json.loads((tmp_path / dtype / "results.json").read_text())
        assert saved["timing"]["precision"]["dtype"] == dtype
    a, b = (runs[d].final["validation"]["accuracy"] for d in ("float32", "bfloat16"))
    assert abs(a - b) <= 2 / SMALL["max_eval"] + 1e-9  # at most two of the 24 dev predictions flip
    assert runs["bfloat16"].epochs[0]["train_loss"] == pytest.approx(runs["float32"].epochs[0]["train_loss"],
                                                                       abs=0.02)
