"""Text sources: the built-in sample, text files (and their failure modes), GLUE splits."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bertscope.core.errors import BertscopeError, DataError
from bertscope.data import texts


def test_builtin_sample_is_a_few_hundred_varied_sentences() -> None:
    sentences = texts.builtin_sentences()
    assert len(sentences) >= 250
    assert len(set(sentences)) == len(sentences), "duplicate sentences in the built-in sample"
    assert all(s == s.strip() and s and not s.startswith("#") for s in sentences)
    lengths = sorted(len(s.split()) for s in sentences)
    assert lengths[0] <= 3 and lengths[-1] >= 25  # very short and long ones
    assert any(s.endswith("?") for s in sentences)


def test_load_texts_defaults_to_the_measure_half_of_the_builtin_sample() -> None:
    source = texts.load_texts()
    assert source.kind == "builtin" and source.details["part"] == "builtin"
    assert list(source.sentences) == texts.builtin_part("builtin")
    info = source.describe()
    assert info["num_sentences"] == len(source.sentences) and len(info["sha256"]) == 64
    assert texts.load_texts(texts="builtin-all").sentences == tuple(texts.builtin_sentences())


def test_builtin_halves_are_disjoint_fixed_and_cover_the_sample() -> None:
    every = texts.builtin_sentences()
    measure, fit = texts.builtin_part("builtin"), texts.builtin_part("builtin-fit")
    assert sorted(measure + fit) == sorted(every)
    assert not texts.overlap(fit, measure)
    assert min(len(measure), len(fit)) >= len(every) // 3  # both halves are usable
    # membership depends on the sentence alone (a hash), not on its position in the file
    assert all(texts._in_measure_half(s) for s in measure) and not any(texts._in_measure_half(s) for s in fit)
    with pytest.raises(BertscopeError, match="built-in"):
        texts.builtin_part("builtin-other")


def test_normalise_ignores_case_spacing_and_punctuation() -> None:
    assert texts.normalise("It's a  GOOD film .") == texts.normalise("it 's a good film")
    assert texts.normalise("a good film") != texts.normalise("a bad film")
    measured = ["The cat sat.", "A dog ran!", "Nothing here", "..."]
    fit = ["the  CAT sat", "Something else", "!!"]
    assert texts.overlap(fit, measured) == [0]  # punctuation-only lines never match each other


def _source(sentences: list[str], kind: str = "file") -> texts.TextSource:
    return texts.TextSource(tuple(sentences), kind)


def test_check_overlap_refuses_by_default_and_flags_when_allowed() -> None:
    fit = _source(["One sentence here.", "Another one.", "A third."], "glue-train")
    clean = texts.check_overlap(fit, _source(["Fresh text.", "More fresh text."]))
    assert clean["measured_in_fit"] == 0 and not clean["flagged"] and clean["policy"] == "refuse"
    measured = _source(["another ONE", "Fresh text.", "a third", "New."])
    with pytest.raises(BertscopeError, match="2 of the 4 measured sentences") as caught:
        texts.check_overlap(fit, measured)
    assert "\n" not in str(caught.value) and "--fit-overlap allow" in str(caught.value)
    flagged = texts.check_overlap(fit, measured, "allow")
    assert flagged["flagged"] and flagged["measured_in_fit"] == 2 and flagged["share"] == 0.5
    assert flagged["examples"] == ["another ONE", "a third"]
    with pytest.raises(BertscopeError, match="fit-overlap"):
        texts.check_overlap(fit, measured, "ignore")


def _sst2(root: Path, train: list[str], dev: list[str]) -> Path:
    folder = root / "SST-2"
    folder.mkdir(parents=True)
    for name, rows in (("train.tsv", train), ("dev.tsv", dev)):
        (folder / name).write_text("sentence\tlabel\n" + "".join(f"{r}\t1\n" for r in rows), encoding="utf-8")
    return root


def test_glue_fit_corpus_drops_eval_builtin_and_duplicate_sentences(tmp_path: Path) -> None:
    builtin = texts.builtin_sentences()[0]
    root = _sst2(tmp_path, ["a fine film", "A fine film .", "a dull film", "the dev line", builtin, "a new film"],
                 ["The dev line.", "another dev line"])
    corpus = texts.glue_fit_corpus(str(root))  # the other fit tasks are missing: skipped and named
    assert corpus.sentences == ("a fine film", "a dull film", "a new film")
    info = corpus.describe()
    assert info["kind"] == "glue-train" and info["tasks"] == ["sst2"] and info["removed_eval_or_builtin"] == 2
    assert set(info["skipped_tasks"]) == set(texts.FIT_GLUE_TASKS) - {"sst2"}
    dev = texts.load_texts(task="sst2", split="validation", data_dir=str(root))
    assert texts.check_overlap(corpus, dev)["measured_in_fit"] == 0
    assert texts.check_overlap(corpus, texts.load_texts())["measured_in_fit"] == 0


def test_resolve_fit_corpus_choices(tmp_path: Path, monkeypatch, caplog) -> None:
    root = _sst2(tmp_path / "glue", ["a fine film", "a dull film"], ["a dev line"])
    measured = texts.load_texts()
    assert texts.resolve_fit_corpus("auto", measured, str(root)).kind == "glue-train"
    assert texts.resolve_fit_corpus("glue", measured, str(root)).kind == "glue-train"
    fit_half = texts.resolve_fit_corpus("builtin", measured)
    assert list(fit_half.sentences) == texts.builtin_part("builtin-fit")
    assert texts.resolve_fit_corpus("source", measured).sentences == measured.sentences
    file = tmp_path / "fit.txt"
    file.write_text("line one\nline two\n", encoding="utf-8")
    assert texts.resolve_fit_corpus(str(file), measured).describe()["file"] == str(file.resolve())

    def unreachable(*args, **kwargs):
        raise texts.BertscopeError("cannot reach the hub")

    monkeypatch.setattr(texts, "glue_fit_corpus", unreachable)
    with caplog.at_level("WARNING", logger="bertscope"):
        fallback = texts.resolve_fit_corpus("auto", measured)
    assert fallback.kind == "builtin-fit" and "small fit corpus" in fallback.details["warning"]
    assert "cannot reach the hub" in caplog.text and "BERTSCOPE_GLUE_DIR" in caplog.text
    with pytest.raises(BertscopeError, match="cannot reach"):
        texts.resolve_fit_corpus("glue", measured)


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
