"""Did a head learn? The constant predictor's loss in closed form, and the flags of did_not_learn."""

from __future__ import annotations

import math

import pytest
import torch

from bertscope.finetune.learning import LOSS_MARGIN, REMEDY, constant_loss, did_not_learn


def test_constant_loss_is_the_label_entropy_for_classification() -> None:
    assert constant_loss([0, 1, 0, 1], regression=False) == pytest.approx(math.log(2))
    assert constant_loss([2, 2, 2], regression=False) == pytest.approx(0.0)
    labels = [0] * 6 + [1] * 3 + [2]
    p = torch.tensor([0.6, 0.3, 0.1])
    assert constant_loss(labels, regression=False) == pytest.approx(float(-(p * p.log()).sum()), rel=1e-6)
    # it is the cross-entropy of the best constant logits (the log frequencies)
    logits = p.log().expand(len(labels), 3)
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
    assert constant_loss(labels, regression=False) == pytest.approx(float(ce), rel=1e-6)


def test_constant_loss_is_the_label_variance_for_regression() -> None:
    labels = [0.0, 1.0, 4.0, 5.0]
    assert constant_loss(labels, regression=True) == pytest.approx(4.25)
    mse = torch.nn.functional.mse_loss(torch.full((4,), 2.5), torch.tensor(labels))
    assert constant_loss(labels, regression=True) == pytest.approx(float(mse))
    with pytest.raises(ValueError):
        constant_loss([], regression=True)


def test_a_loss_at_the_constant_predictors_is_flagged_with_the_remedy() -> None:
    constant = math.log(2)
    stalled = did_not_learn(0.686, constant)  # a stalled head seen on MiniLM: 0.689 -> 0.686
    assert not stalled.learned and "constant predictor" in stalled.reason and stalled.remedy == REMEDY
    assert "--feature-norm standardize" in stalled.remedy and "--token mean" in stalled.remedy
    learned = did_not_learn(0.55, constant)
    assert learned.learned and learned.reason == "" and learned.remedy == ""
    edge = (1 - LOSS_MARGIN) * constant
    assert not did_not_learn(edge, constant).learned and did_not_learn(edge - 1e-3, constant).learned
    assert did_not_learn(float("nan"), constant).final_train_loss is None


def test_one_class_dev_predictions_are_flagged() -> None:
    check = did_not_learn(0.3, math.log(2), {"validation": [1.0, 1.0, 1.0]}, {"validation": [0, 1, 1]})
    assert not check.learned and "every validation prediction is class 1" in check.reason
    assert did_not_learn(0.3, math.log(2), {"validation": [1.0, 0.0, 1.0]}, {"validation": [0, 1, 1]}).learned
    # a split whose labels are all one class may be predicted as that class
    assert did_not_learn(0.3, math.log(2), {"validation": [1.0, 1.0]}, {"validation": [1, 1]}).learned
    # regression predictions are never "one class"
    assert did_not_learn(0.1, 2.0, {"validation": [3.0, 3.0]}, regression=True).learned
    record = did_not_learn(0.69, math.log(2), {"validation": [0.0, 0.0]}).to_dict()
    assert record["learned"] is False and "; " in record["reason"] and record["constant_loss"] == math.log(2)


def test_a_one_epoch_run_is_judged_where_it_ended_not_by_its_first_steps() -> None:
    """A regression head starts at the squared label mean, so a one-epoch run's whole-epoch loss can sit above the
    label variance although it learned (measured: STS-B, 2000 examples x 1 epoch, dev Pearson 0.75, epoch loss 2.42
    against a variance of 2.23); the learning check reads the epoch's second half."""
    from bertscope.finetune.records import EpochRecord

    record = EpochRecord(epoch=1, train_loss=2.42, learning_rate=0.0, train_seconds=1.0, train_examples=2000,
                         eval={}, eval_seconds=0.0, late_train_loss=1.1)
    assert not did_not_learn(record.train_loss, 2.23, regression=True).learned
    assert did_not_learn(record.ended_loss, 2.23, regression=True).learned
    stalled = EpochRecord(epoch=1, train_loss=0.70, learning_rate=0.0, train_seconds=1.0, train_examples=2000,
                          eval={}, eval_seconds=0.0, late_train_loss=0.69)
    assert not did_not_learn(stalled.ended_loss, math.log(2)).learned
    probe = EpochRecord(epoch=1, train_loss=0.4, learning_rate=0.0, train_seconds=1.0, train_examples=10, eval={},
                        eval_seconds=0.0)  # a solved probe records only its final loss
    assert probe.ended_loss == 0.4


def test_the_report_marks_runs_that_did_not_learn() -> None:
    from bertscope.report.context import Context
    from bertscope.report.sections import _not_learned_section
    from bertscope.runs.store import RunRecord

    def record(run_id: str, command: str, metrics: dict) -> RunRecord:
        return RunRecord(id=run_id, command=command, config={}, identity={}, depends_on=(), status="done", error=None,
                         metrics=metrics, attempts=1, created=0.0, started=None, finished=None, duration=None,
                         worker=None, environment=None, git_commit=None)

    ctx = Context(commands=("finetune", "dims"))
    rows = [record("ok", "finetune", {"learned": 1.0}), record("stalled", "finetune", {"learned": 0.0}),
            record("study", "dims", {"runs_not_learned": 3.0}), record("old", "finetune", {})]
    section = _not_learned_section(rows, ctx)
    assert section is not None
    table = next(b for b in section.blocks if b.kind == "table")
    assert [row[0] for row in table.rows] == ["`stalled`", "`study`"] and "3 run(s)" in table.rows[1][2]
    assert _not_learned_section(rows[:1] + rows[3:], ctx) is None


def test_a_loss_far_above_the_constant_predictors_is_never_called_within_2_percent() -> None:
    constant = math.log(2)
    check = did_not_learn(1e10, constant, options={"feature_norm": "none", "token": "cls", "lr": 1e3,
                                                   "head_lr": 1e3})
    assert not check.learned and "within" not in check.reason
    assert "1e+10" in check.reason and "times the constant predictor's" in check.reason
    assert "the default 2e-5" not in check.remedy and "1000" in check.remedy and "lower" in check.remedy
    just_above = did_not_learn(constant * (1 + LOSS_MARGIN) * 1.001, constant)
    assert not just_above.learned and "times" in just_above.reason
    assert "within 2%" in did_not_learn(constant * 1.01, constant).reason  # inside the margin either side


@pytest.mark.parametrize("options, absent, present", [
    ({"feature_norm": "standardize", "token": "cls", "lr": 2e-5, "head_lr": None}, ["--feature-norm"],
     ["the default 2e-5", "--token mean"]),
    ({"feature_norm": "none", "token": "mean", "lr": 2e-5, "head_lr": None}, ["--token mean"],
     ["--feature-norm standardize", "the default 2e-5"]),
    ({"feature_norm": "none", "token": "cls", "lr": 5e-4, "head_lr": 1e-3}, ["the default 2e-5"],
     ["than this run's 0.0005 / 0.001", "--feature-norm standardize", "--token mean"]),
    ({"feature_norm": "standardize", "token": "mean", "lr": None, "head_lr": None},  # a solved probe
     ["--feature-norm", "--token mean", "--lr"], ["none of the usual remedies"]),
])
def test_the_remedy_leaves_out_what_the_run_already_uses(options, absent, present) -> None:
    check = did_not_learn(0.69, math.log(2), options=options)
    assert not check.learned
    for text in absent:
        assert text not in check.remedy
    for text in present:
        assert text in check.remedy
    assert did_not_learn(0.69, math.log(2)).remedy == REMEDY  # no options: the generic advice


def test_a_run_records_its_own_remedy(glue_dir, tiny_checkpoint, tmp_path) -> None:
    from bertscope import api

    # one batch of 16: its second half is the whole epoch (a single batch of 8 is too few to judge a head by)
    result = api.finetune(task="rte", model=str(tiny_checkpoint("bert", 2)), data_dir=str(glue_dir), max_train=16,
                          max_eval=8, epochs=1, batch_size=16, max_length=32, progress=False, token="mean",
                          feature_norm="standardize", freeze="encoder", fit="sgd", lr=1e-9, head_lr=1e-9)
    learning = result.learning
    assert learning is not None and not learning["learned"]  # a rate of 1e-9 moves nothing
    assert "--token mean" not in learning["remedy"] and "--feature-norm" not in learning["remedy"]
    assert "the default 2e-5" not in learning["remedy"] and "1e-09" in learning["remedy"]
