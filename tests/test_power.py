"""`bertscope power`: the seeds a claim needs follow from its noise (checked against scipy), dev-size rows rescore
the study runs' stored predictions, and a tiny end-to-end study writes power.md/json with the replicate claims' rows."""

from __future__ import annotations

import json

import pytest
from scipy import stats as scipy_stats

from bertscope import api
from bertscope.core.sequential import LookPlan
from bertscope.data.glue import compute_metrics
from bertscope.replicate import claims as C
from bertscope.replicate.power import MAX_SEEDS, resampled, seeds_needed


def _plain_seeds(mean: float, std: float, margin: float) -> int | None:
    for n in range(2, MAX_SEEDS + 1):
        if scipy_stats.t.ppf(0.975, n - 1) * std / n ** 0.5 < margin:
            return n
    return None


@pytest.mark.parametrize(("mean", "std", "kind", "tolerance", "margin"), [
    (0.007, 0.0025, "as_good", 0.02, 0.013),   # tokens mean vs cls: inside the band
    (-0.13, 0.05, "worse", None, 0.13),        # freezing hurts
    (0.010, 0.014, "better", None, 0.010),     # deepen then fine-tune: small against its noise
    (-0.04, 0.01, "as_good", 0.02, 0.02),      # outside the band: "not supported" needs the same clearance
    (0.024, 0.014, "no_worse", 0.02, 0.044),   # above the reference: only the one bound at -0.02 counts
    (-0.011, 0.012, "no_worse", 0.02, 0.009),  # below it: the same clearance as the band's lower edge
])
def test_seeds_needed_is_the_first_n_whose_interval_clears_the_nearest_boundary(mean, std, kind, tolerance, margin):
    assert seeds_needed(mean, std, kind, tolerance) == _plain_seeds(mean, std, margin)
    looks = LookPlan((4, 8, 16))
    at_looks = seeds_needed(mean, std, kind, tolerance, looks)
    assert at_looks is None or at_looks in looks.looks
    if at_looks is not None:  # a look's interval is stricter than a plain 95% one at the same n
        assert at_looks >= (seeds_needed(mean, std, kind, tolerance) or MAX_SEEDS)


def test_a_mean_on_the_boundary_needs_more_than_any_affordable_number():
    assert seeds_needed(0.02, 0.01, "as_good", 0.02) is None and seeds_needed(0.0, 0.01, "better", None) is None
    assert seeds_needed(None, None, "better", None) is None


def test_resampled_rows_rescore_every_study_run_on_one_subset():
    labels = [0, 1] * 10
    records = [{"score": 0.5, "task": "rte", "selection": "all", "k": 384, "dev": {
        "labels": {"validation": labels}, "predictions": {"validation": [(i * s) % 2 for i in range(20)]}}}
        for s in (1, 2)]
    row = C.RunRow("dims-1", "dims", {"task": "rte", "seed": 1}, {}, {"runs": records, "config": {}},
                   ((({"dims": "all", "sample": 0}, 0.5)),))
    out, rescored = resampled([row], 8, seed=3)
    assert rescored == {"dims-1"}
    scores = [r["score"] for r in out[0].payload["runs"]]
    import numpy as np
    chosen = np.random.default_rng(3).choice(20, 8, replace=False)
    for record, score in zip(records, scores, strict=True):
        preds = record["dev"]["predictions"]["validation"]
        assert score == compute_metrics("rte", [preds[i] for i in chosen], [labels[i] for i in chosen])["combined_score"]
    assert out[0].points[0][1] == scores[0]
    short, none = resampled([row], 40)  # more examples than the dev set has: left as it was, and said so
    assert none == set() and short[0].payload["runs"][0]["score"] == 0.5


def test_power_end_to_end_on_a_tiny_model(tiny_checkpoint, glue_dir, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path / "cache"))
    model = str(tiny_checkpoint("bert", num_layers=2))
    result = api.power(paper="paper2", budget="test", model=model, settings="rte:8:1", seeds="1-2", dev_sizes="4,all", experiments="tokens,frozen",
                       data_dir=str(glue_dir), out=str(tmp_path / "out"), progress=False)
    assert result.exit_code == 0
    payload = json.loads((tmp_path / "out" / "power.json").read_text())
    rows = payload["rows"]
    claims = {(r["claim"], r["dev_examples"]) for r in rows}
    assert ("p2.freezing", None) in claims and ("p2.tokens", None) in claims
    assert ("p2.tokens", 4) in claims and ("p2.freezing", 4) not in claims  # finetune runs are not rescored
    at_all = {(r["scope"]): r["std"] for r in rows if r["claim"] == "p2.tokens" and r["dev_examples"] is None}
    at_4 = {(r["scope"]): r["std"] for r in rows if r["claim"] == "p2.tokens" and r["dev_examples"] == 4}
    assert at_4.keys() == at_all.keys()  # every token row also at 4 dev examples (values: the unit test above)
    for r in rows:
        assert r["seeds"] == 2 and r["setting"] == "rte, 8 train x 1 epoch"
        if r["std"] is not None and r["mean"] is not None:
            assert r["seeds_fixed"] == seeds_needed(r["mean"], r["std"], r["kind"], r["tolerance"])
    assert payload["seconds_per_seed"]["rte, 8 train x 1 epoch"] > 0
    assert "bertscope power paper2" in (tmp_path / "out" / "power.md").read_text()


@pytest.mark.parametrize("bad", ["sst2:1000", "sst2:x:1", "sst2:1000:0", "nope:100:1", "sst2:1:1"])
def test_settings_are_checked_in_one_line(bad):
    with pytest.raises(api.BertscopeError, match="--settings|task"):
        api.PowerConfig(paper="paper2", settings=bad)
