"""``--report-to``: each tracker's files read back with the tracker's own reader, against ``results.json``.

TensorBoard through ``EventAccumulator``, MLflow through ``MlflowClient`` on the local store, W&B offline through its
own record schema (``wandb_internal_pb2.Record``) on the run file. Runs are tiny: a 2-layer random BERT, 32 training
examples in batches of 8 (every batch full, so an epoch's mean loss is the plain mean of its step losses).
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from bertscope import api
from bertscope.cli import main
from bertscope.core.errors import BertscopeError
from bertscope.finetune.config import FinetuneConfig
from bertscope.finetune.tracking import (
    TRACKING_OPTIONS,
    default_run_name,
    epoch_metrics,
    flat_params,
    make_tracker,
    parse_report_to,
)
from bertscope.studies.config import CrossConfig
from conftest import PINNED_SPEC_IDS, PINNED_STAGE_ID, PINNED_STUDY_RUN_ID, pinned_spec_ids

SMALL = {"max_train": 32, "max_eval": 16, "batch_size": 8, "max_length": 32, "progress": False, "epochs": 2}
STEPS_PER_EPOCH = 32 // 8


@pytest.fixture(autouse=True)
def _tracker_env(monkeypatch):
    """Each tracker's defaults, whatever the machine's environment says."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def run(tiny_checkpoint, glue_dir, one_thread):
    def finetune(out: Path, **options: Any) -> dict[str, Any]:
        api.finetune(model=str(tiny_checkpoint("bert", 2)), task="rte", data_dir=str(glue_dir), out=str(out),
                     **{**SMALL, **options})
        return json.loads((out / "results.json").read_text())

    return finetune


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------------ tensorboard


def test_tensorboard_curves_equal_results_json_and_change_no_number(run, tmp_path):
    pytest.importorskip("tensorboard")
    plain = run(tmp_path / "plain")  # --report-to none (the default): no tracker files at all
    assert _files(tmp_path / "plain") == {"results.json", "predictions.csv", "status.json"}
    out = tmp_path / "tb"
    payload = run(out, report_to="tensorboard", log_every=2)
    folder = out / "tensorboard" / f"finetune-rte-{out.name}"  # the default run name
    scalars = _scalars(folder)
    total = STEPS_PER_EPOCH * SMALL["epochs"]
    loss = scalars["train/loss"]
    assert [s for s, _ in loss] == list(range(2, total + 1, 2))  # one point per logged step
    for epoch, record in enumerate(payload["epochs"], start=1):  # each point: the mean of its 2 steps' losses
        points = [v for s, v in loss if (epoch - 1) * STEPS_PER_EPOCH < s <= epoch * STEPS_PER_EPOCH]
        assert sum(points) / len(points) == pytest.approx(record["train_loss"], rel=1e-5)
    lr = dict(scalars["train/learning_rate"])
    assert [lr[e * STEPS_PER_EPOCH] for e in (1, 2)] == pytest.approx([r["learning_rate"] for r in payload["epochs"]])
    accuracy = scalars["eval/validation/accuracy"]  # at the optimizer step its epoch ended, as the loss
    assert accuracy == [(r["epoch"] * STEPS_PER_EPOCH, pytest.approx(r["eval"]["validation"]["accuracy"], rel=1e-6))
                        for r in payload["epochs"]]
    assert scalars["epoch"] == [(r["epoch"] * STEPS_PER_EPOCH, r["epoch"]) for r in payload["epochs"]]
    assert [v for _, v in scalars["train/epoch_loss"]] == pytest.approx([r["train_loss"] for r in payload["epochs"]])
    # the tracker is an observer: every number of the run is the one it has without it
    assert [(r["train_loss"], r["eval"]) for r in payload["epochs"]] == [(r["train_loss"], r["eval"])
                                                                        for r in plain["epochs"]]
    assert payload["config"]["report_to"] == "tensorboard" and payload["config"]["log_every"] == 2


def test_tensorboard_keeps_the_configuration_as_hyper_parameters(run, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "hp"
    run(out, report_to="tensorboard", run_name="named/run", epochs=1)
    events = EventAccumulator(str(out / "tensorboard" / "named" / "run"))  # a name's / parts become folders
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = next(plugin_data_pb2.HParamsPluginData.FromString(c).session_start_info for c in content.values()
                 if plugin_data_pb2.HParamsPluginData.FromString(c).HasField("session_start_info"))
    assert start.hparams["task"].string_value == "rte" and start.hparams["lr"].number_value == pytest.approx(2e-5)
    assert start.hparams["resolved.layers"].string_value == "2"


def test_a_tensorboard_run_started_again_under_its_name_replaces_its_curves(tmp_path):
    pytest.importorskip("tensorboard")
    for attempt, steps in ((1.0, 6), (2.0, 3)):  # e.g. finetune --overwrite into the same --out
        tracker = make_tracker("tensorboard", root=tmp_path)
        tracker.start({"attempt": attempt}, "again")
        for step in range(1, steps + 1):
            tracker.log_step(step, attempt, 0.1)
        tracker.log_epoch(1, {"eval/validation/accuracy": attempt}, step=steps)
        tracker.finish("finished")
    scalars = _scalars(tmp_path / "tensorboard" / "again")
    assert scalars["train/loss"] == [(1, 2.0), (2, 2.0), (3, 2.0)]
    assert scalars["eval/validation/accuracy"] == [(3, 2.0)]  # at the optimizer step, the second attempt only


# ------------------------------------------------------------------------------------------------ mlflow


def test_mlflow_local_store_and_a_comma_list_writes_both(run, tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "both"
    payload = run(out, report_to="tensorboard,mlflow", run_name="rte-both", log_every=3)
    assert (out / "tensorboard" / "rte-both").is_dir()
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bertscope")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "rte-both" and found.info.status == "FINISHED"
    params = found.data.params
    assert params["task"] == "rte" and float(params["lr"]) == payload["config"]["lr"]
    assert params["max_train"] == "32" and params["head_lr"] == "None"
    history = client.get_metric_history(found.info.run_id, "eval/validation/accuracy")
    assert sorted((m.step, m.value) for m in history) == [(r["epoch"] * STEPS_PER_EPOCH,
                                                            r["eval"]["validation"]["accuracy"])
                                                           for r in payload["epochs"]]
    steps = sorted(m.step for m in client.get_metric_history(found.info.run_id, "train/loss"))
    assert steps == list(range(3, STEPS_PER_EPOCH * SMALL["epochs"] + 1, 3))
    assert _scalars(out / "tensorboard" / "rte-both")["train/loss"][0][0] == 3  # TensorBoard got the same steps


def test_mlflow_honours_mlflow_tracking_uri(run, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "lab")
    run(tmp_path / "env", report_to="mlflow", epochs=1)
    assert not (tmp_path / "env" / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=uri)
    (found,) = client.search_runs([client.get_experiment_by_name("lab").experiment_id])
    assert found.info.run_name == "finetune-rte-env"


# ------------------------------------------------------------------------------------------------ wandb


def _wandb_records(path: Path) -> list[Any]:
    """The records of an offline W&B run file, parsed with W&B's own schema. The file is W&B's record log: a
    7-byte header, then 32 KiB blocks of chunks (crc32 4 bytes, length 2, type 1: full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos, block = [], b"", 7, 32 * 1024
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_wandb_offline_run_without_an_account(run, tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "wb"
    payload = run(out, report_to="wandb", log_every=4)
    (run_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    records = _wandb_records(run_file)
    (started,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert started.display_name == f"finetune-rte-{out.name}" and started.project == "bertscope"
    config = {item.key: json.loads(item.value_json) for item in started.config.update}
    assert config["task"] == "rte" and config["log_every"] == 4
    rows = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]
    assert [row["_step"] for row in rows if "train/loss" in row] == [4, 8]
    epochs = [row for row in rows if "epoch" in row]
    assert [(row["_step"], row["epoch"], row["eval/validation/accuracy"]) for row in epochs] == [
        (r["epoch"] * STEPS_PER_EPOCH, r["epoch"], pytest.approx(r["eval"]["validation"]["accuracy"]))
        for r in payload["epochs"]]  # the optimizer step, as TensorBoard and MLflow put it


# ------------------------------------------------------------------------------------------------ errors


class _Recorder:
    """A tracker that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def start(self, config: Any, name: str) -> None:
        self.calls.append(("start", name, config["task"]))

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.calls.append(("step", step))

    def log_epoch(self, epoch: int, metrics: Any, *, step: int) -> None:
        self.calls.append(("epoch", epoch, step))

    def finish(self, status: str) -> None:
        self.calls.append(("finish", status))


@pytest.mark.parametrize("error, status", [(None, "finished"), (RuntimeError, "failed"),
                                           (KeyboardInterrupt, "killed")])
def test_the_tracker_run_is_finished_with_the_runs_status(error, status, run, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")  # the option is checked as usual; the tracker made is the recorder
    from bertscope.finetune import pipeline

    recorder = _Recorder()
    monkeypatch.setattr(pipeline, "make_tracker", lambda report_to, root: recorder)
    if error is not None:
        def broken(*args: Any, **kwargs: Any) -> None:
            kwargs["callback"].on_step(1, 0.5, 1e-5)
            raise error("stop")

        monkeypatch.setattr(pipeline, "train_loop", broken)
        with pytest.raises(error):
            run(tmp_path / "out", report_to="tensorboard", run_name="r")
        assert recorder.calls == [("start", "r", "rte"), ("step", 1), ("finish", status)]
        return
    run(tmp_path / "out", report_to="tensorboard", run_name="r", log_every=3)
    assert recorder.calls == [("start", "r", "rte"), ("step", 3), ("epoch", 1, 4), ("step", 6), ("epoch", 2, 8),
                              ("finish", "finished")]


@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow", "wandb"])
def test_a_missing_tracker_package_is_one_line_naming_the_extra(tracker, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, tracker, None)  # `import <tracker>` fails, as when it is not installed
    code = main(["finetune", "--task", "rte", "--report-to", tracker,
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f'pip install "bertscope[{tracker}]"' in err and not (tmp_path / "out").exists()


def test_the_tracker_itself_fails_in_one_line_when_its_import_fails(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the package is there, its import is not
    with pytest.raises(BertscopeError, match=r'pip install "bertscope\[tensorboard\]"'):
        make_tracker("tensorboard", root=tmp_path)


def test_report_to_grammar_and_where_trackers_write():
    assert parse_report_to("none") == () and parse_report_to(" TensorBoard , mlflow ") == ("tensorboard", "mlflow")
    assert parse_report_to("all") == ("tensorboard", "mlflow", "wandb")
    assert parse_report_to("wandb,wandb") == ("wandb",)
    with pytest.raises(BertscopeError, match="unknown tracker 'trackio'"):
        parse_report_to("tensorboard,trackio")
    with pytest.raises(BertscopeError, match="--report-to tensorboard needs --out"):
        FinetuneConfig(task="rte", report_to="tensorboard")
    with pytest.raises(BertscopeError, match="--log-every must be at least 1"):
        FinetuneConfig(task="rte", log_every=0)
    with pytest.raises(BertscopeError, match="unknown tracker"):
        CrossConfig(tasks="rte,mrpc", report_to="neptune", out="x")
    assert default_run_name(FinetuneConfig(task="rte", out="runs/a1")) == "finetune-rte-a1"
    assert default_run_name(CrossConfig(tasks="rte,mrpc")) == "cross-rte+mrpc"
    assert epoch_metrics({"validation": {"accuracy": 0.5}}, 0.25) == {"eval/validation/accuracy": 0.5,
                                                                     "train/epoch_loss": 0.25}
    assert flat_params({"a": None, "b": [1, 2], "c": {"x": 1}, "d": 2.5}) == {"a": "None", "b": "1,2",
                                                                                "c": '{"x": 1}', "d": 2.5}


# ------------------------------------------------------------------------------------------------ identity


def test_tracker_options_change_no_run_id(tmp_path):
    """The pinned ids were computed before trackers existed: no tracker option moves them (sweep runs, study runs,
    cross stages)."""
    from bertscope.studies import cross
    from bertscope.studies.store import finetune_run_id

    def ids(extra: dict[str, Any]) -> list[str]:
        return pinned_spec_ids(tmp_path, extra)

    before = PINNED_SPEC_IDS
    assert ids({}) == before
    pytest.importorskip("tensorboard")
    assert ids({"report_to": "tensorboard", "run_name": "x", "log_every": 3}) == before
    config = FinetuneConfig(task="rte", max_train=64)
    tracked = config.replace(report_to="tensorboard", run_name="y", log_every=5, report_dir=str(tmp_path))
    for c in (config, tracked):
        assert finetune_run_id(c) == PINNED_STUDY_RUN_ID
    stage = cross._stage_id(CrossConfig(tasks="rte,mrpc", epochs=1, report_to="tensorboard", out="o"), 1)
    assert stage == PINNED_STAGE_ID
    assert api.COMMANDS["finetune"].not_identity >= TRACKING_OPTIONS
    assert all(api.COMMANDS[s].not_identity >= TRACKING_OPTIONS for s in ("dims", "layers", "tokens", "cross"))


# ------------------------------------------------------------------------------------------------ sweeps, studies


def test_a_sweep_run_is_named_by_its_run_id(tiny_checkpoint, glue_dir, tmp_path, one_thread):
    pytest.importorskip("tensorboard")
    from bertscope.sweep.executors import Task, execute

    out = tmp_path / "finetune-0123456789ab"
    options = {"model": str(tiny_checkpoint("bert", 2)), "task": "rte", "data_dir": str(glue_dir),
               "out": str(out), "report_to": "tensorboard", **SMALL, "epochs": 1}
    outcome = execute(Task("finetune-0123456789ab", "finetune", options))
    assert outcome.ok, outcome.error
    assert outcome.payload["config"]["run_name"] == "finetune-0123456789ab"
    assert _scalars(out / "tensorboard" / "finetune-0123456789ab")["eval/validation/accuracy"]
    given = execute(Task("finetune-0123456789ab", "finetune", {**options, "run_name": "mine"}))
    assert given.payload["config"]["run_name"] == "mine"  # a spec's own name is kept
    untracked = execute(Task("finetune-0123456789ab", "finetune", {**options, "report_to": "none"}))
    assert untracked.payload["config"]["run_name"] is None  # nothing reported: the stored options stay as given


def test_a_study_reports_one_tracker_run_per_point_on_cached_features(tiny_checkpoint, glue_dir, tmp_path,
                                                                      one_thread):
    pytest.importorskip("tensorboard")
    out = tmp_path / "study"
    options = {"model": str(tiny_checkpoint("bert", 2)), "task": "rte", "data_dir": str(glue_dir), "out": str(out),
               "freeze": "encoder", "cache_dir": str(tmp_path / "cache"), "layers": "1,2", "report_to": "tensorboard",
               **SMALL}
    result = api.layers(**options)
    assert all(r["cached"] for r in result.runs)
    study = out / "tensorboard" / "layers-rte-study"
    assert sorted(p.name for p in study.iterdir()) == ["layer_1", "layer_2"]
    for record in result.runs:
        curve = _scalars(study / record["run_id"].replace(" ", "_"))["eval/validation/accuracy"]
        assert [v for _, v in curve] == pytest.approx([e["eval"]["validation"]["accuracy"]
                                                       for e in record["result"]["epochs"]])
        assert record["result"]["config"]["run_name"] == f"layers-rte-study/{record['run_id']}"
    files = _files(study)
    api.layers(**options)  # resumed: nothing trains, so nothing new is reported
    assert _files(study) == files
