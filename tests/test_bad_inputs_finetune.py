"""Bad inputs to fine-tuning through the CLI: numeric options that are not finite or out of range, and a run whose
loss explodes. Each ends in exit 2, one line on stderr, no traceback and no complete-looking result (the house rule
for every failure a user can cause; the model-folder cases are in tests/test_bad_inputs.py)."""

from __future__ import annotations

import json

import pytest

from conftest import user_error
from test_bad_inputs import _no_result

pytestmark = pytest.mark.usefixtures("one_thread")


#: (case, extra finetune options, words the one line must hold). All are refused before any model is loaded.
NUMERIC_OPTIONS: list[tuple[str, list[str], str]] = [
    ("learning rate nan", ["--lr", "nan"], "--lr must be a finite number, got nan"),
    ("learning rate inf", ["--lr", "inf"], "--lr must be a finite number, got inf"),
    ("head learning rate nan", ["--head-lr", "nan"], "--head-lr must be a finite number"),
    ("negative learning rate", ["--lr=-1e-3"], "--lr and --head-lr must be positive"),
    ("zero learning rate", ["--lr", "0"], "--lr and --head-lr must be positive"),
    ("weight decay inf", ["--weight-decay", "inf"], "--weight-decay must be a finite number"),
    ("gradient clip nan", ["--grad-clip", "nan"], "--grad-clip must be a finite number"),
    ("warmup ratio nan", ["--warmup-ratio", "nan"], "--warmup-ratio must be a finite number"),
    ("warmup ratio 1", ["--warmup-ratio", "1"], "--warmup-ratio must be in [0, 1)"),
    ("log seconds nan", ["--log-seconds", "nan"], "--log-seconds must be a finite number"),
    ("seed past 64 bits", ["--seed", "99999999999999999999999"], "--seed must be between 0 and 4294967295"),
    ("negative seed", ["--seed", "-1"], "--seed must be between 0 and 4294967295"),
    ("zero epochs", ["--epochs", "0"], "--epochs must be at least 1"),
    ("zero batch size", ["--batch-size", "0"], "--batch-size must be at least 1"),
    ("negative max-train", ["--max-train", "-3"], "--max-train must be at least 1"),
    ("zero log-every", ["--log-every", "0"], "--log-every must be at least 1"),
    ("negative checkpoint-every", ["--checkpoint-every", "-1"], "--checkpoint-every must not be negative"),
    ("max length past the model's positions", ["--max-length", "100000"], "exceeds the model's"),
    ("max length below 4", ["--max-length", "2"], "--max-length must be at least 4"),
]


@pytest.mark.parametrize("case, extra, words", NUMERIC_OPTIONS, ids=[c for c, _, _ in NUMERIC_OPTIONS])
def test_a_bad_numeric_option_is_one_line_before_finetune_works(case, extra, words, tiny_checkpoint, glue_dir,
                                                                tmp_path, capsys) -> None:
    out = tmp_path / "out"
    err = user_error(["finetune", "--model", str(tiny_checkpoint("bert", 2)), "--task", "rte", "--data-dir",
                      str(glue_dir), "--max-train", "16", "--max-eval", "8", "--epochs", "1", "--out", str(out),
                      "--no-progress", *extra], capsys)
    assert words in err, err
    _no_result(out)


@pytest.mark.parametrize("extra, words", [(["--seed", "-5"], "--seed must be between"),
                                          (["--max-examples", "4", "--seed", str(2**40)], "--seed must be between")],
                         ids=["negative seed", "seed past 2**32"])
def test_predict_refuses_a_bad_seed_in_one_line(extra, words, tmp_path, capsys) -> None:
    err = user_error(["predict", "--model", str(tmp_path), "--out", str(tmp_path / "out"), *extra], capsys)
    assert words in err


def test_a_loss_far_above_the_constant_predictors_ends_the_run_in_one_line(tiny_checkpoint, glue_dir, tmp_path,
                                                                           capsys) -> None:
    """--lr 1e3 drives a tiny model's loss up by orders of magnitude (finite or not): exit 2, one line naming the
    divergence, status failed, no results.json or predictions.csv."""
    out = tmp_path / "out"
    err = user_error(["finetune", "--model", str(tiny_checkpoint("bert", 2)), "--task", "sst2", "--data-dir",
                      str(glue_dir), "--max-train", "32", "--max-eval", "16", "--batch-size", "8", "--epochs", "3",
                      "--lr", "1e3", "--warmup-ratio", "0", "--out", str(out), "--no-progress"], capsys)
    assert "training diverged" in err and "lower --lr" in err
    assert sorted(p.name for p in out.iterdir()) == ["status.json"]
    assert json.loads((out / "status.json").read_text())["state"] == "failed"

