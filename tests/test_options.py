"""The option language (bertscope.core.options): one grammar for every list-like option, two layer numberings that cannot be
confused, one-line errors that name the option and the accepted forms, and ``random:K`` drawing exactly the
dimensions it always drew."""

from __future__ import annotations

import json
import random

import pytest

from bertscope import cli
from bertscope.core import options
from bertscope.core.errors import BertscopeError
from bertscope.core.options import (
    canonical_token,
    dims_form,
    parse_blocks,
    parse_dims,
    parse_freeze,
    parse_hidden_states,
    parse_k_list,
    parse_layer_map,
    parse_name_list,
    parse_token,
    parse_token_list,
)

L = 6  # transformer layers of the pretend model: hidden states 0..6, blocks 0..5


def _one_line_error(call, *args, match: str = "", **kwargs) -> str:
    with pytest.raises(BertscopeError, match=match) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# --- the index-list grammar, the same in every parser -------------------------------------------------------------


INDEX_PARSERS = {
    "hidden states, sorted": (lambda s: parse_hidden_states(s, L), L + 1),
    "hidden states, in order": (lambda s: parse_hidden_states(s, L, option="--layer", keep_order=True), L + 1),
    "blocks": (lambda s: parse_blocks(s, L, option="--duplicate"), L),
    "layer map": (lambda s: parse_layer_map(s, L), L),
    "dims idx": (lambda s: parse_dims("idx:" + s, 2 * L), 2 * L),
}


@pytest.mark.parametrize("name", INDEX_PARSERS)
def test_all_ranges_negatives_and_lists_mean_the_same_everywhere(name: str) -> None:
    parse, size = INDEX_PARSERS[name]
    top = size - 1
    assert parse("all") == parse("ALL") == parse(f"0-{top}") == parse("0--1") == tuple(range(size))
    assert parse("-1") == parse(str(top)) == (top,)
    assert parse(f"-{size}") == (0,)
    assert parse("-3--1") == parse(f"{top - 2}-{top}") == (top - 2, top - 1, top)
    assert parse("1-3") == parse("1 - 3") == parse("1- 3") == (1, 2, 3)
    assert parse("3-3") == (3,)
    assert parse("0,2") == parse("0, 2") == parse("0 2") == parse(" 0,2, ") == parse("0,,2") == (0, 2)
    assert parse("1,-1") == (1, top)


def test_order_and_uniqueness_follow_the_command() -> None:
    assert parse_hidden_states("3,0-1,-1", L) == (0, 1, 3, 6)                       # a scan: sorted set
    assert parse_hidden_states("3,1,3", L) == (1, 3)
    assert parse_hidden_states("3,0-1,-1", L, keep_order=True) == (3, 0, 1, 6)      # a head: order given
    assert parse_blocks("4,0-1,1", L) == (0, 1, 4)
    assert parse_layer_map("0-2,2-3,5", L) == (0, 1, 2, 2, 3, 5)                     # a map: order and repeats
    assert parse_dims("idx:17,3-4", 384) == (17, 3, 4)
    _one_line_error(parse_hidden_states, "3,0-3", L, option="--layer", keep_order=True,
                    match="--layer .*hidden-state index 3 twice")
    _one_line_error(parse_dims, "idx:1,0-2", 384, match="--dims .*dimension index 1 twice")


def test_an_int_or_a_sequence_is_an_index_list_too() -> None:
    assert parse_hidden_states(-7, L, keep_order=True) == (0,)
    assert parse_hidden_states([3, -1], L, keep_order=True) == (3, 6)
    assert parse_layer_map([0, 1, 1], L) == (0, 1, 1)


def test_defaults_apply_only_where_the_option_has_one() -> None:
    for blank in (None, "", "  "):
        assert parse_hidden_states(blank, L, default_all=True) == tuple(range(L + 1))
        assert parse_blocks(blank, L, default_all=True) == tuple(range(L))
        _one_line_error(parse_hidden_states, blank, L, option="--layer", match="--layer .*no index")
        _one_line_error(parse_blocks, blank, L, option="--remove", match="--remove .*no transformer layer")
        _one_line_error(parse_layer_map, blank, L, match="--layer-map .*empty")
    _one_line_error(parse_hidden_states, ",", L, default_all=True, match="--layers .*no index")


# --- the two numberings -------------------------------------------------------------------------------------------


def test_hidden_state_and_transformer_layer_numberings_differ_by_the_embeddings() -> None:
    assert parse_hidden_states("all", L)[-1] == L and parse_blocks("all", L)[-1] == L - 1
    assert parse_hidden_states("-1", L) == (L,) and parse_blocks("-1", L) == (L - 1,)  # both: the top layer
    assert parse_hidden_states(str(L), L) == (L,)
    hidden = _one_line_error(parse_hidden_states, "0,7", L, match="out of range")
    assert hidden.startswith("--layers ") and "hidden-state index 7" in hidden and "0..6" in hidden
    assert "0 = embedding output" in hidden and options.INDEX_FORMS in hidden
    block = _one_line_error(parse_blocks, str(L), L, option="--duplicate", match="out of range")
    assert block.startswith("--duplicate ") and f"transformer-layer index {L}" in block and "0..5" in block
    assert "0 = the first transformer layer" in block and options.INDEX_FORMS in block
    _one_line_error(parse_hidden_states, "-8", L, match="hidden-state index -8 is out of range")
    _one_line_error(parse_blocks, "-7", L, match="transformer-layer index -7 is out of range")
    _one_line_error(parse_layer_map, "0,6", L, match="--layer-map .*transformer-layer index 6 is out of range")
    assert set(options.NUMBERING_NOTES) == {options.HIDDEN_STATE, options.BLOCK} == {"hidden_state", "block"}


@pytest.mark.parametrize("bad, problem", [
    ("x", "is not a"), ("1.5", "is not a"), ("all-3", "is not a"), ("3-1", "runs backwards"),
    ("-1-2", "runs backwards"), ("0 -3", "ambiguous"), ("1,0 -2", "ambiguous"), ("2-", "is not a"),
])
def test_bad_index_lists_are_one_line_errors_naming_the_option_and_the_forms(bad: str, problem: str) -> None:
    for option, call in (("--layers", lambda: parse_hidden_states(bad, L)),
                         ("--layer", lambda: parse_hidden_states(bad, L, option="--layer", keep_order=True)),
                         ("--remove", lambda: parse_blocks(bad, L, option="--remove")),
                         ("--layer-map", lambda: parse_layer_map(bad, L))):
        message = _one_line_error(call, match=problem)
        assert message.startswith(f"{option} {bad.strip()!r}") and options.INDEX_FORMS in message


# --- dims, k lists, freeze, tokens, names ---------------------------------------------------------------------------


def _old_random_dims(hidden_size: int, k: int, seed: int) -> tuple[int, ...]:
    """``random:K`` as selection.parse_dims drew it before the option language (kept verbatim)."""
    return tuple(sorted(random.Random(seed).sample(range(hidden_size), k)))


@pytest.mark.parametrize("hidden_size", [7, 32, 384, 768])
def test_random_k_draws_exactly_the_dimensions_it_always_drew(hidden_size: int) -> None:
    for seed in (0, 1, 3, 42, 12345):
        for k in sorted({1, 2, 3, 5, hidden_size // 2, hidden_size}):
            assert parse_dims(f"random:{k}", hidden_size, seed) == _old_random_dims(hidden_size, k, seed)
            assert parse_dims(f" RANDOM:{k} ", hidden_size, seed) == _old_random_dims(hidden_size, k, seed)
    assert parse_dims("random:5", 384, 3) != parse_dims("random:5", 384, 4)


def test_dims_forms_and_errors() -> None:
    assert parse_dims("all", 4) == (0, 1, 2, 3)
    assert parse_dims("first:2", 10) == parse_dims("first: 2", 10) == (0, 1)
    assert parse_dims("idx:-1,0", 10) == (9, 0) and parse_dims("idx:all", 3) == (0, 1, 2)
    assert dims_form("random:3") == ("random", 3) and dims_form("idx:1,2") == ("idx", None)
    assert dims_form("all") == ("all", None)
    for bad, problem in (("first:0", "at least 1"), ("random:385", "1..384"), ("idx:384", "out of range"),
                         ("some", "unknown"), ("idx:", "at least one index"), ("random:x", "whole number")):
        message = _one_line_error(parse_dims, bad, 384, match=problem)
        assert message.startswith(f"--dims {bad!r}") and options.DIMS_FORMS in message
    _one_line_error(parse_dims, "idx:9", 4, option="--dims-per-task", match=r"--dims-per-task .*0\.\.3")


def test_k_lists() -> None:
    assert parse_k_list("1,2,3,5,10,50,all", 384) == (1, 2, 3, 5, 10, 50, 384)
    assert parse_k_list("all,2,2,1", 8) == (1, 2, 8)
    assert parse_k_list("1-3, 8", 8) == (1, 2, 3, 8)
    for bad, problem in (("0", "out of range"), ("9", "out of range"), ("-1", "out of range"), ("x", "whole number"),
                         ("3-1", "backwards"), ("", "no K"), (",", "no K")):
        message = _one_line_error(parse_k_list, bad, 8, match=problem)
        assert message.startswith("--k ") and "1..8" in message


def test_freeze() -> None:
    assert parse_freeze(" Encoder ", L) == options.FreezeSpec("encoder")
    assert parse_freeze("layers:0-2", L).hidden_states == (0, 1, 2)
    assert parse_freeze("layers:3", L).hidden_states == (3,)
    assert parse_freeze("LAYERS:-2--1", L).hidden_states == (5, 6)
    assert parse_freeze("layers:all", L).hidden_states == tuple(range(L + 1))
    assert parse_freeze("layers:1,3", L).hidden_states == (1, 3)
    for bad, problem in (("layers:3-9", "hidden-state index 9 is out of range"), ("layers:", "no layer"),
                         ("layers:2-1", "backwards"), ("frozen", "unknown"), ("layers", "unknown")):
        message = _one_line_error(parse_freeze, bad, L, match=problem)
        assert message.startswith(f"--freeze {bad!r}") and options.FREEZE_FORMS in message


def test_tokens() -> None:
    assert parse_token("max-norm") == parse_token("MaxNorm") == parse_token("max_norm") == ("max-norm", None)
    assert parse_token("index:-1") == parse_token("index: -1") == ("index", -1)
    assert canonical_token("INDEX:2") == "index:2" and canonical_token(" mean ") == "mean"
    message = _one_line_error(parse_token, "first", match="--token 'first'")
    assert options.TOKEN_FORMS in message
    assert parse_token_list("cls, maxnorm,max-norm,,index:1") == ("cls", "max-norm", "index:1")
    _one_line_error(parse_token_list, "cls,middle", match="--tokens 'middle'")
    _one_line_error(parse_token_list, " , ", match="--tokens .*no token strategy")


def test_name_lists() -> None:
    assert parse_name_list(" sst2, rte ,,cola", option="--tasks") == ("sst2", "rte", "cola")
    _one_line_error(parse_name_list, "sst2", option="--tasks", at_least=2, match="--tasks needs at least two")
    _one_line_error(parse_name_list, "", option="--eval-split", match="--eval-split needs at least one")


# --- through the CLI ----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("one_thread")
def test_layers_study_accepts_all_on_the_command_line(tiny_checkpoint, glue_dir, tmp_path, capsys) -> None:
    out = tmp_path / "layers"
    common = ["layers", "--task", "sst2", "--model", str(tiny_checkpoint("bert", 2)), "--data-dir", str(glue_dir),
              "--max-train", "16", "--max-eval", "8", "--epochs", "1", "--max-length", "32", "--batch-size", "8",
              "--freeze", "encoder", "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--out", str(out)]
    assert cli.main([*common, "--layers", "all"]) == 0
    first = json.loads((out / "layers.json").read_text())
    assert [row["layer"] for row in first["table"]] == [0, 1, 2]
    assert cli.main([*common, "--layers", "0--1"]) == 0  # the same hidden states: every run resumes
    again = json.loads((out / "layers.json").read_text())
    assert again["table"] == first["table"] and all(run["resumed"] for run in again["runs"])
    capsys.readouterr()
    assert cli.main([*common, "--layers", "0 -1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--layers '0 -1'" in err and "ambiguous" in err and len(err.splitlines()) == 1


def test_parse_seed_list():
    from bertscope.core.options import parse_seed_list

    assert parse_seed_list("1,2,3") == (1, 2, 3)
    assert parse_seed_list(" 3, 1-2 ") == (3, 1, 2)  # the order given
    for bad, words in [("1,1", "twice"), ("3-1", "backwards"), ("x", "whole number"), ("", "no seed"),
                       ("-2", "negative")]:
        with pytest.raises(BertscopeError, match=words):
            parse_seed_list(bad)
