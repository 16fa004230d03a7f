"""Converged probes (--fit): agreement with scikit-learn, the L2 choice on training rows only, outlier-dominated
features, the pipeline and study integration, and identities of runs stored before --fit existed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertscope import api, cli
from bertscope.core.errors import BertscopeError
from bertscope.finetune.batching import EncodedSplit
from bertscope.finetune.command import COMMAND as FINETUNE
from bertscope.finetune.command import NOT_IDENTITY
from bertscope.finetune.config import FinetuneConfig
from bertscope.finetune.converged import training_features
from bertscope.finetune.features import FeatureCollate
from bertscope.finetune.head import HeadSpec, SelectingHead
from bertscope.finetune.pipeline import prepare
from bertscope.finetune.probe import (
    L2_GRID,
    fit_logistic,
    fit_probe,
    fit_ridge,
    holdout_split,
    standardise,
)
from bertscope.finetune.train import train_loop
from bertscope.runs.identity import run_id
from bertscope.studies import common
from bertscope.studies.config import LayersConfig
from bertscope.studies.store import finetune_run_id
from conftest import loop_options

sklearn_linear = pytest.importorskip("sklearn.linear_model")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one thread


def _classes(n: int, d: int, classes: int, seed: int, outlier: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian features whose class depends linearly on them; dimension 0 scaled by ``outlier`` (and shifted)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = (x @ torch.randn(d, classes, generator=g, dtype=torch.float64)
         + 0.5 * torch.randn(n, classes, generator=g, dtype=torch.float64)).argmax(dim=1)
    x[:, 0] = x[:, 0] * outlier + 10.0 * outlier
    return x, y


def _sklearn_logistic(z: np.ndarray, y: np.ndarray, l2: float, classes: int):
    n = z.shape[0]
    # this probe: mean CE + l2/2 ||W||^2 (softmax rows); sklearn: C * sum CE + ||w||^2 / 2 (one vector when binary)
    c = (2.0 if classes == 2 else 1.0) / (n * l2)
    return sklearn_linear.LogisticRegression(C=c, tol=1e-10, max_iter=20000).fit(z, y)


@pytest.mark.parametrize("classes", [2, 3])
def test_logistic_probe_agrees_with_sklearn_on_standardised_features(classes):
    x, y = _classes(300, 12, classes, seed=classes, outlier=300.0)
    l2 = 1e-2
    fit = fit_logistic(x, y, l2, num_classes=classes, tol=1e-7)
    assert fit.converged and fit.iterations > 0 and fit.gradient <= 1e-7
    mean, std = standardise(x)
    z = ((x - mean) / std).numpy()
    ref = _sklearn_logistic(z, y.numpy(), l2, classes)
    on_z = (fit.weight * std).numpy()  # the probe's weights, back on the standardised features
    coef = on_z[1] - on_z[0] if classes == 2 else on_z
    assert np.abs(coef - ref.coef_.reshape(coef.shape)).max() < 1e-4 * max(1.0, np.abs(ref.coef_).max())
    ours = fit.predict(x).argmax(dim=1).numpy()
    assert (ours == ref.predict(z)).mean() >= 0.99
    # the folded raw-feature map is the standardised one
    assert torch.allclose(fit.predict(x), torch.from_numpy(z) @ torch.from_numpy(on_z).T
                          + (fit.bias + fit.weight @ mean), atol=1e-8)


def test_ridge_probe_agrees_with_sklearn_ridge():
    x, _ = _classes(200, 15, 2, seed=7, outlier=300.0)
    g = torch.Generator().manual_seed(1)
    y = x[:, 1:] @ torch.randn(14, generator=g, dtype=torch.float64) + x[:, 0] / 300 + torch.randn(200, generator=g,
                                                                                                  dtype=torch.float64)
    l2 = 0.05
    fit = fit_ridge(x, y, l2)
    mean, std = standardise(x)
    z = ((x - mean) / std).numpy()
    ref = sklearn_linear.Ridge(alpha=200 * l2).fit(z, y.numpy())
    assert np.allclose((fit.weight[0] * std).numpy(), ref.coef_, atol=1e-9)
    assert np.allclose(fit.predict(x).squeeze(-1).numpy(), ref.predict(z), atol=1e-8)


def test_l2_is_chosen_on_held_out_training_rows_then_refitted_on_all():
    x, y = _classes(200, 10, 3, seed=3)
    result = fit_probe(x, y, regression=False, num_classes=3, seed=5)
    keep, held = holdout_split(200, 5)
    assert len(held) == 20 and set(keep.tolist()) | set(held.tolist()) == set(range(200))
    assert not set(keep.tolist()) & set(held.tolist())
    tried = [l2 for l2, _ in result.grid]
    assert tried == sorted(L2_GRID)[-len(tried):]  # walked from the strongest L2 down
    expected = []
    for l2 in tried:  # the grid scores are the held-out accuracy of a fit on the other training rows
        fit = fit_logistic(x[keep], y[keep], l2, num_classes=3)
        expected.append(float((fit.predict(x[held]).argmax(1) == y[held]).double().mean()))
    assert [s for _, s in result.grid] == pytest.approx(expected)
    full = fit_probe(x, y, regression=False, num_classes=3, seed=5, patience=None)
    assert [l2 for l2, _ in full.grid] == list(L2_GRID)  # patience=None walks the whole grid
    assert [dict(full.grid)[l2] for l2 in tried] == pytest.approx([s for _, s in result.grid])
    assert max(expected) == pytest.approx(dict(result.grid)[result.l2])
    refit = fit_logistic(x, y, result.l2, num_classes=3)  # the final fit uses every training row
    assert torch.allclose(result.fit.weight, refit.weight, atol=1e-5)  # warm start: the same optimum
    record = result.to_dict()
    assert record["method"] == "converged" and record["converged"] and record["holdout_examples"] == 20
    assert fit_probe(x, y, regression=False, num_classes=3, seed=6).grid != result.grid  # the seed matters


def _split(task: str, labels: list[int]) -> EncodedSplit:
    n = len(labels)
    return EncodedSplit(task=task, input_ids=[[0]] * n, token_type_ids=None, special_masks=[[0]] * n,
                        labels=list(labels), idx=list(range(n)), pad_id=0)


def test_probe_learns_outlier_dominated_features_where_the_sgd_head_stays_at_the_majority():
    """One dimension ~300x the others and uninformative (BERT's outlier dimension), the signal in small ones: the
    linear head trained as finetune trains it (AdamW, head lr 1e-3, 5 epochs) predicts one class; the probe learns."""
    g = torch.Generator().manual_seed(0)
    n, d = 1200, 48
    y = (torch.rand(n, generator=g) < 0.55).long()
    signal = torch.randn(n, d, generator=g) + 0.15 * (2 * y[:, None] - 1) * torch.randn(1, d, generator=g).sign()
    x = 0.03 * signal
    x[:, 0] = 10.5 + 3.0 * torch.randn(n, generator=g)  # ~350x the others and uninformative
    train, dev = slice(0, 1000), slice(1000, n)
    train_data, dev_data = _split("sst2", y[train].tolist()), _split("sst2", y[dev].tolist())
    vectors = x[:, None, :].float()
    head = SelectingHead(HeadSpec(num_labels=2, hidden_size=d, layers=(1,), dims=tuple(range(d))), seed=0)
    collate = FeatureCollate([(train_data, vectors[train]), (dev_data, vectors[dev])])
    from bertscope.finetune.features import CachedRepresentation

    history = train_loop(CachedRepresentation(), head, train_data, {"validation": dev_data},
                         **loop_options(epochs=5, batch_size=32, lr=2e-5, head_lr=1e-3, progress=False, log="off"),
                         device=torch.device("cpu"), collate_fn=collate)
    sgd_predictions = set(history.predictions["validation"])
    majority = float(max((y[dev] == 1).double().mean(), (y[dev] == 0).double().mean()))
    assert len(sgd_predictions) == 1 or history.epochs[-1].eval["validation"]["accuracy"] <= majority + 0.02
    probe = fit_probe(x[train], y[train], regression=False, num_classes=2)
    accuracy = float((probe.fit.predict(x[dev]).argmax(1) == y[dev]).double().mean())
    assert probe.fit.converged and accuracy >= majority + 0.15


# ------------------------------------------------------------------------------------------------ pipeline


@pytest.fixture
def tiny(glue_dir, tiny_checkpoint, tmp_path):
    return dict(task="sst2", model=str(tiny_checkpoint("bert", 2)), data_dir=str(glue_dir), max_train=80,
                max_eval=40, epochs=1, max_length=32, batch_size=16, progress=False, freeze="encoder",
                cache_dir=str(tmp_path / "cache"))


def test_converged_finetune_on_cached_features_agrees_with_sklearn(tiny):
    run = prepare(FinetuneConfig(**tiny, cache_features=True, fit="converged"))
    history = run.train()
    result = run.result(history)
    fit = result.head["fit"]
    assert fit["method"] == "converged" and fit["requested"] == "converged" and fit["converged"]
    assert fit["l2"] in L2_GRID and 1 <= len(fit["grid"]) <= len(L2_GRID) and fit["iterations"] == history.steps
    assert len(result.epochs) == 1 and result.epochs[0]["train_loss"] == pytest.approx(fit["train_loss"])
    x, y = training_features(run)
    dev = run.data.eval_data["validation"]
    x_dev = run.trained_head.features(run.collate_fn(dev, range(len(dev)), regression=False).vectors).double()
    mean, std = standardise(x)
    ref = _sklearn_logistic(((x - mean) / std).numpy(), y.numpy(), fit["l2"], 2)
    sk_dev = ref.predict(((x_dev - mean) / std).numpy())
    assert (np.asarray(history.predictions["validation"]) == sk_dev).mean() >= 0.99
    accuracy = float((sk_dev == np.asarray(dev.labels)).mean())
    assert result.final["validation"]["accuracy"] == pytest.approx(accuracy, abs=1.5 / len(dev))
    # the live frozen encoder gives the same probe (the same vectors)
    live = api.finetune(**tiny, fit="converged")
    assert live.final_score == pytest.approx(result.final_score, abs=1e-9)
    assert live.head["fit"]["l2"] == fit["l2"]


def test_the_dev_split_never_changes_the_probe(tiny):
    first = prepare(FinetuneConfig(**tiny, cache_features=True, fit="converged"))
    first.train()
    other = prepare(FinetuneConfig(**{**tiny, "max_eval": 20}, cache_features=True, fit="converged"))
    other.train()
    assert torch.equal(first.trained_head.classifier.weight, other.trained_head.classifier.weight)


def test_fit_errors_are_one_line(tiny, capsys):
    assert cli.main(["finetune", "--task", "rte", "--fit", "converged", "--data-dir", tiny["data_dir"]]) == 2
    err = capsys.readouterr().err
    assert "--fit converged needs a fully frozen encoder" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(BertscopeError, match="linear head"):
        FinetuneConfig(task="rte", freeze="encoder", head="mlp2", fit="converged")
    with pytest.raises(BertscopeError, match="fully frozen encoder"):  # layers:0 leaves transformer layers trainable
        api.finetune(**{**tiny, "freeze": "layers:0"}, fit="converged")
    sgd = api.finetune(**{**tiny, "freeze": "layers:0"}, fit="auto")  # auto falls back to the training loop
    assert sgd.head["fit"] == {"requested": "auto", "method": "sgd"}


def test_a_frozen_study_uses_the_probe_by_default_and_records_it(tiny, tmp_path):
    options = {k: v for k, v in tiny.items() if k != "max_train"}
    study = api.layers(**options, max_train=40, layers="0,2", out=str(tmp_path / "l"))
    assert [r["result"]["head"]["fit"]["method"] for r in study.runs] == ["converged", "converged"]
    saved = json.loads((tmp_path / "l" / "layers.json").read_text())
    assert all(r["result"]["head"]["fit"]["converged"] for r in saved["runs"])
    sgd = api.layers(**options, max_train=40, layers="0,2", fit="sgd")
    assert [r["result"]["head"]["fit"]["method"] for r in sgd.runs] == ["sgd", "sgd"]
    live = api.layers(**{**options, "freeze": "none"}, max_train=40, layers="2")
    assert live.config.selection.fit == "sgd"  # auto where no probe can apply is the training loop, and says so
    assert live.runs[0]["result"]["head"]["fit"] == {"requested": "sgd", "method": "sgd"}


# ------------------------------------------------------------------------------------------------ identities


def _old_id(config: FinetuneConfig) -> str:
    """The study run id as computed before --fit existed: every option but the result-neutral ones."""
    added = {"fit", "seeds", "feature_norm"}  # options added since (at their neutral values here)
    return run_id("finetune", {k: v for k, v in config.to_dict().items() if k not in NOT_IDENTITY | added})


def test_sgd_runs_keep_their_identity_and_probe_runs_get_another():
    sgd = FinetuneConfig(task="rte", freeze="encoder", feature_norm="none", fit="sgd")  # the plain head of before
    assert FinetuneConfig(task="rte", freeze="encoder").selection.fit == "auto"  # frozen: the probe by default
    assert LayersConfig(task="rte", freeze="encoder").selection.fit == "auto"
    assert LayersConfig(task="rte").selection.fit == "sgd"  # a fine-tuned encoder: the training loop
    assert finetune_run_id(sgd) == _old_id(sgd)
    assert "fit" not in FINETUNE.identity(sgd.to_dict())
    unfrozen_auto = FinetuneConfig(task="rte", fit="auto")  # certainly the training loop: sgd, the old identity
    assert unfrozen_auto.selection.fit == "sgd" and finetune_run_id(unfrozen_auto) == _old_id(unfrozen_auto)
    assert LayersConfig(task="rte", head="mlp2", freeze="encoder").selection.fit == "sgd"
    for fit in ("auto", "converged"):
        probe = sgd.replace(fit=fit)
        assert finetune_run_id(probe) != finetune_run_id(sgd)
        assert FINETUNE.identity(probe.to_dict())["fit"] == fit


def test_a_frozen_study_does_not_resume_runs_trained_with_sgd(tiny, tmp_path, monkeypatch):
    """Runs stored by an sgd study are no probe runs: the default (auto) study trains them again; asked for sgd, it
    resumes them."""
    options = {**{k: v for k, v in tiny.items() if k != "max_train"}, "max_train": 40, "layers": "0,2",
               "out": str(tmp_path / "l")}
    api.layers(**options, fit="sgd")
    calls = []
    real = common.HeadRunner.run
    monkeypatch.setattr(common.HeadRunner, "run", lambda self, config, **kw: calls.append(config.selection.fit)
                        or real(self, config, **kw))
    probe = api.layers(**options)
    assert calls == ["auto", "auto"] and not any(r["resumed"] for r in probe.runs)
    calls.clear()
    again = api.layers(**options, fit="sgd")
    assert calls == [] and all(r["resumed"] for r in again.runs)


# ------------------------------------------------------------------------------------------------ the task's metric


def test_the_l2_strength_is_chosen_by_the_given_metric() -> None:
    # three-quarters of the rows are class 0 and the signal is weak: accuracy prefers the strong L2 (the majority
    # class), MCC a weaker one that predicts both classes
    x, y = _classes(400, 20, 2, seed=3, outlier=1.0)
    y = torch.where(torch.rand(400, generator=torch.Generator().manual_seed(1)) < 0.5, torch.zeros_like(y), y)
    from sklearn.metrics import matthews_corrcoef

    calls: list[int] = []

    def mcc(predictions: list, labels: list) -> float:
        calls.append(len(predictions))
        return float(matthews_corrcoef(labels, predictions))

    by_mcc = fit_probe(x, y, regression=False, num_classes=2, metric=mcc, metric_name="matthews_correlation")
    assert calls and all(n == by_mcc.holdout for n in calls) and len(calls) == len(by_mcc.grid)
    assert by_mcc.to_dict()["score"] == "matthews_correlation"
    keep, held = holdout_split(400, 0)
    for l2, score in by_mcc.grid:
        refit = fit_logistic(x[keep], y[keep], l2, num_classes=2)
        assert score == pytest.approx(mcc(refit.predict(x[held]).argmax(1).tolist(), y[held].tolist()), abs=1e-9)
    assert max(s for _, s in by_mcc.grid) == pytest.approx(dict(by_mcc.grid)[by_mcc.l2])
    assert fit_probe(x, y, regression=False, num_classes=2).to_dict()["score"] == "accuracy"


def test_the_pipeline_chooses_by_the_tasks_official_metric() -> None:
    from bertscope.data import glue
    from bertscope.finetune.converged import selection_metric

    assert selection_metric(glue.get_task("cola"))[0] == "matthews_correlation"
    assert selection_metric(glue.get_task("rte"))[0] == "accuracy"
    name, metric = selection_metric(glue.get_task("mrpc"))
    assert name == "combined_score"
    assert metric([1, 0, 1, 1], [1, 0, 0, 1]) == pytest.approx(
        (glue.f1_binary([1, 0, 1, 1], [1, 0, 0, 1]) + 0.75) / 2)


@pytest.mark.slow
def test_on_cola_the_probe_is_within_0_05_mcc_of_a_cross_validated_sklearn_probe(glue_dir, tmp_path) -> None:
    """CoLA, layer 3 of the embedded model, 3,000 training examples, frozen encoder: the converged probe (L2 chosen
    by held-out MCC) against scikit-learn's LogisticRegression on the same standardised features with C chosen by
    5-fold cross-validated MCC on the training split; dev MCC within 0.05."""
    from sklearn.metrics import matthews_corrcoef
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    config = FinetuneConfig(task="cola", layer="3", max_train=3000, freeze="encoder", fit="converged",
                            data_dir=str(glue_dir), cache_features=True, cache_dir=str(tmp_path / "cache"),
                            progress=False, log="off")
    run = prepare(config)
    result = run.result(run.train())
    assert result.head["fit"]["score"] == "matthews_correlation"
    ours = result.final["validation"]["matthews_correlation"]
    x, y = training_features(run)
    dev = run.data.eval_data["validation"]
    x_dev = run.trained_head.features(run.collate_fn(dev, range(len(dev)), regression=False).vectors).double()
    mean, std = standardise(x)
    search = GridSearchCV(sklearn_linear.LogisticRegression(max_iter=10000), {"C": np.logspace(-4, 2, 13)},
                          scoring="matthews_corrcoef", cv=StratifiedKFold(5, shuffle=True, random_state=0))
    search.fit(((x - mean) / std).numpy(), y.numpy())
    reference = matthews_corrcoef(np.asarray(dev.labels), search.predict(((x_dev - mean) / std).numpy()))
    print(f"CoLA layer 3, 3000 examples: probe MCC {ours:.4f}, scikit-learn (C={search.best_params_['C']:.3g}) "
          f"MCC {reference:.4f}")
    assert abs(ours - reference) <= 0.05
