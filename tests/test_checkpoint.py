"""Checkpoints and exact resume: an interrupted run, resumed, ends with the numbers of one that never stopped."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bertscope import api
from bertscope.cli import main
from bertscope.core.errors import BertscopeError
from bertscope.finetune.checkpoint import Checkpointer
from bertscope.studies.store import finetune_run_id
from conftest import study_records

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one thread

# 32 examples in batches of 8: 4 optimizer steps per epoch; dropout in encoder and head, both streams restored.
SMALL = {"task": "rte", "max_train": 32, "max_eval": 24, "batch_size": 8, "max_length": 40, "epochs": 3,
         "progress": False, "seed": 5}


def _numbers(out: Path) -> dict:
    """What must be equal between an uninterrupted and a resumed run: losses, learning rates, metrics, predictions."""
    payload = json.loads((out / "results.json").read_text())
    with open(out / "predictions.csv", encoding="utf-8") as handle:
        predictions = list(csv.DictReader(handle))
    return {"epochs": [{k: e[k] for k in ("epoch", "train_loss", "late_train_loss", "learning_rate", "train_examples",
                                          "eval")}
                       for e in payload["epochs"]],
            "final": payload["final"], "steps": payload["timing"]["steps"],
            "train_examples": payload["timing"]["train_examples"], "predictions": predictions}


def _interrupt_after_saves(monkeypatch: pytest.MonkeyPatch, saves: int) -> list[int]:
    """Stop the run (as Ctrl-C would) right after its ``saves``-th checkpoint is written; returns their steps."""
    real, steps = Checkpointer.save, []

    def save(self: Checkpointer, state) -> None:
        real(self, state)
        steps.append(state.loop.steps)
        if len(steps) == saves:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", save)
    return steps


@pytest.fixture(scope="module")
def reference(tiny_checkpoint, glue_dir, tmp_path_factory) -> tuple[dict, dict]:
    """An uninterrupted run: its numbers and its options."""
    options = {**SMALL, "model": str(tiny_checkpoint("bert", 2)), "data_dir": str(glue_dir)}
    out = tmp_path_factory.mktemp("reference") / "run"
    api.finetune(out=str(out), **options)
    assert not (out / "checkpoints").exists()  # removed once the run is complete
    assert json.loads((out / "results.json").read_text())["resumed_from_epoch"] == 0
    return _numbers(out), options


@pytest.mark.parametrize(("every", "saves", "epoch", "step"), [(0, 1, 1, 4), (3, 3, 1, 6)],
                         ids=["after-epoch-1", "mid-epoch-2"])
def test_a_resumed_run_has_the_numbers_of_an_uninterrupted_one(reference, tmp_path, monkeypatch, every, saves,
                                                               epoch, step) -> None:
    expected, options = reference
    out = tmp_path / "run"
    steps = _interrupt_after_saves(monkeypatch, saves)
    with pytest.raises(KeyboardInterrupt):
        api.finetune(out=str(out), checkpoint_every=every, **options)
    assert steps[-1] == step and not (out / "results.json").exists()
    assert json.loads((out / "status.json").read_text())["state"] == "interrupted"
    meta = json.loads((out / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["steps"] == step and meta["epochs_done"] == epoch
    monkeypatch.undo()

    api.finetune(out=str(out), resume=True, checkpoint_every=every, **options)
    payload = json.loads((out / "results.json").read_text())
    assert payload["resumed_from_epoch"] == epoch and payload["resumed_from_step"] == step
    assert _numbers(out) == expected
    assert not (out / "checkpoints").exists()


def test_ctrl_c_while_training_checkpoints_the_step_in_hand(reference, tmp_path, monkeypatch) -> None:
    """A real SIGINT in the middle of step 2: the step finishes, a checkpoint is written there, then the run stops;
    resumed, it has the uninterrupted numbers."""
    import bertscope.finetune.train as train

    expected, options = reference
    real, calls = train.collate, []

    def collate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # inside training step 2, before its forward pass
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "collate", collate)
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        api.finetune(out=str(out), **options)
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back
    meta = json.loads((out / "checkpoints" / "last" / "meta.json").read_text())
    assert (meta["epoch"], meta["batch"], meta["steps"]) == (1, 2, 2)
    assert json.loads((out / "status.json").read_text())["checkpoint_at"] == "epoch 1, batch 2 (step 2)"
    monkeypatch.undo()
    api.finetune(out=str(out), resume=True, **options)
    assert json.loads((out / "results.json").read_text())["resumed_from_step"] == 2
    assert _numbers(out) == expected


def test_an_ignored_signal_stays_ignored(tmp_path) -> None:
    checkpoints = Checkpointer(tmp_path, {})
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with checkpoints.deferring_interrupts():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert not checkpoints.stop_requested
    finally:
        signal.signal(signal.SIGINT, previous)


def test_resuming_with_a_changed_option_is_refused_naming_it(reference, tmp_path, monkeypatch, capsys) -> None:
    _, options = reference
    out = tmp_path / "run"
    _interrupt_after_saves(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        api.finetune(out=str(out), **options)
    monkeypatch.undo()
    with pytest.raises(BertscopeError, match=r"--lr is 0\.001 but the checkpoint .* 2e-05") as info:
        api.finetune(out=str(out), resume=True, **{**options, "lr": 1e-3})
    assert "\n" not in str(info.value)
    args = ["finetune", "--model", options["model"], "--task", "rte", "--data-dir", options["data_dir"],
            "--max-train", "32", "--max-eval", "24", "--batch-size", "8", "--max-length", "40", "--epochs", "3",
            "--seed", "6", "--no-progress", "--out", str(out), "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed is 6" in err[0], err
    # without --resume, the interrupted run's checkpoint is not thrown away silently
    with pytest.raises(BertscopeError, match="pass --resume to continue it"):
        api.finetune(out=str(out), **options)
    # result-neutral options may change: a resumed run's numbers do not depend on them
    api.finetune(out=str(out), resume=True, checkpoint_every=2, log="off", **options)
    assert json.loads((out / "results.json").read_text())["resumed_from_epoch"] == 1


def test_resume_with_nothing_to_resume_starts_fresh_and_says_so(reference, tmp_path, capsys) -> None:
    expected, options = reference
    out = tmp_path / "fresh"
    api.finetune(out=str(out), resume=True, **options)
    err = capsys.readouterr().err
    assert f"--resume: no checkpoint in {out / 'checkpoints'}; starting fresh" in err
    assert json.loads((out / "results.json").read_text())["resumed_from_epoch"] == 0
    assert _numbers(out) == expected
    with pytest.raises(BertscopeError, match="--resume needs --out"):
        api.finetune(resume=True, **options)


def test_checkpoints_are_kept_only_with_keep_checkpoints(reference, tmp_path) -> None:
    _, options = reference
    out = tmp_path / "kept"
    api.finetune(out=str(out), keep_checkpoints=True, **options)
    meta = json.loads((out / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["epochs_done"] == 3 and meta["steps"] == 12 and meta["epoch"] == 4
    assert {p.name for p in (out / "checkpoints" / "last").iterdir()} == {"meta.json", "state.pt"}
    first = json.loads((out / "results.json").read_text())
    # the kept checkpoint of a complete run resumes to the same result without training (here: --overwrite)
    api.finetune(out=str(out), resume=True, overwrite=True, **options)
    again = json.loads((out / "results.json").read_text())
    assert again["resumed_from_epoch"] == 3 and again["epochs"] == first["epochs"]
    assert not (out / "checkpoints").exists()


def test_resume_options_do_not_change_run_ids_or_study_hashes(reference) -> None:
    from bertscope.finetune.command import COMMAND
    from bertscope.finetune.config import FinetuneConfig

    _, options = reference
    plain = FinetuneConfig(**options)
    changed = plain.replace(resume=True, keep_checkpoints=True, checkpoint_every=7)
    assert finetune_run_id(plain) == finetune_run_id(changed)
    assert COMMAND.identity(plain.to_dict()) == COMMAND.identity(changed.to_dict())
    with pytest.raises(BertscopeError, match="--checkpoint-every must not be negative"):
        FinetuneConfig(**{**options, "checkpoint_every": -1})


def test_a_study_run_interrupted_mid_run_continues_from_its_checkpoint(tiny_checkpoint, glue_dir, tmp_path,
                                                                       monkeypatch) -> None:
    options = dict(task="rte", model=str(tiny_checkpoint("bert", 2)), data_dir=str(glue_dir), max_train=32,
                   max_eval=16, epochs=2, max_length=40, batch_size=8, progress=False, layers="1,2",
                   checkpoint_every=3)
    expected = api.layers(out=str(tmp_path / "whole"), **options)
    out = tmp_path / "resumed"
    steps = _interrupt_after_saves(monkeypatch, 5)  # run 1 (layer 1): saves at steps 3, 4, 6, 8; run 2: step 3
    with pytest.raises(KeyboardInterrupt):
        api.layers(out=str(out), **options)
    monkeypatch.undo()
    assert steps == [3, 4, 6, 8, 3]
    folders = list((out / "runs").glob("*.ckpt"))
    assert len(folders) == 1 and len(study_records(out)) == 1  # run 1 done, run 2 checkpointed
    resumed = api.layers(out=str(out), **options)
    assert not list((out / "runs").glob("*.ckpt"))
    assert resumed.table == expected.table
    for a, b in zip(resumed.runs, expected.runs):
        assert a["result"]["epochs"][-1]["train_loss"] == b["result"]["epochs"][-1]["train_loss"]
        assert [e["eval"] for e in a["result"]["epochs"]] == [e["eval"] for e in b["result"]["epochs"]]
    assert [r["result"]["resumed_from_step"] for r in resumed.runs] == [0, 3]


def _finetune_command(model: str, glue_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bertscope", "finetune", "--model", model, "--task", "rte", "--data-dir",
            str(glue_dir), "--max-train", "48", "--max-eval", "16", "--batch-size", "4", "--max-length", "32",
            "--epochs", "3", "--seed", "2", "--no-progress", "--device", "cpu", "--out", str(out), *extra]


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_gives_the_uninterrupted_numbers(tiny_checkpoint, glue_dir,
                                                                                 tmp_path) -> None:
    model = str(tiny_checkpoint("bert", 2))
    whole = tmp_path / "whole"
    subprocess.run(_finetune_command(model, glue_dir, whole), env=_environment(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_finetune_command(model, glue_dir, out, "--checkpoint-every", "1"), env=_environment(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    meta = out / "checkpoints" / "last" / "meta.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not meta.exists():
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()[1]
    time.sleep(random.uniform(0.0, 1.5))  # anywhere in the run: mid-step, mid-save, during an evaluation
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if (out / "results.json").exists():  # finished before the kill: nothing to resume; the numbers still agree
        assert _numbers(out) == _numbers(whole)
        return
    resumed = subprocess.run(_finetune_command(model, glue_dir, out, "--checkpoint-every", "1", "--resume"),
                             env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert resumed.returncode == 0, resumed.stderr
    payload = json.loads((out / "results.json").read_text())
    assert payload["resumed_from_step"] >= 1
    assert _numbers(out) == _numbers(whole)


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_at_the_step_in_hand_and_exits_143(tiny_checkpoint, glue_dir, tmp_path) -> None:
    model = str(tiny_checkpoint("bert", 2))
    out = tmp_path / "preempted"
    proc = subprocess.Popen(_finetune_command(model, glue_dir, out, "--epochs", "100000"), env=_environment(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    status = out / "status.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not status.exists():
        time.sleep(0.05)
    time.sleep(1.0)  # into the training loop
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["bertscope finetune: terminated (SIGTERM); results already finished were kept"]
    state = json.loads(status.read_text())
    assert state["state"] == "interrupted" and state["checkpoint"].endswith("last")
    meta = json.loads((out / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["steps"] >= 1 and meta["identity"]["epochs"] == 100000
