"""finetune --seeds: one ordinary finetune folder per seed, seeds.json with each metric's interval, resume."""

from __future__ import annotations

import json

import pytest

from bertscope import cli
from bertscope.core import stats
from bertscope.core.errors import BertscopeError
from bertscope.finetune.command import run_finetune
from bertscope.finetune.config import FinetuneConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_finetune_seeds_writes_a_folder_per_seed_and_intervals(glue_dir, tiny_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "ft"
    argv = ["finetune", "--task", "rte", "--model", str(tiny_checkpoint("bert", 2)), "--data-dir", str(glue_dir),
            "--max-train", "16", "--max-eval", "16", "--epochs", "1", "--max-length", "32", "--batch-size", "8",
            "--freeze", "encoder", "--no-progress", "--log", "off", "--out", str(out)]
    assert cli.main([*argv, "--seeds", "1,2"]) == 0
    results = {s: json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (1, 2)}
    assert [results[s]["config"]["seed"] for s in (1, 2)] == [1, 2]
    assert all((out / f"seed-{s}" / "predictions.csv").is_file() for s in (1, 2))
    summary = json.loads((out / "seeds.json").read_text())
    expected = stats.summarize([results[s]["final_score"] for s in (1, 2)])
    got = summary["metrics"]["final.score"]
    assert got["n"] == 2 and got["mean"] == pytest.approx(expected.mean)
    assert (got["low"], got["high"]) == (pytest.approx(expected.low), pytest.approx(expected.high))
    accuracy = [results[s]["final"]["validation"]["accuracy"] for s in (1, 2)]
    assert summary["metrics"]["final.validation.accuracy"]["std"] == pytest.approx(stats.summarize(accuracy).std)

    # a third seed trains only that seed; the finished ones are read back
    import bertscope.finetune.command as finetune

    calls = []
    real = finetune.run_finetune
    monkeypatch.setattr(finetune, "run_finetune", lambda config: calls.append(config.encoder.seed) or real(config))
    assert cli.main([*argv, "--seeds", "1,2,3"]) == 0
    summary = json.loads((out / "seeds.json").read_text())
    assert calls == [3] and summary["reused"] == [1, 2] and summary["metrics"]["final.score"]["n"] == 3

    # each seed is a run of the store OUT/runs.db, under the id a sweep's finetune run with that seed has
    from bertscope import api
    from bertscope.runs.store import ResultStore
    from bertscope.sweep.spec import parse_spec

    assert api.status(store=str(out / "runs.db")).by_sweep == {"seeds": {"pending": 0, "running": 0, "done": 3,
                                                                          "failed": 0}}
    options = {k: results[1]["config"][k] for k in ("task", "model", "max_train", "max_eval", "epochs",
                                                     "max_length", "batch_size", "freeze")}
    sweep = parse_spec({"command": "finetune", "base": options, "grid": {"seed": [1, 2, 3]}}, runs_dir=tmp_path).runs
    with ResultStore(out / "runs.db", create=False) as store:
        stored = {r.axes["seed"]: r for r in store.records(sweep="seeds")}
        assert {s: r.id for s, r in stored.items()} == {r.options["seed"]: r.id for r in sweep}
        assert store.payload(stored[1].id)["final_score"] == results[1]["final_score"]


def test_finetune_seeds_option_errors(glue_dir):
    with pytest.raises(BertscopeError, match="twice"):
        FinetuneConfig(task="rte", seeds="1,1")
    with pytest.raises(BertscopeError, match="--seeds"):
        run_finetune(FinetuneConfig(task="rte", seeds="1,2", data_dir=str(glue_dir)))
