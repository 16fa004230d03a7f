"""Bad inputs to the lens, surgery and predict commands through the CLI: a ``--max-length`` beyond the model's
position embeddings ends in exit 2, one line on stderr naming the limit, no traceback and no result (the house rule
for every failure a user can cause; fine-tuning's case is in tests/test_bad_inputs_finetune.py). Progress output
follows ``--log``: no carriage-return bar frames in a pipe, nothing with ``--log off``."""

from __future__ import annotations

import json
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
