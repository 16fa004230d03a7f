"""--feature-norm standardize: its statistics, and a frozen linear head that learns on outlier-dominated features
(the 'outlier dimension' of BERT-family vectors) where the plain head stays at the majority class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertscope.finetune.batching import EncodedSplit
from bertscope.finetune.evaluation import evaluate
from bertscope.finetune.features import CachedRepresentation, FeatureCollate
from bertscope.finetune.head import HeadSpec, SelectingHead
from bertscope.finetune.normalize import feature_moments, fit_standardizer
from bertscope.finetune.train import train_loop
from conftest import loop_options

HIDDEN = 16


def _split(vectors: torch.Tensor, labels: list[int]) -> EncodedSplit:
    n = len(labels)
    return EncodedSplit(task="sst2", input_ids=[[1, 2, 3]] * n, token_type_ids=None, special_masks=[[1, 0, 1]] * n,
                        labels=labels, idx=list(range(n)), pad_id=0)


def _outlier_data(n: int, seed: int) -> tuple[torch.Tensor, list[int]]:
    """[n, 1, H]: dimension 0 ~ 10.5 (300x the others, uninformative), the rest ~ N(0, 0.03); the label is the sign
    of a direction in the small dimensions, shifted so that 60% are class 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, HIDDEN, generator=g) * 0.03
    x[:, 0] = 10.5 + 0.01 * torch.randn(n, generator=g)
    score = x[:, 1] + 0.5 * x[:, 2] - 0.5 * x[:, 3]
    labels = (score > torch.quantile(score, 0.4)).long().tolist()
    return x.unsqueeze(1), labels


def _train(feature_norm: str, train: tuple[torch.Tensor, list[int]], dev: tuple[torch.Tensor, list[int]]) -> float:
    train_split, dev_split = _split(*train), _split(*dev)
    collate = FeatureCollate([(train_split, train[0]), (dev_split, dev[0])])
    spec = HeadSpec(num_labels=2, hidden_size=HIDDEN, layers=(4,), dims=tuple(range(HIDDEN)),
                    feature_norm=feature_norm)
    head = SelectingHead(spec, seed=0)
    represent = CachedRepresentation()
    if feature_norm == "standardize":
        fit_standardizer(head, represent, train_split, batch_size=64, device=torch.device("cpu"), collate_fn=collate)
    options = loop_options(epochs=5, batch_size=32, lr=2e-5, head_lr=1e-3, progress=False, log="off")
    train_loop(represent, head, train_split, {"validation": dev_split}, **options, encoder_params=[],
               device=torch.device("cpu"), collate_fn=collate)
    predictions = evaluate(represent, head, dev_split, batch_size=64, device=torch.device("cpu"), collate_fn=collate)
    return float(np.mean([int(p) == y for p, y in zip(predictions, dev[1])]))


def test_fit_standardizer_sets_the_training_splits_population_moments() -> None:
    vectors, labels = _outlier_data(200, seed=1)
    split = _split(vectors, labels)
    spec = HeadSpec(num_labels=2, hidden_size=HIDDEN, layers=(4,), dims=(0, 3, 7), feature_norm="standardize")
    head = SelectingHead(spec, seed=0)
    summary = fit_standardizer(head, CachedRepresentation(), split, batch_size=37, device=torch.device("cpu"),
                               collate_fn=FeatureCollate([(split, vectors)]))
    selected = vectors[:, 0, [0, 3, 7]].double().numpy()
    np.testing.assert_allclose(head.feature_mean.numpy(), selected.mean(0), rtol=1e-5)
    np.testing.assert_allclose(head.feature_std.numpy(), selected.std(0), rtol=1e-4)
    mean, std = feature_moments(torch.from_numpy(selected))
    np.testing.assert_allclose(mean.numpy(), selected.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), selected.std(0), rtol=1e-5)
    assert summary["examples"] == 200 and summary["mean_abs_max"] == pytest.approx(10.5, abs=0.01)
    assert head.training  # the head is left in the mode it was in


def test_standardize_learns_on_outlier_features_where_the_plain_head_stays_at_the_majority(one_thread) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train, dev = _outlier_data(2000, seed=2), _outlier_data(400, seed=3)
    majority = max(np.mean(dev[1]), 1 - np.mean(dev[1]))
    scaler = StandardScaler().fit(train[0][:, 0].numpy())
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(train[0][:, 0].numpy()), train[1])
    probe_accuracy = probe.score(scaler.transform(dev[0][:, 0].numpy()), dev[1])
    assert probe_accuracy > majority + 0.2  # the features hold the label
    plain = _train("none", train, dev)
    standardized = _train("standardize", train, dev)
    assert plain <= majority + 0.02, plain
    assert standardized > majority + 0.2 and standardized >= probe_accuracy - 0.12, (standardized, probe_accuracy)


def test_run_ids_keep_their_value_when_the_feature_norm_keeps_the_old_behaviour() -> None:
    """Runs stored before --feature-norm existed were plain heads: their ids must not change when the option
    resolves to none, and must change when it does not."""
    from bertscope.finetune.command import COMMAND
    from bertscope.finetune.config import FinetuneConfig
    from bertscope.studies.store import finetune_run_id

    def ids(**options: str) -> tuple[str, dict]:
        config = FinetuneConfig(task="rte", **options)
        return finetune_run_id(config), COMMAND.identity(config.to_dict())

    old_fine_tuning = ids(freeze="none", feature_norm="none")
    assert "feature_norm" not in old_fine_tuning[1]
    assert ids(freeze="none") == old_fine_tuning  # auto = none when fine-tuning
    frozen_plain = ids(freeze="encoder", feature_norm="none")
    frozen_auto = ids(freeze="encoder")
    assert frozen_auto == ids(freeze="encoder", feature_norm="standardize")  # auto is what it resolves to
    assert frozen_auto[0] != frozen_plain[0]  # not an old plain-head run
    assert frozen_auto[1]["feature_norm"] == "standardize"
    assert ids(freeze="none", feature_norm="layernorm")[0] != old_fine_tuning[0]
