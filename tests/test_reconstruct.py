"""`bertscope reconstruct` end to end: every family against the Hugging Face model's own outputs, batch-size and
padding independence, the CLI and its files, and every user error as a one-line message with exit code 2."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import transformers

from bertscope.cli import main
from bertscope.core.errors import BertscopeError
from bertscope.data.texts import builtin_sentences
from bertscope.lens.config import ReconstructConfig
from bertscope.lens.reconstruct import run_reconstruct
from bertscope.models import families, loading
from conftest import FAMILY_IDS

SENTENCES = [
    "The cat sat on the mat.",
    "A much longer sentence, with commas and a question at the end, is here?",
    "Short.",
    "Rivers flow to the sea, slowly and without hurry.",
    "Why?",
    "She sold twelve old maps at the market on Saturday morning.",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("BERTSCOPE_GLUE_DIR", raising=False)


@pytest.fixture()
def sentence_file(tmp_path) -> Path:
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def _reference(folder: Path, sentences: list[str], *, include_special: bool = False) -> dict[int, dict[str, float]]:
    """Per-layer metrics the plain way: one sentence at a time through AutoModelForMaskedLM (no padding at all);
    the last layer uses the model's own logits, layer l < L the head on ``hidden_states[l]``; rank by argsort,
    NLL by log-softmax."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForMaskedLM.from_pretrained(folder).eval()
    head = families.mlm_head_parts(model, "full")
    depth = families.num_layers(model)
    stats: dict[int, dict[str, list]] = {i: {"rank": [], "nll": [], "exact": [], "top1": []}
                                         for i in range(depth + 1)}
    for sentence in sentences:
        enc = tokenizer(sentence, return_tensors="pt", truncation=True, max_length=128,
                        return_special_tokens_mask=True)
        keep = torch.ones_like(enc["input_ids"][0], dtype=torch.bool) if include_special else \
            enc["special_tokens_mask"][0] == 0
        with torch.no_grad():
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True)
            assert len(out.hidden_states) == depth + 1
            for layer in range(depth + 1):
                logits = out.logits[0] if layer == depth else \
                    head.logits(out.hidden_states[layer][0], is_last_layer=False)
                logits, targets = logits[keep].double(), enc["input_ids"][0][keep]
                order = torch.argsort(logits, dim=-1, descending=True)
                ranks = [order[i].tolist().index(t) for i, t in enumerate(targets.tolist())]
                nll = (-torch.log_softmax(logits, -1).gather(1, targets[:, None])).squeeze(1).tolist()
                stats[layer]["rank"] += ranks
                stats[layer]["nll"] += nll
                stats[layer]["exact"].append(all(r == 0 for r in ranks))
                stats[layer]["top1"] += logits.argmax(-1).tolist()
    out_metrics = {}
    for layer, s in stats.items():
        n = len(s["rank"])
        out_metrics[layer] = {"tokens": n, "top1": sum(r == 0 for r in s["rank"]) / n,
                              "top5": sum(r < 5 for r in s["rank"]) / n,
                              "mean_rank": sum(r + 1 for r in s["rank"]) / n, "nll": sum(s["nll"]) / n,
                              "exact": sum(s["exact"]) / len(s["exact"]),
                              "final_agreement": sum(a == b for a, b in zip(s["top1"], stats[depth]["top1"])) / n}
    return out_metrics


def _assert_same(result, reference: dict[int, dict[str, float]], group: str = "all") -> None:
    for layer, ref in reference.items():
        rec = result.record(layer, group)
        assert rec.tokens == ref["tokens"], layer
        # random tiny models put thousands of logits within float noise of the input token's, so a rank may move
        # by one between a padded batch and a lone sentence; allow that, nothing more
        for name in ("top1", "top5"):
            assert getattr(rec, name) == pytest.approx(ref[name], abs=1.01 / ref["tokens"]), (layer, name)
        assert rec.exact == pytest.approx(ref["exact"], abs=1e-9), layer
        # the same float noise can flip a near-tied arg-max in either of the two layers compared
        assert rec.final_agreement == pytest.approx(ref["final_agreement"], abs=2.01 / ref["tokens"]), layer
        assert rec.mean_rank == pytest.approx(ref["mean_rank"], rel=1e-4, abs=0.5), layer
        assert rec.nll == pytest.approx(ref["nll"], rel=1e-5, abs=1e-5), layer
    assert result.record(max(reference), group).final_agreement == 1.0


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_every_family_matches_the_masked_lm_and_its_hidden_states(name: str, tiny_checkpoint,
                                                                  sentence_file) -> None:
    folder = tiny_checkpoint(name)
    result = run_reconstruct(ReconstructConfig(model=str(folder), texts=str(sentence_file), batch_size=4,
                                               progress=False, device="cpu", examples=0))
    assert result.head["mode"] == "pretrained"
    assert [r.layer for r in result.records] == list(range(families.num_layers(transformers.AutoConfig.from_pretrained(folder)) + 1))
    _assert_same(result, _reference(folder, SENTENCES))


def test_include_special_counts_cls_and_sep(tiny_checkpoint, sentence_file) -> None:
    folder = tiny_checkpoint("bert")
    plain = run_reconstruct(ReconstructConfig(model=str(folder), texts=str(sentence_file), progress=False))
    special = run_reconstruct(ReconstructConfig(model=str(folder), texts=str(sentence_file), progress=False,
                                                include_special=True))
    assert special.record(0).tokens == plain.record(0).tokens + 2 * len(SENTENCES)
    _assert_same(special, _reference(folder, SENTENCES, include_special=True))


@pytest.mark.parametrize("name", ["bert", "modernbert", "deberta-v2"])
def test_batch_size_and_padding_do_not_change_the_numbers(name: str, tiny_checkpoint, tmp_path) -> None:
    folder = tiny_checkpoint(name)
    path = tmp_path / "many.txt"
    path.write_text("\n".join(builtin_sentences()[:24]), encoding="utf-8")
    common = {"model": str(folder), "texts": str(path), "progress": False, "mask_prob": 0.2, "seed": 3,
              "examples": 0}
    one = run_reconstruct(ReconstructConfig(batch_size=1, **common))
    many = run_reconstruct(ReconstructConfig(batch_size=32, **common))
    assert one.groups == many.groups == ["all", "masked", "unmasked"]
    for a, b in zip(one.records, many.records):
        assert (a.layer, a.group, a.tokens, a.sentences) == (b.layer, b.group, b.tokens, b.sentences)
        for metric in ("top1", "top5", "exact"):
            assert getattr(a, metric) == pytest.approx(getattr(b, metric), abs=1.5 / a.tokens)
        assert a.mean_rank == pytest.approx(b.mean_rank, rel=1e-3)
        assert a.nll == pytest.approx(b.nll, rel=1e-5, abs=1e-5)


def test_masking_splits_positions_and_scores_the_original_tokens(tiny_checkpoint, sentence_file) -> None:
    folder = tiny_checkpoint("bert")
    result = run_reconstruct(ReconstructConfig(model=str(folder), texts=str(sentence_file), progress=False,
                                               mask_prob=0.5, seed=1))
    for layer in range(4):
        masked, unmasked, both = (result.record(layer, g) for g in ("masked", "unmasked", "all"))
        assert masked.tokens > 0 and unmasked.tokens > 0
        assert masked.tokens + unmasked.tokens == both.tokens
        weighted = (masked.nll * masked.tokens + unmasked.nll * unmasked.tokens) / both.tokens
        assert weighted == pytest.approx(both.nll, rel=1e-9)
    metrics = result.metrics()
    assert "final.masked.top1" in metrics and "layer0.unmasked.nll" in metrics


def test_layer_subset(tiny_checkpoint, sentence_file) -> None:
    folder = tiny_checkpoint("bert")
    full = run_reconstruct(ReconstructConfig(model=str(folder), texts=str(sentence_file), progress=False))
    part = run_reconstruct(ReconstructConfig(model=str(folder), texts=str(sentence_file), progress=False,
                                             layers="0,-1"))
    assert [r.layer for r in part.records] == [0, 3]
    for layer in (0, 3):
        assert part.record(layer).nll == pytest.approx(full.record(layer).nll, rel=1e-6)
    everything = run_reconstruct(ReconstructConfig(model=str(folder), texts=str(sentence_file), progress=False,
                                                   layers="all"))
    assert [r.layer for r in everything.records] == [r.layer for r in full.records] == [0, 1, 2, 3]
    with pytest.raises(BertscopeError, match="--layers .*hidden-state index 4 is out of range"):
        run_reconstruct(ReconstructConfig(model=str(folder), texts=str(sentence_file), progress=False, layers="0-4"))


def test_cli_writes_json_csv_png_on_a_tiny_checkpoint(tiny_checkpoint, sentence_file, tmp_path, capsys) -> None:
    folder = tiny_checkpoint("roberta")
    out = tmp_path / "run"
    code = main(["reconstruct", "--model", str(folder), "--texts", str(sentence_file), "--out", str(out),
                 "--no-progress", "--batch-size", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "top-1" in printed and "layer" in printed
    payload = json.loads((out / "reconstruct.json").read_text())
    assert payload["config"]["batch_size"] == 2 and payload["config"]["model"] == str(folder)
    assert payload["environment"]["versions"]["torch"] and "git" in payload["environment"]
    assert payload["model"]["family"] == "roberta" and payload["head"]["mode"] == "pretrained"
    assert [r["layer"] for r in payload["records"]] == [0, 1, 2, 3]
    assert payload["layer_numbering"] == "hidden_state"
    assert payload["texts"]["num_sentences"] == len(SENTENCES)
    assert payload["examples"] and set(payload["examples"][0]["top1_by_layer"]) == {"0", "1", "2", "3"}
    with (out / "reconstruct.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and float(rows[3]["top1"]) == payload["records"][3]["top1"]
    assert float(rows[3]["final_agreement"]) == 1.0 and rows[0]["head_from"] == "self"
    assert [float(r["final_agreement"]) for r in rows] == [r["final_agreement"] for r in payload["records"]]
    assert payload["head"]["head_from"]["from"] == "self" and "final_agreement" in payload["metric_definitions"]
    assert "agree" in printed
    views = payload["token_view"]
    assert [v["index"] for v in views] == [0, 1, 2] and set(views[0]["top1"]) == {"0", "1", "2", "3"}
    assert views[0]["top1"]["3"] == payload["examples"][0]["top1_by_layer"]["3"]  # the same decoding, twice
    assert (out / "token_view.png").read_bytes()[:4] == b"\x89PNG" and (out / "token_view.html").is_file()
    assert {"token_view_png", "token_view_html"} <= set(payload["files"])
    assert (out / "reconstruct.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "reconstruct.pdf").read_bytes()[:5] == b"%PDF-" and b"<svg" in (out / "reconstruct.svg").read_bytes()
    assert {k: Path(v).name for k, v in payload["files"].items() if k in ("png", "svg", "pdf")} == {
        "png": "reconstruct.png", "svg": "reconstruct.svg", "pdf": "reconstruct.pdf"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_embedded_default_fits_a_head_then_reuses_it(tmp_path, capsys) -> None:
    out = tmp_path / "default"
    args = ["reconstruct", "--out", str(out), "--max-examples", "12", "--fit-steps", "4", "--fit-batch-size", "8",
            "--no-progress", "--layers", "0,3,6"]
    assert main(args) == 0
    first = json.loads((out / "reconstruct.json").read_text())
    assert first["head"]["mode"] == "fit" and first["head"]["requested"] == "auto"
    fit = first["head"]["fit"]
    assert not fit["reused"] and 0.0 <= fit["heldout_masked_top1"] <= 1.0
    assert fit["corpus"]["kind"] in ("glue-train", "builtin-fit") and fit["fit_overlap"]["measured_in_fit"] == 0
    assert first["model"]["name"] == loading.DEFAULT_MODEL_NAME and first["model"]["num_layers"] == 6
    assert main(args) == 0
    second = json.loads((out / "reconstruct.json").read_text())
    assert second["head"]["fit"]["reused"] and second["head"]["fit"]["key"] == fit["key"]
    assert second["records"] == first["records"]
    assert "masked-token top-1" in capsys.readouterr().out


def _error(args: list[str], capsys) -> str:
    code = main(["reconstruct", "--no-progress", *args])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # earlier lines: library load progress bars
    assert code == 2, err
    assert err.startswith("bertscope reconstruct: error:")
    return err


def test_user_errors_are_one_line_and_exit_2(tiny_checkpoint, sentence_file, tmp_path, capsys) -> None:
    folder = str(tiny_checkpoint("bert"))
    base = ["--model", folder, "--texts", str(sentence_file)]
    assert "out of range" in _error([*base, "--layers", "9"], capsys)
    assert "does not exist" in _error(["--model", folder, "--texts", str(tmp_path / "missing.txt")], capsys)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    assert "no sentences" in _error(["--model", folder, "--texts", str(empty)], capsys)
    assert "mask-prob" in _error([*base, "--mask-prob", "1.5"], capsys)
    assert "batch-size" in _error([*base, "--batch-size", "0"], capsys)
    assert "either" in _error([*base, "--task", "sst2"], capsys)
    assert "model folder" in _error(["--model", str(tmp_path / "no-such-model"), "--texts", str(sentence_file)],
                                    capsys)


def test_unknown_task_and_missing_glue_folder(tiny_checkpoint, tmp_path, capsys, glue_dir) -> None:
    folder = str(tiny_checkpoint("bert"))
    assert "unknown GLUE task" in _error(["--model", folder, "--task", "sst3", "--data-dir", str(glue_dir)], capsys)
    assert "does not exist" in _error(["--model", folder, "--task", "sst2", "--data-dir", str(tmp_path / "x")],
                                      capsys)


def test_pretrained_head_refused_for_a_checkpoint_without_one(sentence_file, tmp_path, capsys) -> None:
    out = tmp_path / "never"
    err = _error(["--head", "pretrained", "--texts", str(sentence_file), "--out", str(out)], capsys)
    assert "no pretrained masked-LM head" in err and "--head fit" in err
    assert not (out / "reconstruct.json").exists()  # nothing half-written


def test_unreachable_hub_without_a_local_copy(sentence_file, capsys, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import; env alone is too late
    err = _error(["--model", "bertscope-test/definitely-not-a-model", "--texts", str(sentence_file)], capsys)
    assert "hub" in err


def test_glue_source_end_to_end(tiny_checkpoint, glue_dir) -> None:
    result = run_reconstruct(ReconstructConfig(model=str(tiny_checkpoint("bert")), task="mrpc", split="validation",
                                               data_dir=str(glue_dir), max_examples=10, progress=False))
    assert result.texts["kind"] == "glue" and result.texts["num_sentences"] == 10
    assert result.record(0).sentences == 10
    assert math.isfinite(result.record(3).nll)


# --- the lens closer to paper 1: the original's head for deepened variants, the token view ----------------------


def _deepen(source: Path, out: Path, **op) -> Path:
    from bertscope.surgery.config import DeepenConfig
    from bertscope.surgery.deepen import run_deepen

    run_deepen(DeepenConfig(model=str(source), out=str(out), device="cpu", **op))
    return out


def _final_top1_reference(variant: Path, original: Path, sentences: list[str]) -> float:
    """Share of counted tokens whose input token is the top-1 when the *original's* HF head module (``cls``) reads
    the variant's last hidden state, one sentence at a time."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(variant)
    v = transformers.AutoModelForMaskedLM.from_pretrained(variant).eval()
    o = transformers.AutoModelForMaskedLM.from_pretrained(original).eval()
    hits = total = 0
    for sentence in sentences:
        enc = tokenizer(sentence, return_tensors="pt", return_special_tokens_mask=True)
        keep = enc["special_tokens_mask"][0] == 0
        with torch.no_grad():
            last = v.bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state[0]
            top1 = o.cls(last)[keep].argmax(-1)
        hits += int((top1 == enc["input_ids"][0][keep]).sum())
        total += int(keep.sum())
    return hits / total


def test_deepened_variant_is_decoded_with_the_originals_head_by_default(tiny_checkpoint, sentence_file,
                                                                        tmp_path) -> None:
    original = tiny_checkpoint("bert")
    variant = _deepen(original, tmp_path / "deep", duplicate="1")
    model = transformers.AutoModelForMaskedLM.from_pretrained(variant)
    with torch.no_grad():  # give the variant a head of its own, so whose head decodes shows in the numbers
        model.cls.predictions.transform.dense.weight.mul_(-1.0)
    model.save_pretrained(variant)  # its config keeps the deepen origin
    origin = json.loads((variant / "config.json").read_text())["bertscope_surgery"]
    assert origin["source_model_resolved"] == str(original.resolve()) and origin["layer_map"] == [0, 1, 1, 2]

    def run(**options):
        return run_reconstruct(ReconstructConfig(model=str(variant), texts=str(sentence_file), progress=False,
                                                 token_view=0, examples=0, **options))

    auto, named, own = run(), run(head_from=str(original)), run(head_from="self")
    assert auto.head["head_from"]["from"] == "original" and auto.head["head_from"]["origin_weights_match"]
    assert auto.head["head_from"]["deepen_origin"]["layer_map"] == [0, 1, 1, 2]
    assert named.head["head_from"]["from"] == "path" and own.head["head_from"]["from"] == "self"
    assert [dataclasses_tuple(r) for r in auto.records] == [dataclasses_tuple(r) for r in named.records]
    assert [dataclasses_tuple(r) for r in auto.records] != [dataclasses_tuple(r) for r in own.records]
    reference = _final_top1_reference(variant, original, SENTENCES)
    assert auto.record(4).top1 == pytest.approx(reference, abs=1.01 / auto.record(4).tokens)
    assert "the original's pretrained MLM head" in str(auto.render().caption)


def dataclasses_tuple(record) -> tuple:
    return (record.layer, record.tokens, record.top1, record.top5, record.nll, record.final_agreement)


def test_head_from_original_needs_a_recorded_origin(tiny_checkpoint, sentence_file, tmp_path, capsys) -> None:
    folder = tiny_checkpoint("bert")
    err = _error(["--model", str(folder), "--texts", str(sentence_file), "--head-from", "original"], capsys)
    assert "records no deepen origin" in err
    err = _error(["--model", str(folder), "--texts", str(sentence_file), "--head-from", str(tmp_path / "nope")],
                 capsys)
    assert "--head-from" in err and "cannot load" in err
    err = _error(["--model", str(folder), "--texts", str(sentence_file), "--token-view", "-1"], capsys)
    assert "--token-view must be at least 0" in err


def test_fitted_head_of_a_deepened_headless_model_is_fitted_on_the_original(bert_tokenizer, sentence_file,
                                                                            tmp_path) -> None:
    from conftest import tiny_model

    original = tmp_path / "base"
    base = tiny_model("bert", kind="base")
    base.save_pretrained(original)
    bert_tokenizer.save_pretrained(original)
    variant = _deepen(original, tmp_path / "deep", remove="0")
    options = dict(texts=str(sentence_file), progress=False, fit_corpus=str(sentence_file), fit_overlap="allow",
                   fit_steps=2, fit_batch_size=4, token_view=0, examples=0, layers="-1")  # which head, not its score
    result = run_reconstruct(ReconstructConfig(model=str(variant), **options))
    assert result.head["mode"] == "fit" and result.head["head_from"]["from"] == "original"
    assert result.head["fit"]["model_fingerprint"] == loading.weights_fingerprint(base)
    on_original = run_reconstruct(ReconstructConfig(model=str(original), **options))
    assert on_original.head["fit"]["key"] == result.head["fit"]["key"] and on_original.head["fit"]["reused"]
    own = run_reconstruct(ReconstructConfig(model=str(variant), head_from="self", **options))
    assert own.head["fit"]["model_fingerprint"] != result.head["fit"]["model_fingerprint"]


def test_compare_decodes_a_deepened_variant_with_the_originals_head(tiny_checkpoint, tmp_path) -> None:
    from bertscope.surgery.compare import choose_heads
    from bertscope.surgery.config import CompareConfig

    original = tiny_checkpoint("bert")
    variant = _deepen(original, tmp_path / "deep", duplicate="0")
    model = transformers.AutoModelForMaskedLM.from_pretrained(variant)
    with torch.no_grad():
        model.cls.predictions.bias.add_(1.0)
    model.save_pretrained(variant)
    loaded = [loading.load_model(str(original)), loading.load_model(str(variant))]
    config = CompareConfig(model=str(original), variant=str(variant), progress=False)
    heads, info = choose_heads(config, loaded, None, None)
    assert info["original_head_for"] == [loaded[1].source]
    assert heads[1].bias is heads[0].bias  # the original's, not the variant's shifted one


def test_token_view_of_given_sentences_matches_the_masked_lm(tiny_checkpoint, sentence_file, tmp_path) -> None:
    folder = tiny_checkpoint("bert")
    given = ["The cat sat.", "Why <not> & more?"]
    result = run_reconstruct(ReconstructConfig(model=str(folder), texts=str(sentence_file), progress=False,
                                               token_view_sentences=" | ".join(given), out=str(tmp_path / "o")))
    assert [v.index for v in result.token_views] == [None, None] and [v.text for v in result.token_views] == given
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForMaskedLM.from_pretrained(folder).eval()
    for view, sentence in zip(result.token_views, given):
        enc = tokenizer(sentence, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[0]
        assert list(view.tokens) == tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
        assert list(view.top1[-1]) == tokenizer.convert_ids_to_tokens(logits.argmax(-1).tolist())
        want = torch.softmax(logits.double(), -1)[torch.arange(len(view.tokens)), enc["input_ids"][0]]
        assert view.prob[-1] == pytest.approx(want.tolist(), rel=1e-4, abs=1e-8)
        assert view.counted[0] is False and view.counted[1] is True
    page = (tmp_path / "o" / "token_view.html").read_text(encoding="utf-8")
    assert "Why &lt;not&gt; &amp; more?" in page
    none = run_reconstruct(ReconstructConfig(model=str(folder), texts=str(sentence_file), progress=False,
                                             token_view=0, out=str(tmp_path / "n")))
    assert none.token_views == () and not (tmp_path / "n" / "token_view.html").exists()
