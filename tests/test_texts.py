"""Text sources: the built-in sample, text files (and their failure modes), GLUE splits."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bertscope import texts
from bertscope.errors import BertscopeError, DataError


def test_builtin_sample_is_a_few_hundred_varied_sentences() -> None:
    sentences = texts.builtin_sentences()
    assert len(sentences) >= 250
    assert len(set(sentences)) == len(sentences), "duplicate sentences in the built-in sample"
    assert all(s == s.strip() and s and not s.startswith("#") for s in sentences)
    lengths = sorted(len(s.split()) for s in sentences)
    assert lengths[0] <= 3 and lengths[-1] >= 25  # very short and long ones
    assert any(s.endswith("?") for s in sentences)


def test_load_texts_defaults_to_the_builtin_sample() -> None:
    source = texts.load_texts()
    assert source.kind == "builtin"
    assert list(source.sentences) == texts.builtin_sentences()
    info = source.describe()
    assert info["num_sentences"] == len(source.sentences) and len(info["sha256"]) == 64


def test_text_file_one_sentence_per_line(tmp_path: Path) -> None:
    file = tmp_path / "s.txt"
    file.write_text("\ufeffFirst sentence.\n\n   Second one.  \n# a comment\nThird?\n", encoding="utf-8")
    source = texts.load_texts(texts=str(file))
    assert source.sentences == ("First sentence.", "Second one.", "Third?")
    assert source.kind == "file" and source.describe()["file"] == str(file.resolve())


def test_missing_empty_and_binary_text_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        texts.read_text_file(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n# only a comment\n", encoding="utf-8")
    with pytest.raises(DataError, match="no sentences"):
        texts.read_text_file(empty)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"ok\n\xff\xfe\x00bad\n")
    with pytest.raises(DataError, match="not UTF-8"):
        texts.read_text_file(binary)
    with pytest.raises(DataError, match="not a file"):
        texts.read_text_file(tmp_path)


def test_subset_is_seeded_sized_and_keeps_order() -> None:
    items = [f"s{i}" for i in range(100)]
    a = texts.subset(items, 10, seed=1)
    assert a == texts.subset(items, 10, seed=1)
    assert a != texts.subset(items, 10, seed=2)
    assert len(a) == 10 and a == sorted(a, key=items.index)
    assert texts.subset(items, 500, seed=0) == items


def test_texts_and_task_together_are_refused() -> None:
    with pytest.raises(BertscopeError, match="either"):
        texts.load_texts(texts="a.txt", task="sst2")


def _tsv_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_glue_single_sentence_task(glue_dir: Path) -> None:
    source = texts.load_texts(task="sst2", split="validation", data_dir=str(glue_dir))
    rows = _tsv_rows(glue_dir / "SST-2" / "dev.tsv")[1:]
    assert source.kind == "glue"
    assert list(source.sentences) == [r[0].strip() for r in rows]


def test_glue_pairs_become_separate_sentences(glue_dir: Path) -> None:
    source = texts.load_texts(task="rte", split="validation", data_dir=str(glue_dir))
    rows = _tsv_rows(glue_dir / "RTE" / "dev.tsv")[1:]
    expected = [s.strip() for r in rows for s in (r[1], r[2])]
    assert list(source.sentences) == expected
    assert source.describe()["pairs_as"] == "separate sentences"


def test_glue_max_examples_cuts_sentences(glue_dir: Path) -> None:
    source = texts.load_texts(task="mrpc", split="validation", data_dir=str(glue_dir), max_examples=7, seed=3)
    assert len(source.sentences) == 7
    again = texts.load_texts(task="mrpc", split="validation", data_dir=str(glue_dir), max_examples=7, seed=3)
    assert source.sentences == again.sentences


def test_unknown_glue_task_names_the_known_ones(glue_dir: Path) -> None:
    with pytest.raises(BertscopeError, match="unknown GLUE task"):
        texts.load_texts(task="sst3", data_dir=str(glue_dir))
