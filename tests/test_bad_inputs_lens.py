"""Bad inputs to the lens, surgery and predict commands through the CLI: a ``--max-length`` beyond the model's
position embeddings ends in exit 2, one line on stderr naming the limit, no traceback and no result (the house rule
for every failure a user can cause; fine-tuning's case is in tests/test_bad_inputs_finetune.py). Progress output
follows ``--log``: no carriage-return bar frames in a pipe, nothing with ``--log off``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bertscope import api
from conftest import user_error
from test_bad_inputs import _no_result

pytestmark = pytest.mark.usefixtures("one_thread")

LONG_LINE = "the cat sat on the mat " * 200  # ~1,200 tokens: past any tiny model's positions


@pytest.fixture
def texts(tmp_path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text(f"A short line.\n{LONG_LINE}\n")
    return path


def _limit(folder: Path) -> int:
    return int(json.loads((folder / "config.json").read_text())["max_position_embeddings"])


@pytest.mark.parametrize("command", ["reconstruct", "layer-scan", "compare"])
def test_a_max_length_past_the_positions_is_one_line_before_the_lens_works(command, tiny_checkpoint, texts,
                                                                          tmp_path, capsys) -> None:
    model = tiny_checkpoint("bert", 2)
    out = tmp_path / "out"
    extra = ["--variant", str(model)] if command == "compare" else []
    err = user_error([command, "--model", str(model), "--texts", str(texts), "--max-length", "100000",
                      "--out", str(out), "--no-progress", *extra], capsys)
    assert f"--max-length 100000 exceeds the model's {_limit(model)} positions" in err, err
    _no_result(out)


def test_a_max_length_past_the_positions_is_one_line_before_predict_works(tiny_checkpoint, glue_dir, texts,
                                                                         tmp_path, capsys) -> None:
    saved = tmp_path / "saved"
    api.finetune(model=str(tiny_checkpoint("bert", 2)), task="sst2", data_dir=str(glue_dir), max_train=16,
                 max_eval=8, epochs=1, batch_size=8, max_length=32, progress=False, log="off", save_model=True,
                 out=str(saved))
    out = tmp_path / "out"
    err = user_error(["predict", "--model", str(saved / "model"), "--texts", str(texts), "--max-length", "100000",
                      "--out", str(out), "--no-progress"], capsys)
    assert f"--max-length 100000 exceeds the model's {_limit(saved / 'model')} positions" in err, err
    _no_result(out)


_TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", re.MULTILINE)


def _piped(argv: list[str], tmp_path: Path) -> tuple[str, str]:
    """(stdout, stderr) of the CLI run in a child process whose stdout and stderr are pipes, as in a batch job."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TQDM_MININTERVAL": "0"}
    done = subprocess.run([sys.executable, "-m", "bertscope", *argv], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_reconstruct_writes_plain_lines_into_a_pipe_and_nothing_with_log_off(tiny_checkpoint, texts,
                                                                            tmp_path) -> None:
    """A fitted head's bars and the lens pass's: timestamped lines in a pipe, never ``\\r`` bar frames."""
    base = ["reconstruct", "--model", str(tiny_checkpoint("bert", 2)), "--texts", str(texts), "--max-length", "32",
            "--head", "fit", "--fit-steps", "3", "--no-fit-curve", "--head-cache", str(tmp_path / "heads")]
    out, err = _piped([*base, "--out", str(tmp_path / "piped")], tmp_path)
    assert "\r" not in out + err
    lines = _TIMESTAMPED.findall(err)
    assert "reconstructing: 2/2 sent" in err and "fitting MLM head on the final layer: 3/3" in err and lines, err
    out, err = _piped([*base, "--refit", "--log", "off", "--out", str(tmp_path / "quiet")], tmp_path)
    assert "\r" not in out + err and not _TIMESTAMPED.search(err) and "reconstructing" not in err, err
    assert (tmp_path / "quiet" / "reconstruct.json").is_file()


def test_the_feature_cache_shows_nothing_with_log_off(tiny_checkpoint, glue_dir, tmp_path) -> None:
    base = ["finetune", "--model", str(tiny_checkpoint("bert", 2)), "--task", "sst2", "--data-dir", str(glue_dir),
            "--max-train", "16", "--max-eval", "8", "--epochs", "1", "--max-length", "32", "--freeze", "encoder",
            "--cache-features"]
    out, err = _piped([*base, "--cache-dir", str(tmp_path / "plain"), "--out", str(tmp_path / "a")], tmp_path)
    assert "\r" not in out + err and "encoding (feature cache)" in err, err
    out, err = _piped([*base, "--cache-dir", str(tmp_path / "off"), "--log", "off", "--out", str(tmp_path / "b")],
                      tmp_path)
    assert "encoding (feature cache)" not in out + err and not _TIMESTAMPED.search(out + err), out + err
