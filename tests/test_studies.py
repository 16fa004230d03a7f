"""The paper-2 studies: expected table rows, files, resuming without redoing runs, and agreement with plain finetune."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import transformers

from bertscope import api, cli
from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_hidden_states, parse_k_list
from bertscope.data import glue
from bertscope.finetune.head import HeadSpec, SelectingHead
from bertscope.studies import common, cross
from bertscope.studies.common import dim_importance
from bertscope.studies.dims import random_subset
from bertscope.studies.store import finetune_run_id
from conftest import study_records

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one thread


@pytest.fixture
def small(glue_dir, tmp_path):
    """Options of a tiny, fast study run (frozen encoder, cached features in a private cache)."""
    return dict(data_dir=str(glue_dir), max_train=32, max_eval=16, epochs=1, max_length=40, batch_size=8,
                progress=False, freeze="encoder", cache_dir=str(tmp_path / "cache"))


def _no_runs(*args, **kwargs):
    raise AssertionError("a finished run was trained again")


def test_layers_study_on_the_default_model(small, tmp_path, monkeypatch):
    out = tmp_path / "layers"
    result = api.layers(task="rte", dims="random:2", out=str(out), **small)
    assert [row["layer"] for row in result.table] == list(range(7))  # MiniLM-L6: layers 0..6
    assert len({tuple(r["dims"]) for r in result.runs}) == 1 and len(result.runs[0]["dims"]) == 2
    for name in ("layers.json", "layers.csv", "layers.png", "layers.svg", "layers.pdf", "runs.csv"):
        assert (out / name).is_file()
    assert {k: v.rsplit("/", 1)[-1] for k, v in result.files.items() if k in ("png", "svg", "pdf")} == {
        "png": "layers.png", "svg": "layers.svg", "pdf": "layers.pdf"}
    assert len(study_records(out)) == 7
    with open(out / "layers.csv") as handle:
        assert [int(r["layer"]) for r in csv.DictReader(handle)] == list(range(7))
    saved = json.loads((out / "layers.json").read_text())
    assert saved["complete"] and len(saved["runs"]) == 7 and saved["config"]["dims"] == "random:2"

    # One layer's run equals a plain, uncached finetune with the same options.
    plain = api.finetune(task="rte", dims="random:2", layer="4", fit="auto", **{**small, "cache_dir": None})
    assert result.table[4]["score"] == pytest.approx(plain.final_score, abs=1e-6)

    # Re-running resumes: nothing is trained again, the table is the same.
    monkeypatch.setattr(common.HeadRunner, "run", _no_runs)
    again = api.layers(task="rte", dims="random:2", out=str(out), **small)
    assert all(r["resumed"] for r in again.runs) and again.table == result.table


def test_layers_study_resumes_an_interrupted_scan(small, tiny_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "layers"
    options = dict(task="sst2", model=str(tiny_checkpoint("bert", 3)), out=str(out), **small)
    real = common.HeadRunner.run
    calls = []

    def stop_at_third(self, config, **kw):
        calls.append(config.selection.layer)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, config, **kw)

    monkeypatch.setattr(common.HeadRunner, "run", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        api.layers(**options)
    assert len(study_records(out)) == 2 and not (out / "layers.json").exists()
    calls.clear()
    monkeypatch.setattr(common.HeadRunner, "run", lambda self, config, **kw: calls.append(config.selection.layer)
                        or real(self, config, **kw))
    result = api.layers(**options)
    # the last layer is spelt -1 (finetune's default), so it is one run with the tokens study's reference
    assert calls == ["2", "-1"] and [r["layer"] for r in result.table] == [0, 1, 2, 3]


def test_dims_study_rows_and_variance_ranking(small, tiny_checkpoint, glue_dir, tmp_path):
    model = str(tiny_checkpoint("bert", 3))
    result = api.dims(task="sst2", model=model, k="1,2,all", samples=2, rank_by="variance", out=str(tmp_path / "d"),
                      **{**small, "freeze": "none"})  # full fine-tuning runs; the ranking reads the pretrained model
    assert not any(r["cached"] for r in result.runs)
    assert [(r["selection"], r["k"], r["n"]) for r in result.table] == [
        ("all", 32, 1), ("random", 1, 2), ("random", 2, 2), ("variance", 1, 1), ("variance", 2, 1)]
    randoms = [r for r in result.runs if r["selection"] == "random"]
    assert all(len(r["dims"]) == r["k"] for r in randoms)
    assert randoms[0]["dims"] != randoms[1]["dims"]  # two seeded samples of K=1
    for row in result.table:
        scores = [r["score"] for r in result.runs if r["selection"] == row["selection"] and r["k"] == row["k"]]
        assert row["mean"] == pytest.approx(np.mean(scores)) and row["std"] == pytest.approx(
            np.std(scores, ddof=1) if len(scores) > 1 else 0.0)

    # Independent reference for the ranking: variance of the HF model's own final-layer [CLS] vectors.
    split = glue.load_split("sst2", "train", glue_dir, 32, 0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    encoder = transformers.AutoModel.from_pretrained(model).eval()
    with torch.no_grad():
        cls = torch.cat([encoder(**tokenizer(ex.texts[0], truncation=True, max_length=40, return_tensors="pt"))
                         .last_hidden_state[:, 0] for ex in split.examples])
    variance = cls.double().var(dim=0)
    ranking = result.summary["ranking"]
    assert ranking[0] == int(variance.argmax())
    assert variance[ranking[:5]].min() >= variance[ranking[5:]].max() - 1e-9
    assert [r["dims"] for r in result.runs if r["selection"] == "variance"] == [[ranking[0]], sorted(ranking[:2])]


def test_dims_study_weights_ranking_uses_the_full_run(small, tiny_checkpoint, tmp_path):
    result = api.dims(task="rte", model=str(tiny_checkpoint("bert", 3)), k="4", samples=1, rank_by="weights",
                      out=str(tmp_path / "w"), **small)
    full = next(r for r in result.runs if r["selection"] == "all")
    importance = full["dim_importance"]
    top = sorted(range(len(importance)), key=lambda d: -importance[d])[:4]
    assert next(r for r in result.runs if r["selection"] == "weights")["dims"] == sorted(top)
    assert {r["selection"] for r in result.runs} == {"all", "random", "weights"}  # random stays as the control


def test_dim_importance_closed_form():
    spec = HeadSpec(num_labels=2, hidden_size=6, layers=(1, 2), dims=(4, 0), dropout=0.0)
    head = SelectingHead(spec)
    with torch.no_grad():
        head.classifier.weight.copy_(torch.tensor([[3.0, 0.0, 1.0, 2.0], [4.0, 0.0, 0.0, 0.0]]))
    # inputs are layer-major: (layer 1, dim 4), (layer 1, dim 0), (layer 2, dim 4), (layer 2, dim 0)
    assert dim_importance(head) == pytest.approx([0.0 + 2.0, 0, 0, 0, 5.0 + 1.0, 0])


def test_find_effective_marks_and_pairs(small, tiny_checkpoint, tmp_path):
    result = api.dims(task="stsb", model=str(tiny_checkpoint("bert", 3)), find_effective=True, start=3,
                      start_subsets=2, hurt_threshold=0.0, max_pairs=0, out=str(tmp_path / "e"), **small)
    summary = result.summary
    by_dims = {tuple(r["dims"]): r["score"] for r in result.runs}
    for subset, marked in zip(summary["starts"], summary["marked_by_start"]):
        base = by_dims[tuple(subset)]
        expected = [d for d in subset if by_dims[tuple(x for x in subset if x != d)] < base]
        assert marked == expected
    union = sorted({d for m in summary["marked_by_start"] for d in m})
    assert summary["pairs"] == [[a, b] for i, a in enumerate(union) for b in union[i + 1:]]
    reference = np.mean(summary["start_scores"])
    assert summary["verified_pairs"] == [p for p in summary["pairs"] if by_dims[tuple(p)] >= reference]
    assert summary["effective_dims"] == sorted({d for p in summary["verified_pairs"] for d in p})
    assert {row["dim"] for row in result.table} == {d for s in summary["starts"] for d in s}
    assert all((tmp_path / "e" / f"dims.{fmt}").is_file() for fmt in ("png", "svg", "pdf"))


def test_tokens_study_matches_plain_finetune(small, tiny_checkpoint, tmp_path):
    model = str(tiny_checkpoint("roberta", 3))
    result = api.tokens(task="mrpc", model=model, tokens="cls,max-norm,mean,max,index:1,index:-1",
                        out=str(tmp_path / "t"), **small)
    assert [r["token_strategy"] for r in result.table] == ["cls", "max-norm", "mean", "max", "index:1", "index:-1"]
    assert all(r["cached"] for r in result.runs)
    plain = api.finetune(task="mrpc", model=model, token="max", fit="auto", **{**small, "cache_dir": None})
    assert result.table[3]["score"] == pytest.approx(plain.final_score, abs=1e-6)


def test_study_option_errors(small, capsys):
    with pytest.raises(BertscopeError, match="--k"):
        api.dims(task="sst2", dims="random:2", **small)
    with pytest.raises(BertscopeError, match="out of range"):
        api.layers(task="rte", layers="0,9", **small)
    with pytest.raises(BertscopeError, match="at least two"):
        api.cross(tasks="sst2", data_dir=small["data_dir"])
    with pytest.raises(BertscopeError, match="disjoint"):
        cross.assign_dims("random:200", "disjoint", 2, 384, 0)
    assert parse_k_list("all,2,2,1", 8) == (1, 2, 8)
    assert parse_hidden_states("-1,0-2", 6, default_all=True) == (0, 1, 2, 6)
    assert random_subset(100, 5, 0, 1) == random_subset(100, 5, 0, 1) != random_subset(100, 5, 0, 2)
    with pytest.raises(BertscopeError, match="use --tokens"):
        api.tokens(task="rte", token="mean")
    assert cli.main(["layers", "--task", "rte", "--layers", "0,99", "--data-dir", small["data_dir"]]) == 2
    err = capsys.readouterr().err
    assert "out of range" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------ cross


CROSS = dict(max_train=24, max_eval=16, epochs=1, max_length=32, batch_size=8, progress=False)


def test_cross_frozen_encoder_keeps_earlier_scores(glue_dir, tiny_checkpoint, tmp_path):
    """With every layer frozen nothing carries over, so A's score after stage B must equal its own-stage score:
    a closed-form check that A is evaluated with A's own head and dimensions."""
    result = api.cross(tasks="rte,stsb,mrpc", model=str(tiny_checkpoint("bert", 3)), freeze="layers:0-3",
                       dims_per_task="random:3", single_task=False, data_dir=str(glue_dir), out=str(tmp_path / "c"),
                       **CROSS)
    table = result.table
    assert [row["trained_on"] for row in table] == ["rte", "stsb", "mrpc"]
    for s, row in enumerate(table):
        for t, task in enumerate(["rte", "stsb", "mrpc"]):
            assert (row[task] is None) == (t > s)  # every seen task has a cell
    assert table[1]["rte"] == table[0]["rte"] and table[2]["rte"] == table[0]["rte"]
    assert table[2]["stsb"] == table[1]["stsb"]
    dims = result.summary["dims"]
    assert len({d for v in dims.values() for d in v}) == 9  # disjoint
    assert all(v == 0 for v in result.summary["forgetting"].values())
    for name in ("cross.json", "cross.csv", "cross.png", "cross.svg", "cross.pdf"):
        assert (tmp_path / "c" / name).is_file()


def test_cross_stage_one_equals_single_task_and_resumes(glue_dir, tiny_checkpoint, tmp_path, monkeypatch):
    options = dict(tasks="rte,mrpc", model=str(tiny_checkpoint("bert", 3)), dims_per_task="random:4", lr=1e-3,
                   earlier_heads="retrain", data_dir=str(glue_dir), **CROSS)
    full = api.cross(out=str(tmp_path / "full"), **options)
    single = {r["task"]: r for r in full.runs if r.get("kind") == "single"}
    stage1 = next(r for r in full.runs if r.get("stage") == 1)
    assert stage1["score"] == pytest.approx(single["rte"]["score"], abs=1e-6)
    assert stage1["train_loss"] == pytest.approx([e["train_loss"] for e in single["rte"]["result"]["epochs"]])
    # each stage's head is checked as a fine-tuning run's is: the same training, the same verdict
    assert stage1["learned"] == single["rte"]["learned"]
    assert stage1["learning"] == pytest.approx(single["rte"]["result"]["learning"])
    assert full.summary["matrix_retrained_heads"][1]["rte"] is not None

    # Interrupt during stage 2, then resume from the stage-1 checkpoint: the same matrix, stage 1 not retrained.
    from bertscope.finetune.pipeline import PreparedRun

    real, calls = PreparedRun.train, []

    def interrupt(self):  # the single-task runs train first (rte, mrpc), then stage 1 (rte), then stage 2 (mrpc)
        calls.append((self.config.data.task, self.cached))
        if calls.count(("mrpc", False)) == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(PreparedRun, "train", interrupt)
    with pytest.raises(KeyboardInterrupt):
        api.cross(out=str(tmp_path / "resumed"), **options)
    assert (tmp_path / "resumed" / "checkpoint" / "state.json").is_file()
    calls.clear()
    monkeypatch.setattr(PreparedRun, "train", lambda self: calls.append((self.config.data.task, self.cached)) or real(self))
    resumed = api.cross(out=str(tmp_path / "resumed"), **options)
    assert calls == [("mrpc", False), ("rte", True)]  # stage 2, then rte's retrained head
    for a, b in zip(resumed.table, full.table):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float):
                assert value == pytest.approx(b[key], abs=1e-6)
    assert not (tmp_path / "resumed" / "checkpoint").exists()


def test_a_cross_stage_whose_head_did_not_learn_is_flagged(glue_dir, tiny_checkpoint, tmp_path):
    """A stage trained at a rate that moves nothing is a head that did not learn: its record says so, and the
    study's count of such runs (what replicate's cross claim reads) includes it."""
    result = api.cross(tasks="rte,mrpc", model=str(tiny_checkpoint("bert", 2)), dims_per_task="random:4",
                       single_task=False, data_dir=str(glue_dir), out=str(tmp_path / "c"),
                       **{**CROSS, "max_train": 16, "batch_size": 16, "lr": 1e-9, "head_lr": 1e-9})
    stages = [r for r in result.runs if r.get("kind") == "stage"]
    assert len(stages) == 2 and not any(r["learned"] for r in stages)
    assert all(r["learning"]["reason"] for r in stages)
    assert result.metrics()["runs_not_learned"] == 2


def test_data_dir_is_not_identity(small, tiny_checkpoint, glue_dir, tmp_path, monkeypatch):
    """Moving the GLUE folder names the same runs: the study resumes from its store without training."""
    out = tmp_path / "layers"
    options = dict(task="sst2", model=str(tiny_checkpoint("bert", 2)), out=str(out), **small)
    first = api.layers(**options)
    monkeypatch.setattr(common.HeadRunner, "run", _no_runs)
    moved = tmp_path / "glue-moved"
    moved.symlink_to(glue_dir, target_is_directory=True)
    again = api.layers(**{**options, "data_dir": str(moved)})
    assert [r["score"] for r in again.table] == [r["score"] for r in first.table]
    assert all(r["resumed"] for r in again.runs)


def test_a_study_folder_is_a_store_that_status_report_and_retry_failed_read(small, tiny_checkpoint, tmp_path,
                                                                            monkeypatch):
    """A study keeps its runs in OUT/runs.db, the kind of store a sweep writes: `status` and `report` read it, a
    failed run stops the study and is named on the next start, and --retry-failed runs it again."""
    from bertscope.runs.store import ResultStore, study_store
    from bertscope.studies.layers import COMMAND as LAYERS

    out = tmp_path / "layers"
    options = dict(task="sst2", model=str(tiny_checkpoint("bert", 2)), out=str(out), **small)
    real = common.HeadRunner.run

    def fail_layer_1(self, config, **kw):
        if config.selection.layer == "1":
            raise RuntimeError("out of memory, say")
        return real(self, config, **kw)

    monkeypatch.setattr(common.HeadRunner, "run", fail_layer_1)
    with pytest.raises(RuntimeError, match="out of memory"):
        api.layers(**options)
    with ResultStore(study_store(out), create=False) as store:
        by_status = {r.label: r.status for r in store.records(sweep="layers")}
        failed = store.records(status="failed")[0]
    assert by_status == {"layer 0": "done", "layer 1": "failed", "layer 2": "pending"}
    assert failed.error == "out of memory, say" and "RuntimeError" in (failed.traceback or "")
    assert failed.id == finetune_run_id(common.finetune_config(LAYERS.config(**options), layer="1"))
    status = api.status(store=str(study_store(out)))
    assert status.by_sweep == {"layers": {"pending": 1, "running": 0, "done": 1, "failed": 1}}
    assert status.failed[0]["error"] == "out of memory, say"

    # the next start names the failed run instead of training it again; --retry-failed does
    monkeypatch.setattr(common.HeadRunner, "run", _no_runs)
    with pytest.raises(BertscopeError, match="layers run 'layer 1' .* failed earlier: out of memory, say; pass "
                                             "--retry-failed"):
        api.layers(**options)
    calls = []
    monkeypatch.setattr(common.HeadRunner, "run", lambda self, config, **kw: calls.append(config.selection.layer)
                        or real(self, config, **kw))
    result = api.layers(**options, retry_failed=True)
    assert calls == ["1", "-1"] and [r["resumed"] for r in result.runs] == [True, False, False]
    assert api.status(store=str(study_store(out))).counts == {"pending": 0, "running": 0, "done": 3, "failed": 0}
    report = api.report(store=str(study_store(out)), out=str(tmp_path / "report"))
    assert report.experiments == ("layers",) and report.counts["done"] == 3
    assert "layer" in (tmp_path / "report" / "report.md").read_text()

    # --overwrite starts over: a fresh store, every run trained again
    calls.clear()
    api.layers(**options, overwrite=True)
    assert calls == ["0", "1", "-1"]


# ------------------------------------------------------------------------------------------------ seeds


def _stored(out):
    """Every run record of the study's store, read back from disk (independent of the study's own bookkeeping)."""
    return study_records(out)


def test_tokens_default_list_includes_mean():
    from bertscope.core.options import parse_token_list
    from bertscope.studies.config import TokensConfig

    assert "mean" in parse_token_list(TokensConfig.tokens)  # the embedded model was trained with mean pooling


def test_tokens_study_over_seeds_intervals_pairs_and_resume(small, tiny_checkpoint, tmp_path, monkeypatch):
    from bertscope.core import stats

    out = tmp_path / "seeds"
    options = dict(task="rte", model=str(tiny_checkpoint("bert", 2)), tokens="cls,mean", out=str(out), **small)
    result = api.tokens(seeds="1,2", **options)
    stored = _stored(out)
    assert sorted((r["token_strategy"], r["seed"]) for r in stored) == [("cls", 1), ("cls", 2), ("mean", 1),
                                                                       ("mean", 2)]
    score = {(r["token_strategy"], r["seed"]): r["score"] for r in stored}
    for row in result.table:
        expected = stats.summarize([score[(row["token_strategy"], s)] for s in (1, 2)])
        assert (row["score"], row["std"], row["n"]) == (pytest.approx(expected.mean), pytest.approx(expected.std), 2)
        assert (row["low"], row["high"]) == (pytest.approx(expected.low), pytest.approx(expected.high))
    mean_row = next(r for r in result.table if r["token_strategy"] == "mean")
    differences = [score[("mean", s)] - score[("cls", s)] for s in (1, 2)]  # paired by seed
    paired = stats.summarize(differences)
    assert mean_row["vs_cls"] == pytest.approx(paired.mean)
    assert (mean_row["vs_cls_low"], mean_row["vs_cls_high"]) == (pytest.approx(paired.low), pytest.approx(paired.high))
    assert mean_row["vs_cls_verdict"] == stats.verdict(paired, "no_worse", 0.01)
    assert result.summary["comparisons"][0]["verdict"] in stats.VERDICTS
    assert next(r for r in result.table if r["token_strategy"] == "cls")["vs_cls"] is None  # the reference itself
    assert "low" in (out / "tokens.csv").read_text().splitlines()[0]

    # A single-seed study with --seed 1 is seed 1 of the multi-seed one (same hashes): nothing trains, and its
    # one-seed comparison is a bootstrap over the dev examples the records kept.
    trained = []
    real = common.HeadRunner.run
    monkeypatch.setattr(common.HeadRunner, "run", lambda self, config, **kw: trained.append(config.encoder.seed)
                        or real(self, config, **kw))
    single = api.tokens(seed=1, **options)
    assert trained == [] and [r["n"] for r in single.table] == [1, 1]
    comparison = single.summary["comparisons"][0]
    assert comparison["method"] == "bootstrap" and comparison["difference"]["low"] is not None
    assert comparison["difference"]["mean"] == pytest.approx(differences[0])

    # More seeds: only the new seed trains.
    more = api.tokens(seeds="1,2,3", **options)
    assert trained == [3, 3] and [r["n"] for r in more.table] == [3, 3]


def test_dims_study_over_seeds_pairs_k_with_all(small, tiny_checkpoint, tmp_path):
    from bertscope.core import stats

    out = tmp_path / "dims-seeds"
    result = api.dims(task="sst2", model=str(tiny_checkpoint("bert", 2)), k="1", samples=2, seeds="0,1",
                      out=str(out), **small)
    stored = _stored(out)
    assert len(stored) == 2 * (1 + 2)  # per seed: all + two random subsets of K=1
    full = {r["seed"]: r["score"] for r in stored if r["selection"] == "all"}
    subsets = {s: [r for r in stored if r["selection"] == "random" and r["seed"] == s] for s in (0, 1)}
    assert subsets[0][0]["dims"] != subsets[1][0]["dims"] or subsets[0][1]["dims"] != subsets[1][1]["dims"]
    per_seed = {s: np.mean([r["score"] for r in subsets[s]]) for s in (0, 1)}
    row = next(r for r in result.table if r["selection"] == "random")
    expected = stats.summarize([per_seed[0], per_seed[1]])
    assert row["seeds"] == 2 and (row["low"], row["high"]) == (pytest.approx(expected.low), pytest.approx(expected.high))
    paired = stats.summarize([per_seed[s] - full[s] for s in (0, 1)])
    assert row["vs_all"] == pytest.approx(paired.mean) and row["vs_all_low"] == pytest.approx(paired.low)
    assert row["vs_all_verdict"] == stats.verdict(paired, "no_worse", 0.01)
    assert result.summary["full_score"] == pytest.approx(np.mean(list(full.values())))


def test_study_points_with_seeds_keep_one_point_per_run():
    from bertscope.studies import layers, tokens

    runs = [{"layer": 1, "seed": s, "score": 0.5 + s / 10, "token_strategy": "cls"} for s in (1, 2)]
    payload = {"config": {"seeds": "1,2"}, "runs": runs, "table": [{"layer": 1, "score": 0.65}]}
    points = layers.COMMAND.study_points
    assert points is not None and tokens.COMMAND.study_points is not None
    assert points(payload) == [({"layer": 1, "seed": 1}, 0.6), ({"layer": 1, "seed": 2}, 0.7)]
    assert [p[0]["seed"] for p in tokens.COMMAND.study_points(payload)] == [1, 2]
    assert points({**payload, "config": {}}) == [({"layer": 1}, 0.65)]  # one seed: the table, as before


def test_find_effective_whose_starts_all_stalled_says_so(small, tiny_checkpoint, tmp_path):
    result = api.dims(task="sst2", model=str(tiny_checkpoint("bert", 3)), find_effective=True, start=2,
                      start_subsets=2, head_lr=1e-9, fit="sgd", out=str(tmp_path / "stalled"),
                      **small)  # sgd heads at lr 1e-9 cannot move (a converged probe would learn)
    assert all(r["learned"] is False for r in result.runs)
    assert result.summary["starts_learned"] == 0
    assert "no starting subset learned" in result.title and "none found" not in result.title
    assert result.metrics()["runs_not_learned"] == len(result.runs)


def test_a_new_one_axis_study_is_one_declaration(small, tiny_checkpoint, tmp_path):
    """An axis declared here (the hidden layer again, under another name) runs through the one generic function:
    its runs, table and report points are the layers study's, under its own run ids and files."""
    from bertscope.studies.axis import Axis, run_axis
    from bertscope.studies.config import LayersConfig
    from bertscope.studies.layers import LAYERS

    depth = Axis(study="depth", option="layer", column="depth", word="depth",
                 values=lambda config: [1, 2], reference=lambda values: values[0], versus="vs_first",
                 tokens=lambda config, values: [config.selection.token],
                 fixed=lambda config: f"token {config.selection.token}",
                 context=lambda config, records: {"token": config.selection.token}, plot="bars", what="score by depth",
                 xlabel="depth", label="head at this depth", note="depth", heading="score by depth")
    options = dict(task="sst2", model=str(tiny_checkpoint("bert", 2)), **small)
    mine = run_axis(depth, LayersConfig(out=str(tmp_path / "depth"), **options))
    theirs = run_axis(LAYERS, LayersConfig(out=str(tmp_path / "layers"), layers="1,2", **options))
    assert [r["depth"] for r in mine.table] == [1, 2] and mine.summary["best_depth"] in (1, 2)
    assert [r["score"] for r in mine.table] == pytest.approx([r["score"] for r in theirs.table])
    from bertscope.runs.store import ResultStore, study_store

    with ResultStore(study_store(tmp_path / "depth"), create=False) as store:
        assert sorted(str(r.label) for r in store.records()) == ["depth 1", "depth 2"]
    assert mine.table[1]["vs_first"] is not None and "vs_last" not in mine.table[0]
    assert (tmp_path / "depth" / "depth.json").is_file() and (tmp_path / "depth" / "depth.png").is_file()
    payload = json.loads((tmp_path / "depth" / "depth.json").read_text())
    assert depth.points(payload) == [({"layer": r["depth"]}, r["score"]) for r in mine.table]
    assert depth.section().axis == "layer" and depth.section().kind == "bars" and depth.section().points is not None


def _tokens_then_count(small, tiny_checkpoint, tmp_path, monkeypatch, field):
    """A sweep's tokens study (cls, mean) on a 3-layer model, then every head trained afterwards recorded by the
    selection ``field`` it was given: (options, the tokens result, the calls)."""
    options = dict(task="sst2", model=str(tiny_checkpoint("bert", 3)), **{**small, "freeze": "none"})
    tokens = api.tokens(tokens="cls,mean", out=str(tmp_path / "sweep-runs" / "tokens-0123456789ab"), **options)
    calls: list[str] = []
    real = common.HeadRunner.run
    monkeypatch.setattr(common.HeadRunner, "run", lambda self, config, **kw: calls.append(
        getattr(config.selection, field)) or real(self, config, **kw))
    return options, tokens, calls


def test_a_sibling_study_s_finished_run_of_the_same_identity_is_reused_not_run_again(small, tiny_checkpoint,
                                                                                   tmp_path, monkeypatch):
    options, tokens, calls = _tokens_then_count(small, tiny_checkpoint, tmp_path, monkeypatch, "dims")
    dims = api.dims(k="2,all", samples=1, out=str(tmp_path / "sweep-runs" / "dims-0123456789ab"), **options)
    assert len(calls) == 1 and calls[0] != "all"  # "all" is the tokens study's [CLS] run: same options, same identity
    reused = next(r for r in dims.runs if r["selection"] == "all")
    cls = next(r for r in tokens.runs if r["token"] == "cls")
    assert reused["score"] == cls["score"] and reused["reused_from"].endswith("tokens-0123456789ab")
    assert reused["k"] == 32 and reused["run_id"] != cls["run_id"]  # this study's own columns
    calls.clear()
    other = api.dims(k="all", samples=1, out=str(tmp_path / "sweep-runs" / "dims-ba9876543210"),
                     **{**options, "seed": 7})
    assert calls == ["all"] and "reused_from" not in other.runs[0]  # another seed is another run
    calls.clear()
    mine = api.dims(k="all", samples=1, out=str(tmp_path / "sweep-runs" / "my-dims"), **options)
    assert calls == ["all"] and "reused_from" not in mine.runs[0]  # a user's own folder: never mixed with others


def test_the_layers_study_s_last_layer_is_the_tokens_study_s_run(small, tiny_checkpoint, tmp_path, monkeypatch):
    from bertscope.replicate.cost import computed_share, model_shape

    options, tokens, calls = _tokens_then_count(small, tiny_checkpoint, tmp_path, monkeypatch, "layer")
    out = tmp_path / "sweep-runs" / "layers-0123456789ab"
    layers = api.layers(layers="2,3", token="mean", out=str(out), **options)
    assert calls == ["2"]  # layer 3 of 3 is the tokens study's "mean" run (spelt -1 there): one identity, reused
    last = next(r for r in layers.runs if r["layer"] == 3)
    assert last["score"] == next(r for r in tokens.runs if r["token"] == "mean")["score"]
    assert last["reused_from"].endswith("tokens-0123456789ab")
    # the compute the layers run did itself: layer 2's head (through 2 of 3 layers), not the reused last layer's
    assert computed_share("layers", {"out": str(out)}, model_shape(options["model"])) == pytest.approx(2 / 5)
    assert computed_share("tokens", {"out": str(tmp_path / "sweep-runs" / "tokens-0123456789ab")},
                          model_shape(options["model"])) == 1.0


def test_a_narrowed_study_run_scores_its_arms_as_the_whole_run_does(small, tiny_checkpoint, tmp_path):
    """Adaptive seeds narrow a later round's study runs to the arms still open (--tokens, --layers): each arm is
    its own seeded run, so it keeps its id and its score."""
    model = str(tiny_checkpoint("bert", 2))
    options = {**small, "freeze": "none", "cache_dir": None}  # the encoder fine-tuned, as in replicate

    def arms(result, key):
        return {str(r[key]): (r["run_id"], r["score"]) for r in result.runs}

    whole = arms(api.tokens(task="rte", model=model, tokens="cls,mean,index:1", out=str(tmp_path / "t1"),
                            **options), "token_strategy")
    narrow = arms(api.tokens(task="rte", model=model, tokens="cls,index:1", out=str(tmp_path / "t2"), **options),
                  "token_strategy")
    assert narrow == {k: whole[k] for k in ("cls", "index:1")}
    whole = arms(api.layers(task="rte", model=model, out=str(tmp_path / "l1"), **options), "layer")
    narrow = arms(api.layers(task="rte", model=model, layers="1,2", out=str(tmp_path / "l2"), **options), "layer")
    assert narrow == {k: whole[k] for k in ("1", "2")} and len(whole) == 3
