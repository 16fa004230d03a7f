"""YAML within bounds: plain documents load as pyyaml's safe loader loads them; bombs, loops, deep nesting, huge
and non-UTF-8 files are one line each, found without expanding anything."""

from __future__ import annotations

import resource
import time

import pytest
import yaml

from bertscope.core import safe_yaml
from bertscope.core.errors import BertscopeError
from bertscope.core.safe_yaml import MAX_DEPTH, MAX_VALUES, load_yaml_file, load_yaml_text


def laughs(levels: int, width: int = 9) -> str:
    """The "billion laughs": each level lists the previous one ``width`` times, ``width**levels`` strings."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text", [
    "command: toy\nbase: {x: 1, y: [1, 2.5, null, true]}\ngrid: {seed: [1, 2]}\n",
    "shared: &s {lr: 0.1}\na: *s\nb: {<<: *s, extra: 1}\n",  # ordinary anchors and merges
    laughs(3),  # 729 strings: aliases are fine in moderation
    "",
])
def test_plain_documents_load_as_the_safe_loader_loads_them(text):
    assert load_yaml_text(text, where="t") == yaml.safe_load(text)


def test_an_alias_bomb_is_refused_without_being_expanded():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(BertscopeError, match=f"refused: more than {MAX_VALUES:,} values once its aliases"):
        load_yaml_text(laughs(30), where="bomb.yaml")  # 9**30 strings once expanded
    assert time.perf_counter() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # kB: nothing was expanded


def test_merge_keys_count_what_they_copy():
    """``<<: *m`` copies the merged mapping's pairs: a chain of merges doubles them at each step."""
    lines = ["m0: &m0 {k0: 0, k1: 1}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], j{i}: {i}}}" for i in range(1, 25)]
    with pytest.raises(BertscopeError, match="once its aliases"):
        load_yaml_text("\n".join(lines), where="merge.yaml")


@pytest.mark.parametrize(("text", "message"), [
    ("a: &a [1, *a]\n", "an alias (*name) refers to a list or mapping that contains it"),
    ("a: &a {k: *a}\n", "an alias (*name) refers to a list or mapping that contains it"),
    ("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n", f"nested deeper than {MAX_DEPTH} levels"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", f"nested deeper than {MAX_DEPTH} levels"),  # not a RecursionError
    ("a: &a " + "[" * 40 + "1" + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n",
     f"nested deeper than {MAX_DEPTH} levels once its aliases"),
    ("a: [1, 2\n", "t: line 2 not valid YAML"),
    ("a: *nope\n", "not valid YAML: found undefined alias"),
    ("a: 1\n---\nb: 2\n", "not valid YAML: expected a single document"),
])
def test_bad_documents_are_one_line(text, message):
    with pytest.raises(BertscopeError) as info:
        load_yaml_text(text, where="t")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_huge_flat_document_stops_at_the_value_bound(monkeypatch):
    monkeypatch.setattr(safe_yaml, "MAX_VALUES", 1000)
    with pytest.raises(BertscopeError, match="more than 1,000 values"):
        load_yaml_text("[" + ", ".join(["1"] * 2000) + "]", where="t")


def test_files_that_are_not_utf8_too_large_or_missing_are_one_line(tmp_path, monkeypatch):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("notes: caf\xe9\n".encode("latin-1"))
    with pytest.raises(BertscopeError, match=r"cannot read spec .*latin.yaml: not UTF-8 text \(byte 0xe9 at offset 10\)"):
        load_yaml_file(latin, what="spec")
    monkeypatch.setattr(safe_yaml, "MAX_BYTES", 100)
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * 200 + "\n")
    with pytest.raises(BertscopeError, match="cannot read config .*big.yaml: larger than"):
        load_yaml_file(big, what="config")
    with pytest.raises(BertscopeError, match="cannot read spec .*missing.yaml: No such file"):
        load_yaml_file(tmp_path / "missing.yaml", what="spec")
    with pytest.raises(BertscopeError, match="cannot read spec .*: Is a directory"):
        load_yaml_file(tmp_path, what="spec")
