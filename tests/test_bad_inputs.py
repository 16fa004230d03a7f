"""Bad inputs through the CLI: each class ends in exit 2, one line on stderr, no traceback and no complete-looking
result (the house rule for every failure a user can cause).

Each case builds its damaged input from a tiny random checkpoint (conftest) and runs a command on it through
:func:`bertscope.cli.main`; the folder the command would write to must not hold a result afterwards.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conftest import tiny_model, user_error

pytestmark = pytest.mark.usefixtures("one_thread")


def _edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _no_tokenizer(folder: Path) -> None:
    for path in folder.iterdir():
        if path.name.startswith(("tokenizer", "vocab", "special_tokens")):
            path.unlink()


def _small_vocabulary_model(folder: Path) -> None:
    """A model whose embeddings have 1000 rows (config and weights agree) beside the 30522-token BERT tokenizer."""
    config = json.loads((folder / "config.json").read_text())
    model = tiny_model("bert", num_layers=2)
    model.resize_token_embeddings(1000)
    (folder / "model.safetensors").unlink()
    model.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["vocab_size"] == 1000 != config["vocab_size"]


def _pickled_objects(folder: Path) -> None:
    """Weights as a pytorch_model.bin that also pickles a function: torch's weights-only load refuses it."""
    from safetensors.torch import load_file

    state: dict[str, object] = dict(load_file(folder / "model.safetensors"))
    state["hook"] = print
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")


#: (case, how the tiny 2-layer checkpoint is damaged, words the one line must hold)
MODEL_FOLDERS: list[tuple[str, Callable[[Path], None], str]] = [
    ("no tokenizer files", _no_tokenizer, "no tokenizer files"),
    ("config asks for more layers than the weights hold", lambda f: _edit_config(f, num_hidden_layers=4),
     "(layers 2, 3)"),
    ("config has fewer layers than the weights hold", lambda f: _edit_config(f, num_hidden_layers=1),
     "has no place for"),
    ("hidden_size that is not the weights'", lambda f: _edit_config(f, hidden_size=64), "[32] in the weights"),
    ("vocab_size that is not the weights'", lambda f: _edit_config(f, vocab_size=1000), "word_embeddings"),
    ("negative num_hidden_layers", lambda f: _edit_config(f, num_hidden_layers=-3),
     "num_hidden_layers -3; it must be a positive integer"),
    ("zero attention heads", lambda f: _edit_config(f, num_attention_heads=0), "num_attention_heads 0"),
    ("tokenizer larger than the embeddings", _small_vocabulary_model, "30522 tokens but the model's embeddings have 1000"),
    ("pickle with more than tensors", _pickled_objects, "holds more than tensors"),
]


@pytest.fixture
def damaged(tiny_checkpoint, tmp_path) -> Callable[[Callable[[Path], None]], Path]:
    def make(damage: Callable[[Path], None]) -> Path:
        folder = tmp_path / "model"
        shutil.copytree(tiny_checkpoint("bert", 2), folder)
        damage(folder)
        return folder

    return make


def _no_result(out: Path) -> None:
    assert not out.exists() or not [p for p in out.rglob("*") if p.suffix in (".json", ".csv", ".html")]


@pytest.mark.parametrize("case, damage, words", MODEL_FOLDERS, ids=[c for c, _, _ in MODEL_FOLDERS])
def test_a_damaged_model_folder_is_one_line_before_reconstruct_works(case, damage, words, damaged, tmp_path,
                                                                     capsys) -> None:
    folder = damaged(damage)
    texts = tmp_path / "texts.txt"
    texts.write_text("The cat sat on the mat.\n")
    out = tmp_path / "out"
    err = user_error(["reconstruct", "--model", str(folder), "--texts", str(texts), "--out", str(out),
                      "--no-progress"], capsys)
    assert words in err and "--layer" not in err
    _no_result(out)


@pytest.mark.parametrize("case, damage, words", [MODEL_FOLDERS[0], MODEL_FOLDERS[1], MODEL_FOLDERS[5]],
                         ids=["no tokenizer files", "more layers", "negative layers"])
def test_a_damaged_model_folder_is_one_line_before_finetune_trains(case, damage, words, damaged, glue_dir,
                                                                   tmp_path, capsys) -> None:
    folder = damaged(damage)
    out = tmp_path / "out"
    err = user_error(["finetune", "--model", str(folder), "--task", "rte", "--data-dir", str(glue_dir),
                      "--max-train", "16", "--max-eval", "8", "--epochs", "1", "--out", str(out), "--no-progress"],
                     capsys)
    assert words in err and "--layer" not in err
    _no_result(out)


@pytest.mark.parametrize("where", ["file", "folder"])
def test_deepen_never_copies_through_a_link_out_of_the_source(where, default_model_dir, tmp_path, capsys) -> None:
    source = tmp_path / "st"
    shutil.copytree(default_model_dir, source)
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("not part of any model")
    if where == "file":
        (source / "1_Pooling" / "leak.txt").symlink_to(secret / "secret.txt")
    else:
        shutil.copy(source / "1_Pooling" / "config.json", secret / "config.json")
        shutil.rmtree(source / "1_Pooling")
        (source / "1_Pooling").symlink_to(secret)
    out = tmp_path / "deep"
    err = user_error(["deepen", "--model", str(source), "--out", str(out), "--duplicate", "5", "--no-verify"], capsys)
    assert "outside the model folder" in err and str(secret) in err
    assert not out.exists() and not list(tmp_path.glob(".deep*"))
