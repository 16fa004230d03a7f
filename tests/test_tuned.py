"""The tuned lens: its KL against ``torch.nn.functional.kl_div`` on the Hugging Face masked-LM's own outputs, the last
layer's translator staying the identity, training that beats the logit lens on held-out text, the cache, translators
applied by plain PyTorch in a process that cannot import bertscope, and ``reconstruct --lens tuned`` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from torch.nn import functional as F

from bertscope.core.errors import BertscopeError
from bertscope.data.texts import BUILTIN_FIT_NAME, builtin_part
from bertscope.lens.config import ReconstructConfig
from bertscope.lens.reconstruct import encode_sentences, lens_pass, run_reconstruct
from bertscope.lens.tuned import (
    LensComparison,
    Translators,
    TunedLens,
    TunedOptions,
    get_tuned_lens,
    kl_from_final,
)
from bertscope.models import families
from conftest import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCES = ["The cat sat on the mat.", "Rivers flow to the sea, slowly and without hurry.", "Why?",
             "She sold twelve old maps at the market on Saturday morning."]
SMALL = TunedOptions(steps=60, lr=3e-3, batch_tokens=64, max_sentences=120, heldout_max_sentences=16,
                     curve_points=3)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("BERTSCOPE_GLUE_DIR", raising=False)


def _random_translators(depth: int, width: int) -> Translators:
    translators = Translators(depth + 1, width)
    with torch.no_grad():
        translators.weight.normal_(0.0, 0.05)
        translators.bias.normal_(0.0, 0.1)
    return translators


def test_kl_and_the_comparison_equal_kl_div_on_the_masked_lm_s_own_outputs(bert_tokenizer) -> None:
    model = tiny_model("bert")
    depth = families.num_layers(model)
    translators = _random_translators(depth, families.hidden_size(model))
    head = families.mlm_head_parts(model, "full")
    encoded = encode_sentences(bert_tokenizer, SENTENCES)
    comparison = LensComparison(head, TunedLens(translators, {"num_layers": depth}), range(depth + 1), depth,
                                encoded.targets, chunk=5)  # chunks split sentences: sums must not care
    lens_pass(model, head, encoded, layers=range(depth + 1), batch_size=3, pad_id=bert_tokenizer.pad_token_id,
              on_batch=comparison)
    expected: dict[tuple[str, int], list[torch.Tensor]] = {}
    with torch.no_grad():
        for i, sentence in enumerate(SENTENCES):
            enc = bert_tokenizer(sentence, return_tensors="pt")
            out = model(**enc, output_hidden_states=True)
            keep = encoded.counted[i]
            final = out.logits[0][keep]  # the masked-LM's own output on the last layer
            for layer, state in enumerate(out.hidden_states):
                for kind in ("logit", "tuned"):
                    h = state[0][keep]
                    h = h + h @ translators.weight[layer].T + translators.bias[layer] if kind == "tuned" else h
                    lens = model.cls(h)  # the HF head itself
                    reference = F.kl_div(F.log_softmax(lens, -1), F.log_softmax(final, -1), log_target=True,
                                         reduction="none").sum(-1)
                    torch.testing.assert_close(kl_from_final(final, lens), reference, rtol=1e-4, atol=1e-6)
                    expected.setdefault((kind, layer), []).append(reference)
    rows = {(r["lens"], r["layer"]): r for r in comparison.records()}
    for key, parts in expected.items():
        assert rows[key]["kl_to_final"] == pytest.approx(float(torch.cat(parts).mean()), rel=1e-4, abs=1e-6), key
    assert rows["logit", depth]["kl_to_final"] == pytest.approx(0.0, abs=1e-6)
    assert rows["logit", depth]["final_agreement"] == 1.0
    assert rows["tuned", 1]["kl_to_final"] != pytest.approx(rows["logit", 1]["kl_to_final"])


def test_training_beats_the_logit_lens_on_held_out_text_and_keeps_the_last_layer_the_identity(bert_tokenizer):
    model = tiny_model("bert")
    depth = families.num_layers(model)
    head = families.mlm_head_parts(model, "full")
    lens = get_tuned_lens(model, head, bert_tokenizer, builtin_part(BUILTIN_FIT_NAME), {"kind": "builtin"},
                          options=SMALL, seed=3, use_cache=False, progress=False)
    held = lens.info["heldout"]
    assert [r["layer"] for r in held] == list(range(depth + 1))
    for r in held[:-1]:
        assert r["tuned_kl"] < r["logit_kl"], r
    assert held[-1]["logit_kl"] == pytest.approx(0.0, abs=1e-6)
    assert held[-1]["tuned_kl"] == pytest.approx(0.0, abs=1e-6)
    assert lens.info["last_layer_deviation"] == 0.0
    assert not lens.translators.weight[depth].any() and not lens.translators.bias[depth].any()
    assert lens.translators.weight[:depth].abs().amax() > 1e-3  # the others did move
    curve = lens.info["curve"]
    assert [c["step"] for c in curve] == [20, 40, 60] and curve[-1]["heldout_kl"] < curve[0]["train_kl"]


def test_the_cache_returns_the_same_translators_and_refit_trains_again(bert_tokenizer, tmp_path) -> None:
    model = tiny_model("bert")
    head = families.mlm_head_parts(model, "full")
    opts = TunedOptions(steps=4, batch_tokens=16, max_sentences=20, curve_points=1)
    args = (model, head, bert_tokenizer, builtin_part(BUILTIN_FIT_NAME), {"kind": "builtin"})
    first = get_tuned_lens(*args, options=opts, progress=False)
    again = get_tuned_lens(*args, options=opts, progress=False)
    assert not first.info["reused"] and again.info["reused"] and again.info["path"] == first.info["path"]
    torch.testing.assert_close(again.translators.weight, first.translators.weight)
    other = get_tuned_lens(*args, options=opts, seed=1, progress=False)
    assert other.info["key"] != first.info["key"]
    assert not get_tuned_lens(*args, options=opts, refit=True, progress=False).info["reused"]
    # contents altered behind a valid header no longer match the recorded checksum: trained again
    from safetensors.torch import load_file, save_file

    path = Path(first.info["path"]) / "translators.safetensors"
    tensors = load_file(str(path))
    save_file({k: v + 1.0 for k, v in tensors.items()}, str(path))
    assert not get_tuned_lens(*args, options=opts, progress=False).info["reused"]


PLAIN_SCRIPT = """
import json, sys
sys.modules["bertscope"] = None  # this process must not be able to import bertscope
try:
    import bertscope  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("bertscope was importable")
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer

model_dir, lens_dir, out = sys.argv[1:4]
config = json.load(open(f"{lens_dir}/lens.json"))
t = load_file(f"{lens_dir}/translators.safetensors")
model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
tokenizer = AutoTokenizer.from_pretrained(model_dir)
with torch.no_grad():
    states = model(**tokenizer("The cat sat on the mat.", return_tensors="pt"), output_hidden_states=True).hidden_states
    logits = {}
    for layer in range(config["num_layers"] + 1):
        h = states[layer][0]
        logits[str(layer)] = model.cls(h + h @ t["weight"][layer].T + t["bias"][layer]).tolist()
json.dump(logits, open(out, "w"))
"""


def test_saved_translators_apply_in_plain_pytorch_without_bertscope(tmp_path, tiny_checkpoint, bert_tokenizer):
    folder = tiny_checkpoint("bert")
    model = transformers.AutoModelForMaskedLM.from_pretrained(folder).eval()
    depth = families.num_layers(model)
    lens = TunedLens(_random_translators(depth, families.hidden_size(model)), {"format": "x", "num_layers": depth})
    (tmp_path / "lens").mkdir()
    lens.save(tmp_path / "lens")
    (tmp_path / "run.py").write_text(PLAIN_SCRIPT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(folder), str(tmp_path / "lens"),
                           str(tmp_path / "out.json")], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads((tmp_path / "out.json").read_text())
    head = families.mlm_head_parts(model, "full")
    ids = bert_tokenizer("The cat sat on the mat.", return_tensors="pt")
    with torch.no_grad():
        states = families.base_encoder(model)(**ids, output_hidden_states=True).hidden_states
        for layer in range(depth + 1):
            ours = head.logits(lens.translators(states[layer][0], layer), is_last_layer=layer == depth)
            torch.testing.assert_close(torch.tensor(theirs[str(layer)]), ours, rtol=1e-4, atol=1e-4)


def test_reconstruct_lens_tuned_reports_both_lenses_and_leaves_the_logit_lens_unchanged(tmp_path,
                                                                                      tiny_checkpoint) -> None:
    folder = tiny_checkpoint("bert")
    texts = tmp_path / "sentences.txt"
    texts.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    common = {"model": str(folder), "texts": str(texts), "progress": False, "device": "cpu", "token_view": 0}
    plain = run_reconstruct(ReconstructConfig(**common))
    tuned = run_reconstruct(ReconstructConfig(lens="tuned", lens_steps=10, lens_sentences=40,
                                              out=str(tmp_path / "out"), **common))
    assert "lens" not in plain.to_dict() and plain.records == tuned.records
    section = tuned.to_dict()["lens"]
    assert {r["lens"] for r in section["records"]} == {"logit", "tuned"}
    assert "pretrained MLM head" in section["head"] and section["tuned"]["corpus"]["kind"] == "builtin-fit"
    logit = {r["layer"]: r for r in section["records"] if r["lens"] == "logit"}
    for record in tuned.records:  # the comparison's logit lens is reconstruct's own
        assert logit[record.layer]["top1"] == pytest.approx(record.top1)
        assert logit[record.layer]["nll"] == pytest.approx(record.nll, rel=1e-5)
        assert logit[record.layer]["final_agreement"] == pytest.approx(record.final_agreement)
    files = tuned.files
    for name in ("lens_csv", "lens_png", "translators", "lens_config"):
        assert Path(files[name]).is_file(), name
    assert "lens.tuned.layer1.kl_to_final" in tuned.metrics()


def test_the_token_view_shows_both_lenses_and_agrees_at_the_last_layer(tmp_path, tiny_checkpoint) -> None:
    """--lens tuned draws each token-view sentence twice in one figure: through the head as it is and through the
    translators; at the last hidden state (an identity translator) both decode alike."""
    texts = tmp_path / "sentences.txt"
    texts.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    result = run_reconstruct(ReconstructConfig(model=str(tiny_checkpoint("bert")), texts=str(texts), progress=False,
                                               device="cpu", token_view=2, lens="tuned", lens_steps=10,
                                               lens_sentences=40, out=str(tmp_path / "out")))
    logit = [v for v in result.token_views if v.lens == "logit"]
    tuned = [v for v in result.token_views if v.lens == "tuned"]
    assert len(logit) == len(tuned) == 2
    for a, b in zip(logit, tuned):
        assert a.text == b.text and a.layers == b.layers
        assert a.top1[-1] == b.top1[-1] and a.prob[-1] == pytest.approx(b.prob[-1], abs=1e-5)
        assert b.where.endswith("tuned lens") and b.to_dict()["lens"] == "tuned"
    html = Path(result.files["token_view_html"]).read_text(encoding="utf-8")
    assert "tuned lens" in html and Path(result.files["token_view_png"]).is_file()


def test_a_model_without_an_mlm_head_uses_the_fitted_head_and_says_so(tmp_path, default_model_dir) -> None:
    texts = tmp_path / "sentences.txt"
    texts.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    result = run_reconstruct(ReconstructConfig(texts=str(texts), progress=False, device="cpu", token_view=0,
                                               layers="0,6", fit_steps=5, fit_curve=False, lens="tuned",
                                               lens_steps=3, lens_sentences=20))
    assert result.head["mode"] == "fit" and "fitted head" in result.lens["head"]


@pytest.mark.parametrize("options", [{"lens_steps": 0}, {"lens_lr": 0.0}, {"lens_batch_tokens": 0},
                                     {"lens_sentences": 1}])
def test_bad_lens_options_are_one_line_errors(options) -> None:
    with pytest.raises(BertscopeError) as info:
        ReconstructConfig(lens="tuned", **options)
    assert "\n" not in str(info.value)
