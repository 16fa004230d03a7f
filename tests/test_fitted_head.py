"""The head fitted on the frozen final layer: masking, fitting, caching, reuse, and its HeadParts view."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bertscope.core.errors import BertscopeError
from bertscope.data.texts import builtin_sentences
from bertscope.lens import fitted_head
from bertscope.lens.fitted_head import FitOptions, bert_mask, get_fitted_head
from bertscope.models import families
from conftest import VOCAB, tiny_model

FAST = FitOptions(steps=6, batch_size=8, lr=5e-3, heldout_mask_draws=1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path / "cache"))


def test_bert_mask_follows_80_10_10_on_candidates_only() -> None:
    n = 20_000
    ids = torch.randint(1000, 2000, (n,))
    candidates = torch.rand(n, generator=torch.Generator().manual_seed(5)) < 0.7
    new, selected = bert_mask(ids, candidates, 0.3, torch.Generator().manual_seed(0), mask_token_id=103,
                              vocab_size=VOCAB)
    assert not selected[~candidates].any()
    assert (new[~selected] == ids[~selected]).all()
    share = selected.sum().item() / candidates.sum().item()
    assert abs(share - 0.3) < 0.02
    masked = (new[selected] == 103).float().mean().item()
    kept = (new[selected] == ids[selected]).float().mean().item()
    assert abs(masked - 0.8) < 0.03 and abs(kept - 0.1) < 0.02
    again, _ = bert_mask(ids, candidates, 0.3, torch.Generator().manual_seed(0), 103, VOCAB)
    assert torch.equal(new, again)


def test_fit_saves_and_reuses_the_same_head(bert_tokenizer, tmp_path) -> None:
    model = tiny_model("bert")
    corpus = builtin_sentences()[:60]
    first = get_fitted_head(model, bert_tokenizer, corpus, {"kind": "test"}, options=FAST, progress=False)
    assert not first.info["reused"]
    folder = tmp_path / "cache" / "fitted-heads" / first.info["key"]
    assert (folder / "head.safetensors").is_file()
    saved = json.loads((folder / "head.json").read_text())
    assert saved["key"] == first.info["key"] and saved["options"]["steps"] == FAST.steps
    assert 0.0 <= saved["heldout_masked_top1"] <= 1.0 and saved["heldout_masked_tokens"] > 0
    second = get_fitted_head(model, bert_tokenizer, corpus, {"kind": "test"}, options=FAST, progress=False)
    assert second.info["reused"] and second.info["key"] == first.info["key"]
    for name, tensor in first.module.state_dict().items():
        torch.testing.assert_close(second.module.state_dict()[name], tensor)
    # a different seed, corpus or option is a different head
    assert get_fitted_head(model, bert_tokenizer, corpus, {}, options=FAST, seed=1,
                           progress=False).info["key"] != first.info["key"]
    assert get_fitted_head(model, bert_tokenizer, corpus[:-1], {}, options=FAST,
                           progress=False).info["key"] != first.info["key"]
    refit = get_fitted_head(model, bert_tokenizer, corpus, {}, options=FAST, refit=True, progress=False)
    assert not refit.info["reused"]
    for name, tensor in first.module.state_dict().items():  # fitting is deterministic for a seed
        torch.testing.assert_close(refit.module.state_dict()[name], tensor)


def test_fitting_improves_the_held_out_prediction(bert_tokenizer) -> None:
    model = tiny_model("bert")
    corpus = builtin_sentences()[:80]

    def heldout_nll(steps: int) -> float:
        opts = FitOptions(steps=steps, batch_size=8, lr=1e-2, heldout_mask_draws=2)
        return get_fitted_head(model, bert_tokenizer, corpus, {}, options=opts, use_cache=False,
                               progress=False).info["heldout_masked_nll"]

    # same seed, same held-out masks: 30 steps must predict the held-out masked tokens better than 1 step
    assert heldout_nll(30) < heldout_nll(1) - 0.05
    assert heldout_nll(1) < math.log(VOCAB)  # the unigram start already beats a uniform guess


def test_a_changed_model_does_not_reuse_the_head(bert_tokenizer) -> None:
    model = tiny_model("bert")
    corpus = builtin_sentences()[:40]
    a = get_fitted_head(model, bert_tokenizer, corpus, {}, options=FAST, progress=False)
    with torch.no_grad():
        families.get_layers(model)[-1].output.dense.weight.mul_(1.01)
    b = get_fitted_head(model, bert_tokenizer, corpus, {}, options=FAST, progress=False)
    assert a.info["model_fingerprint"] != b.info["model_fingerprint"] and not b.info["reused"]


@pytest.mark.parametrize("name", ["bert", "albert", "modernbert"])
def test_head_parts_of_a_fitted_head_equal_the_module(name: str, bert_tokenizer) -> None:
    model = tiny_model(name)
    head = get_fitted_head(model, bert_tokenizer, builtin_sentences()[:30], {}, options=FAST, use_cache=False,
                           progress=False)
    parts = head.parts(model)
    h = torch.randn(5, families.hidden_size(model))
    with torch.no_grad():
        torch.testing.assert_close(parts.logits(h, is_last_layer=True), head.module(h))
        norm = families.final_norm(model)
        if norm is not None:  # ModernBERT: the final norm is applied below the last layer
            torch.testing.assert_close(parts.logits(h, is_last_layer=False), head.module(norm(h)))
        else:
            assert parts.pre_norm is None
    # the decoder is tied to the model's input embeddings
    assert parts.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_corrupt_cache_is_fitted_again(bert_tokenizer, tmp_path) -> None:
    model = tiny_model("bert")
    corpus = builtin_sentences()[:40]
    first = get_fitted_head(model, bert_tokenizer, corpus, {}, options=FAST, progress=False)
    (tmp_path / "cache" / "fitted-heads" / first.info["key"] / "head.safetensors").write_bytes(b"garbage")
    again = get_fitted_head(model, bert_tokenizer, corpus, {}, options=FAST, progress=False)
    assert not again.info["reused"]
    third = get_fitted_head(model, bert_tokenizer, corpus, {}, options=FAST, progress=False)
    assert third.info["reused"]  # the refit replaced the damaged entry (it is not refitted on every run)
    for name, tensor in first.module.state_dict().items():
        torch.testing.assert_close(third.module.state_dict()[name], tensor)


@pytest.mark.parametrize("change", ["altered weight", "no checksums"])
def test_altered_cache_contents_behind_a_valid_header_are_fitted_again(change, bert_tokenizer, tmp_path) -> None:
    """A cached head whose safetensors file still loads but holds other values (or whose checksums are gone) does
    not match the SHA-256 recorded when it was written: it is fitted again, never reused."""
    from safetensors.torch import load_file, save_file

    model = tiny_model("bert")
    corpus = builtin_sentences()[:40]
    first = get_fitted_head(model, bert_tokenizer, corpus, {}, options=FAST, progress=False)
    folder = tmp_path / "cache" / "fitted-heads" / first.info["key"]
    if change == "altered weight":
        tensors = load_file(str(folder / "head.safetensors"))
        name = next(iter(tensors))
        tensors[name] = tensors[name] + 1.0
        save_file(tensors, str(folder / "head.safetensors"), metadata={"format": "2"})
    else:
        (folder / "checksums.json").unlink()
    again = get_fitted_head(model, bert_tokenizer, corpus, {}, options=FAST, progress=False)
    assert not again.info["reused"]
    for key, tensor in first.module.state_dict().items():
        torch.testing.assert_close(again.module.state_dict()[key], tensor)


def dead_owner_name(target) -> str:
    """The temp name a process that has exited would have left beside ``target``."""
    import subprocess

    from bertscope.core import publish

    child = subprocess.Popen(["true"])
    child.wait()
    host = publish.owner().rsplit("-", 2)[0]
    return f".{target.name}.tmp-{host}-{child.pid}-0-deadbeef"


def test_temp_folders_of_crashed_fits_are_removed_and_live_ones_kept(bert_tokenizer, tmp_path) -> None:
    from bertscope.core import publish

    heads = tmp_path / "cache" / "fitted-heads"
    heads.mkdir(parents=True)
    crashed = heads / dead_owner_name(heads / "0123abcd")
    crashed.mkdir()
    (crashed / "head.safetensors").write_bytes(b"half a file")
    live = publish.temp_path(heads / "4567ef01")  # this process's own, as if a fit were under way in a thread
    live.mkdir()
    other_host = heads / ".89abcdef.tmp-elsewhere-1-0-deadbeef"  # owner on another host: cannot be asked
    other_host.mkdir()
    fitted = get_fitted_head(tiny_model("bert"), bert_tokenizer, builtin_sentences()[:20], {}, options=FAST,
                             progress=False)
    assert sorted(p.name for p in heads.iterdir()) == sorted([fitted.info["key"], live.name, other_host.name])


def test_bad_fit_options_and_tiny_corpus_are_clear_errors(bert_tokenizer) -> None:
    with pytest.raises(BertscopeError, match="fit-steps"):
        FitOptions(steps=0)
    with pytest.raises(BertscopeError, match="at least 2 sentences"):
        get_fitted_head(tiny_model("bert"), bert_tokenizer, ["only one"], {}, options=FAST, progress=False)


def test_cache_root_follows_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path / "x"))
    assert fitted_head.cache_root() == tmp_path / "x"
    assert fitted_head.cache_root(tmp_path / "y") == tmp_path / "y"


def test_fitting_works_under_no_grad_and_inference_mode(bert_tokenizer) -> None:
    model = tiny_model("bert")
    with torch.no_grad():
        a = get_fitted_head(model, bert_tokenizer, builtin_sentences()[:20], {}, options=FAST, use_cache=False,
                            progress=False)
    with torch.inference_mode():
        b = get_fitted_head(model, bert_tokenizer, builtin_sentences()[:20], {}, options=FAST, use_cache=False,
                            progress=False)
    for name, tensor in a.module.state_dict().items():
        torch.testing.assert_close(b.module.state_dict()[name], tensor)


def _independent_heldout_top1(model, tokenizer, head: torch.nn.Module, held: list[str], draws: int, seed: int,
                              opts: FitOptions) -> tuple[float, int]:
    """Masked-token top-1 on ``held``, one sentence at a time (no batching, no padding, no feature cache)."""
    correct = total = 0
    encoder = families.base_encoder(model)
    for i, sentence in enumerate(held):
        enc = tokenizer(sentence, truncation=True, max_length=opts.max_length, return_special_tokens_mask=True)
        ids = torch.tensor(enc["input_ids"])
        candidates = torch.tensor(enc["special_tokens_mask"]) == 0
        for draw in range(draws):
            generator = torch.Generator().manual_seed(fitted_head.mask_seed(seed, 1, i, draw))
            masked, selected = bert_mask(ids, candidates, opts.mask_prob, generator, tokenizer.mask_token_id,
                                         model.get_input_embeddings().weight.shape[0])
            if not selected.any():
                continue
            with torch.no_grad():
                hidden = encoder(input_ids=masked[None], output_hidden_states=True).hidden_states[-1][0]
                guess = head(hidden[selected]).argmax(-1)
            correct += int((guess == ids[selected]).sum())
            total += int(selected.sum())
    return correct / total, total


def test_heldout_accuracy_recomputed_independently(bert_tokenizer) -> None:
    model = tiny_model("bert")
    corpus = builtin_sentences()[:50]
    opts = FitOptions(steps=8, batch_size=8, lr=5e-3, heldout_mask_draws=3, heldout_fraction=0.2, curve=())
    fitted = get_fitted_head(model, bert_tokenizer, corpus, {}, options=opts, seed=4, use_cache=False,
                             progress=False)
    train, held = fitted_head.split_heldout(corpus, opts.heldout_fraction, 4, opts.heldout_max_sentences)
    assert len(held) == 10 and not set(held) & set(train)
    top1, tokens = _independent_heldout_top1(model, bert_tokenizer, fitted.module, held, 3, 4, opts)
    assert fitted.info["heldout_masked_tokens"] == tokens
    assert fitted.info["heldout_masked_top1"] == pytest.approx(top1, abs=1e-9)
    corpus_info = fitted.info["corpus"]
    assert corpus_info["heldout_sentences"] == 10 and corpus_info["train_sentences"] == 40
    assert corpus_info["mask_draws_per_sentence"] == math.ceil(8 * 8 / 40)


def test_heldout_part_is_capped_for_large_corpora() -> None:
    corpus = [f"sentence number {i}" for i in range(5000)]
    train, held = fitted_head.split_heldout(corpus, 0.1, 0, max_heldout=256)
    assert len(held) == 256 and len(train) == 5000 - 256 and not set(held) & set(train)
    assert fitted_head.split_heldout(corpus, 0.1, 0, max_heldout=256) == (train, held)  # seeded


def test_growth_curve_refits_on_fractions_and_ends_with_the_head_itself(bert_tokenizer) -> None:
    model = tiny_model("bert")
    corpus = builtin_sentences()[:90]
    opts = FitOptions(steps=10, batch_size=8, lr=5e-3, heldout_mask_draws=1, curve=(0.25, 0.5))
    fitted = get_fitted_head(model, bert_tokenizer, corpus, {}, options=opts, use_cache=False, progress=False)
    curve = fitted.info["growth_curve"]
    used = fitted.info["corpus"]["train_sentences"]
    assert [c["sentences"] for c in curve] == [round(0.25 * used), round(0.5 * used), used]
    assert curve[-1]["heldout_masked_top1"] == fitted.info["heldout_masked_top1"]
    assert len({c["heldout_masked_tokens"] for c in curve}) == 1  # every point is scored on the same held-out text
    assert curve[0]["rows"] == curve[0]["sentences"] * fitted.info["corpus"]["mask_draws_per_sentence"]
    assert curve[0]["final_train_loss"] != curve[-1]["final_train_loss"]  # a separate fit, not a copy
    flat = FitOptions(steps=10, batch_size=8, lr=5e-3, heldout_mask_draws=1, curve=())
    alone = get_fitted_head(model, bert_tokenizer, corpus, {}, options=flat, use_cache=False, progress=False)
    assert [c["sentences"] for c in alone.info["growth_curve"]] == [used]
    assert alone.info["heldout_masked_top1"] == fitted.info["heldout_masked_top1"]  # the curve leaves the head alone
    assert fitted_head.fit_cache_key("m", "c", 0, opts, "float32") != fitted_head.fit_cache_key(
        "m", "c", 0, flat, "float32")


def test_cache_key_follows_the_fit_corpus(bert_tokenizer, tmp_path) -> None:
    from bertscope.data import texts

    model = tiny_model("bert")
    measured = texts.load_texts(max_examples=10)
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_text("\n".join(builtin_sentences()[150:190]), encoding="utf-8")
    two.write_text("\n".join(builtin_sentences()[150:189]), encoding="utf-8")
    kwargs = {"options": FAST, "progress": False, "overlap": "allow"}
    a = fitted_head.fit_for_texts(model, bert_tokenizer, measured, fit_corpus=str(one), **kwargs)
    b = fitted_head.fit_for_texts(model, bert_tokenizer, measured, fit_corpus=str(two), **kwargs)
    again = fitted_head.fit_for_texts(model, bert_tokenizer, measured, fit_corpus=str(one), **kwargs)
    assert a.info["key"] != b.info["key"] and again.info["key"] == a.info["key"] and again.info["reused"]
    assert a.info["corpus"]["sha256"] != b.info["corpus"]["sha256"]
    assert a.info["corpus"]["kind"] == "file" and a.info["measured_texts"]["sha256"] == measured.describe()["sha256"]
    assert a.info["fit_overlap"]["measured"] == len(measured.sentences)


def test_fit_for_texts_refuses_an_overlap_before_fitting(bert_tokenizer, monkeypatch) -> None:
    from bertscope.data import texts

    model = tiny_model("bert")
    measured = texts.load_texts(max_examples=12)

    def no_fit(*args, **kwargs):
        raise AssertionError("an overlap must be refused before any fitting")

    monkeypatch.setattr(fitted_head, "get_fitted_head", no_fit)
    with pytest.raises(BertscopeError, match="12 of the 12 measured sentences"):
        fitted_head.fit_for_texts(model, bert_tokenizer, measured, fit_corpus="source", options=FAST)
    with pytest.raises(BertscopeError, match="fit corpus"):
        fitted_head.fit_for_texts(model, bert_tokenizer, texts.load_texts(texts="builtin-fit", max_examples=5),
                                  fit_corpus="builtin", options=FAST)
    monkeypatch.undo()
    flagged = fitted_head.fit_for_texts(model, bert_tokenizer, measured, fit_corpus="source", overlap="allow",
                                        options=FAST, use_cache=False, progress=False)
    assert flagged.info["fit_overlap"]["flagged"] and flagged.info["fit_overlap"]["measured_in_fit"] == 12
