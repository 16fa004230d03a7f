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
    stalled = did_not_learn(0.686, constant)  # issue 11's stalled head: 0.689 -> 0.686
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
