"""Bad inputs to fine-tuning through the CLI: numeric options that are not finite or out of range, and a run whose
loss explodes. Each ends in exit 2, one line on stderr, no traceback and no complete-looking result (the house rule
for every failure a user can cause; the model-folder cases are in tests/test_bad_inputs.py)."""

from __future__ import annotations

import json
from pathlib import Path

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



# ------------------------------------------------------------------------------- checkpoints, overwrite, full disk


def _args(model: str, glue_dir, out, *extra: str) -> list[str]:
    return ["finetune", "--model", model, "--task", "rte", "--data-dir", str(glue_dir), "--max-train", "16",
            "--max-eval", "8", "--batch-size", "8", "--epochs", "2", "--out", str(out), "--no-progress",
            "--log", "off", *extra]


def _interrupted_run(args: list[str], monkeypatch, capsys) -> None:
    """Run ``args`` and stop it (as Ctrl-C would) right after its first checkpoint is written."""
    from bertscope.cli import main
    from bertscope.finetune.checkpoint import Checkpointer

    real = Checkpointer.save

    def save(self, state) -> None:
        real(self, state)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "save", save)
        assert main(args) == 130
    capsys.readouterr()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_checkpoint_that_fails_to_load_for_another_reason_is_kept(tiny_checkpoint, glue_dir, tmp_path,
                                                                   monkeypatch, capsys) -> None:
    """Too little memory while loading a healthy checkpoint: one line, exit 2, the checkpoint untouched; the same
    --resume then continues from it."""
    import torch

    out = tmp_path / "out"
    args = _args(str(tiny_checkpoint("bert", 2)), glue_dir, out)
    _interrupted_run(args, monkeypatch, capsys)
    last = out / "checkpoints" / "last"
    before = _files(last)
    real = torch.load

    def load(path, *a, **k):
        if Path(str(path)).name == "state.pt":
            raise MemoryError("cannot allocate 1.2 GiB")
        return real(path, *a, **k)

    with monkeypatch.context() as patch:
        patch.setattr(torch, "load", load)
        err = user_error([*args, "--resume"], capsys)
    assert "cannot load checkpoint" in err and "MemoryError" in err and "it is kept" in err
    assert _files(last) == before
    assert json.loads((out / "status.json").read_text())["state"] == "failed"
    from bertscope.cli import main

    assert main([*args, "--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["resumed_from_epoch"] == 1


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_checkpoint_proven_damaged_by_its_checksum_is_removed_in_one_line(damage, tiny_checkpoint, glue_dir,
                                                                          tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    args = _args(str(tiny_checkpoint("bert", 2)), glue_dir, out)
    _interrupted_run(args, monkeypatch, capsys)
    state = out / "checkpoints" / "last" / "state.pt"
    data = bytearray(state.read_bytes())
    if damage == "flipped byte":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 2:]
    state.write_bytes(bytes(data))
    err = user_error([*args, "--resume"], capsys)
    assert "is damaged (state.pt does not match its checksum) and was removed" in err
    assert not (out / "checkpoints").exists()
    assert not (out / "results.json").exists()


def test_unreadable_checkpoint_metadata_is_one_line_and_overwrite_still_starts_over(tiny_checkpoint, glue_dir,
                                                                                  tmp_path, monkeypatch,
                                                                                  capsys) -> None:
    out = tmp_path / "out"
    args = _args(str(tiny_checkpoint("bert", 2)), glue_dir, out)
    _interrupted_run(args, monkeypatch, capsys)
    (out / "checkpoints" / "last" / "meta.json").write_bytes(b"\xff{not json")
    err = user_error([*args, "--resume"], capsys)
    assert "cannot read checkpoint" in err and "it is kept" in err
    assert (out / "checkpoints" / "last" / "state.pt").exists()
    from bertscope.cli import main

    assert main([*args, "--overwrite"]) == 0


def _full_disk(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_checkpointing_ends_the_run_failed_in_one_line(tiny_checkpoint, glue_dir, tmp_path,
                                                                        monkeypatch, capsys) -> None:
    import torch

    out = tmp_path / "out"
    monkeypatch.setattr(torch, "save", _full_disk)
    err = user_error(_args(str(tiny_checkpoint("bert", 2)), glue_dir, out), capsys)
    assert "cannot write checkpoint" in err and "No space left on device" in err
    assert json.loads((out / "status.json").read_text())["state"] == "failed"
    _no_result(out / "model")
    assert not (out / "results.json").exists() and not (out / "predictions.csv").exists()


def test_a_full_disk_while_saving_the_model_ends_the_run_failed_in_one_line(tiny_checkpoint, glue_dir, tmp_path,
                                                                           monkeypatch, capsys) -> None:
    from bertscope.finetune import command

    out = tmp_path / "out"
    monkeypatch.setattr(command, "save_finetuned", _full_disk)
    err = user_error(_args(str(tiny_checkpoint("bert", 2)), glue_dir, out, "--save-model"), capsys)
    assert "cannot write the results" in err and "No space left on device" in err and "--resume" in err
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and "checkpoint" in status
    assert not (out / "results.json").exists()
    monkeypatch.undo()
    from bertscope.cli import main

    assert main([*_args(str(tiny_checkpoint("bert", 2)), glue_dir, out, "--save-model"), "--resume"]) == 0
    assert (out / "model").is_dir() and json.loads((out / "status.json").read_text())["state"] == "complete"


def test_an_interrupted_overwrite_leaves_no_file_of_the_previous_run_under_a_current_name(tiny_checkpoint, glue_dir,
                                                                                         tmp_path, monkeypatch,
                                                                                         capsys) -> None:
    from bertscope.cli import main
    from bertscope.finetune import pipeline

    out = tmp_path / "out"
    args = _args(str(tiny_checkpoint("bert", 2)), glue_dir, out, "--save-model")
    assert main(args) == 0
    old = {name: (out / name).exists() for name in ("results.json", "predictions.csv", "model")}
    assert all(old.values())

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "train_loop", interrupt)
    assert main([*args, "--overwrite"]) == 130
    names = sorted(p.name for p in out.iterdir())
    assert names == ["model.previous", "predictions.previous.csv", "results.previous.json", "status.json"], names
    assert json.loads((out / "status.json").read_text())["state"] == "interrupted"
    monkeypatch.undo()
    assert main([*args, "--overwrite"]) == 0  # a complete new run: the set-aside files go
    assert sorted(p.name for p in out.iterdir()) == ["model", "predictions.csv", "results.json", "status.json"]


#: (case, command line, words the one line must hold): what argparse itself refuses, or used to take for an option.
COMMAND_LINES: list[tuple[str, list[str], str]] = [
    ("negative infinity after a space", ["finetune", "--head-lr", "-inf"], "--head-lr must be a finite number"),
    ("negative exponent after a space", ["finetune", "--lr", "-1e-3"], "--lr and --head-lr must be positive"),
    ("a word for a float", ["finetune", "--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
    ("a word for an int", ["finetune", "--epochs", "two"], "argument --epochs: invalid int value"),
    ("a missing value", ["finetune", "--epochs"], "argument --epochs: expected one argument"),
    ("an unknown choice", ["finetune", "--log", "loud"], "argument --log: invalid choice: 'loud'"),
    ("an unknown option", ["finetune", "--bogus", "1"], "bertscope finetune: error: unrecognized arguments: --bogus 1"),
    ("an unknown option of the lens", ["reconstruct", "--head-lr", "1"], "bertscope reconstruct: error: unrecognized"),
    ("an unknown command", ["finetuen"], "bertscope: error: argument COMMAND: invalid choice: 'finetuen'"),
]


@pytest.mark.parametrize("case, argv, words", COMMAND_LINES, ids=[c for c, _, _ in COMMAND_LINES])
def test_a_command_line_argparse_refuses_is_one_line(case, argv, words, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    err = user_error([*argv, "--out", str(out)] if argv[0] != "finetuen" else argv, capsys)
    assert words in err and "usage:" not in err, err
    _no_result(out)
