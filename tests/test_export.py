"""Fine-tuned models outside bertscope: the family's plain ``*ForSequenceClassification`` (same logits as the head),
``pipeline("text-classification")`` in a process that cannot import bertscope (same label names and probabilities
as predictions.csv), label names and model cards for heads that are not standard classifiers."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
import yaml

from bertscope import api
from bertscope.core.errors import BertscopeError
from bertscope.data import glue
from bertscope.finetune import export
from bertscope.finetune.command import FinetunedModel, load_finetuned
from bertscope.finetune.head import HeadSpec, SelectingHead
from bertscope.models import families
from conftest import FAMILY_IDS, tiny_config, tiny_model
from conftest import user_error as _user_error

pytestmark = pytest.mark.usefixtures("one_thread")

EXPRESSIBLE = [n for n in FAMILY_IDS if families.sequence_classifier(tiny_config(n)) is not None]
SMALL = {"max_train": 32, "max_eval": 24, "batch_size": 8, "max_length": 48, "progress": False, "epochs": 2,
         "lr": 1e-3, "head_lr": 1e-2}
PAIRS = [("A man is playing a guitar on the street.", "Someone makes music."),
         ("The cat sat.", "A dog barked loudly at the postman this morning."),
         ("Rivers flow to the sea.", "Water moves downhill, slowly, over many years and many miles.")]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card[4:card.index("\n---", 4)])


def _standard_head(model: torch.nn.Module, num_labels: int = 3) -> SelectingHead:
    """A head of the standard shape with weights large enough that the logits differ clearly between inputs."""
    style = families.pooler_style(model)
    spec = HeadSpec(num_labels=num_labels, hidden_size=families.hidden_size(model),
                    layers=(families.num_layers(model),), dims=tuple(range(families.hidden_size(model))),
                    pooler=True, task=None, label_names=tuple("abc"[:num_labels]),
                    pooler_activation=style.activation, pooler_norm_eps=style.norm_eps,
                    pooler_norm_bias=style.norm_bias, pooler_dropout_before=style.dropout_before)
    head = SelectingHead(spec, seed=1, pooler=families.pooler_parts(model))
    with torch.no_grad():
        head.classifier.weight.normal_(0.0, 1.0)
        head.pooler_dense.weight.normal_(0.0, 0.5)
        if head.pooler_norm is not None:
            head.pooler_norm.weight.normal_(1.0, 0.3)
    return head.eval()


# --- the family table ------------------------------------------------------------------------------------------------


def test_every_family_has_its_own_classifier_in_the_table() -> None:
    assert EXPRESSIBLE == FAMILY_IDS


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_the_table_names_the_class_transformers_builds_and_its_linear_layers(name: str) -> None:
    config = tiny_config(name)
    layout = families.sequence_classifier(config)
    assert layout is not None
    config.num_labels = 3
    setattr(config, layout.dropout_key, 0.37)  # the classifier's dropout reads this key
    reference = transformers.AutoModelForSequenceClassification.from_config(config)
    assert type(reference).__name__ == layout.class_name(config.model_type)
    pooler, classifier = reference.get_submodule(layout.pooler), reference.get_submodule(layout.classifier)
    assert isinstance(pooler, torch.nn.Linear) and pooler.weight.shape == (32, 32)
    assert isinstance(classifier, torch.nn.Linear) and classifier.weight.shape == (3, 32)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.37 for m in reference.modules())
    if layout.norm is not None:
        assert isinstance(reference.get_submodule(layout.norm), torch.nn.LayerNorm)


@pytest.mark.parametrize("name", ["electra", "distilbert", "deberta-v2", "modernbert"])
def test_a_head_with_another_family_s_pooler_is_not_that_family_s_classifier(name: str) -> None:
    model = tiny_model(name, "base")
    spec = HeadSpec.from_dict({**_standard_head(model).spec.to_dict(), "pooler_activation": "tanh",
                               "pooler_norm_eps": None, "pooler_dropout_before": False})
    reason = export.classifier_blocker(spec, model)
    assert reason and "pooler (tanh) is not" in reason and "\n" not in reason


@pytest.mark.parametrize("name", EXPRESSIBLE)
def test_the_standard_head_becomes_the_classifier_with_the_same_logits(name: str, bert_tokenizer) -> None:
    model = tiny_model(name, "base")
    head = _standard_head(model)
    assert export.classifier_blocker(head.spec, model) is None
    before = torch.get_rng_state()
    classifier = export.to_sequence_classifier(model, head)
    assert torch.equal(torch.get_rng_state(), before)  # building it left the global RNG alone
    assert classifier.config.id2label == {0: "a", 1: "b", 2: "c"} and classifier.config.num_labels == 3
    assert classifier.config.problem_type == "single_label_classification"
    ours = FinetunedModel(encoder=model, head=head, tokenizer=bert_tokenizer).logits(PAIRS, max_length=32)
    enc = bert_tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
    if not families.uses_token_type_ids(model):
        enc.pop("token_type_ids")
    with torch.no_grad():
        theirs = classifier(**enc).logits
    assert (ours.max(0).values - ours.min(0).values).min() > 1e-3  # inputs differ by far more than the tolerance
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("change", [{"pooler": False}, {"head": "mlp2"}, {"token": "mean"}, {"layers": (2,)},
                                    {"dims": tuple(range(31))}, {"layers": (1, 3)}])
def test_every_other_head_is_not_a_standard_classifier(change: dict) -> None:
    model = tiny_model("bert", "base")
    values = {**_standard_head(model).spec.to_dict(), **change}
    spec = HeadSpec.from_dict(values)
    reason = export.classifier_blocker(spec, model)
    assert reason and "\n" not in reason
    head = SelectingHead(spec, seed=0, pooler=families.pooler_parts(model) if spec.pooler else None)
    with pytest.raises(BertscopeError, match="not a standard sequence classifier"):
        export.to_sequence_classifier(model, head)


def test_prediction_rows_name_labels_and_hold_the_softmax() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.5]])
    rows = export.prediction_rows(logits, ("x", "y", "z"), regression=False, labels=[2, None])
    expected = torch.softmax(logits.double(), -1)
    assert rows[0]["label_name"] == "z" and rows[1]["label_name"] is None
    assert [r["prediction_name"] for r in rows] == ["x", "y"] and [r["prediction"] for r in rows] == [0, 1]
    for row, p in zip(rows, expected):
        assert [row[f"p_{n}"] for n in "xyz"] == pytest.approx(p.tolist(), abs=1e-12)
    scores = export.prediction_rows(torch.tensor([[1.5], [4.25]]), ("score",), regression=True)
    assert scores == [{"prediction": 1.5}, {"prediction": 4.25}]


# --- end to end: finetune --save-model, then a process that cannot import bertscope ------------------------------------

PIPELINE_SCRIPT = r"""
import sys
sys.modules["bertscope"] = None  # this process must not be able to import bertscope
import json
try:
    import bertscope  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("bertscope was importable")
from transformers import pipeline

jobs = json.load(open(sys.argv[1], encoding="utf-8"))
out = {}
for folder, rows in jobs.items():
    classifier = pipeline("text-classification", model=folder, device="cpu")
    answers = []
    for a, b in rows:
        scores = classifier({"text": a, "text_pair": b}, truncation=True, top_k=None)
        best = classifier({"text": a, "text_pair": b}, truncation=True)
        answers.append({"scores": {s["label"]: s["score"] for s in scores}, "label": best["label"],
                        "score": best["score"]})
    out[folder] = answers
json.dump(out, open(sys.argv[2], "w", encoding="utf-8"))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_checkpoint, glue_dir) -> dict[str, Path]:
    """``finetune --pooler --save-model`` on rte for every family with a standard classifier, and on stsb for BERT;
    the BERT source carries a model card whose license must survive."""
    root = tmp_path_factory.mktemp("exported")
    runs: dict[str, Path] = {}
    for name, task in [*((n, "rte") for n in EXPRESSIBLE), ("bert", "stsb")]:
        source = tiny_checkpoint(name, 2)
        if name == "bert":
            source = root / f"source-{task}"
            shutil.copytree(tiny_checkpoint(name, 2), source)
            (source / "README.md").write_text("---\nlicense: mit\ntags:\n- tiny\n---\n# A tiny model\n")
        out = root / f"{name}-{task}"
        api.finetune(model=str(source), task=task, data_dir=str(glue_dir), pooler=True, save_model=True,
                     out=str(out), **SMALL)
        runs[f"{name}-{task}"] = out
    return runs


@pytest.fixture(scope="module")
def pipeline_answers(exported, glue_dir, tmp_path_factory) -> dict[str, list[dict]]:
    """One fresh Python process runs every exported folder with transformers' pipeline over its dev rows."""
    root = tmp_path_factory.mktemp("pipeline")
    jobs = {}
    for key, out in exported.items():
        task = key.split("-")[-1]
        dev = {ex.idx: ex.texts for ex in glue.load_split(task, "validation", glue_dir).examples}
        jobs[str(out / "model")] = [dev[int(r["idx"])] for r in _rows(out / "predictions.csv")]
    (root / "jobs.json").write_text(json.dumps(jobs), encoding="utf-8")
    (root / "run.py").write_text(PIPELINE_SCRIPT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(root / "run.py"), str(root / "jobs.json"), str(root / "out.json")],
                          capture_output=True, text=True, timeout=600, cwd=root, env={**env, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads((root / "out.json").read_text(encoding="utf-8"))
    return {key: answers[str(out / "model")] for key, out in exported.items()}


@pytest.mark.parametrize("name", EXPRESSIBLE)
def test_pipeline_without_bertscope_agrees_with_every_row_of_predictions_csv(name, exported, pipeline_answers):
    out = exported[f"{name}-rte"]
    config = json.loads((out / "model" / "config.json").read_text())
    layout = families.sequence_classifier(tiny_config(name))
    assert config["architectures"] == [layout.class_name(config["model_type"])]
    assert config["id2label"] == {"0": "entailment", "1": "not_entailment"} and config["num_labels"] == 2
    assert config["label2id"] == {"entailment": 0, "not_entailment": 1}
    assert config["problem_type"] == "single_label_classification"
    rows = _rows(out / "predictions.csv")
    answers = pipeline_answers[f"{name}-rte"]
    assert len(rows) == len(answers) == 24
    for row, answer in zip(rows, answers):
        assert answer["label"] == row["prediction_name"] in ("entailment", "not_entailment")
        assert row["label_name"] == glue.get_task("rte").label_names[int(row["label"])]
        for label, score in answer["scores"].items():
            assert score == pytest.approx(float(row[f"p_{label}"]), abs=1e-5)
    # bertscope's own loader reads the same folder (the encoder out of the classifier, the head beside it)
    reloaded = load_finetuned(out)
    assert reloaded.label_names == ("entailment", "not_entailment") and reloaded.spec.pooler


def test_stsb_exports_a_one_output_regression_model(exported, pipeline_answers) -> None:
    out = exported["bert-stsb"]
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["num_labels"] == 1
    assert config["id2label"] == {"0": export.REGRESSION_LABEL}
    rows = _rows(out / "predictions.csv")
    assert "prediction_name" not in rows[0] and not any(k.startswith("p_") for k in rows[0])
    for row, answer in zip(rows, pipeline_answers["bert-stsb"]):
        assert answer["label"] == export.REGRESSION_LABEL
        assert answer["score"] == pytest.approx(float(row["prediction"]), abs=1e-5)


def test_exported_card_keeps_the_source_license_and_shows_the_pipeline(exported) -> None:
    out = exported["bert-rte"]
    card = (out / "model" / "README.md").read_text(encoding="utf-8")
    meta = _front_matter(card)
    payload = json.loads((out / "results.json").read_text())
    assert meta["license"] == "mit" and "tiny" in meta["tags"] and "bertscope" in meta["tags"]
    assert meta["pipeline_tag"] == "text-classification" and meta["library_name"] == "transformers"
    assert meta["datasets"] == ["nyu-mll/glue"]
    (result,) = meta["model-index"][0]["results"]
    assert result["metrics"][0]["value"] == pytest.approx(payload["final"]["validation"]["accuracy"])
    assert 'pipeline("text-classification"' in card and "BertForSequenceClassification" in card
    assert "`--pooler`" in card and "`--lr` | `0.001`" in card and "--save-model" in card
    assert "| 0 | entailment |" in card and "A tiny model" not in card
    assert f"{payload['final']['validation']['accuracy']:.4f}" in card
    head = json.loads((out / "model" / "head_config.json").read_text())
    assert head["label_names"] == ["entailment", "not_entailment"] and head["task"] == "rte"
    from huggingface_hub import ModelCard

    assert ",," not in card and ModelCard.load(out / "model" / "README.md").data.license == "mit"
    assert "base_model" not in meta  # the source is a folder on this machine, not a hub id


def test_saved_files_follow_the_umask(exported) -> None:
    from bertscope.core.results import file_mode

    folder = exported["bert-rte"] / "model"
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert modes["model.safetensors"] == file_mode() and set(modes.values()) == {file_mode()}


def test_a_head_that_is_not_standard_keeps_label_names_a_card_and_predict_reproduces_it(tmp_path,
                                                                                       tiny_checkpoint,
                                                                                       glue_dir) -> None:
    out = tmp_path / "subset"
    api.finetune(model=str(tiny_checkpoint("bert", 2)), task="rte", data_dir=str(glue_dir), dims="random:5",
                 token="mean", save_model=True, out=str(out), **SMALL)
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]
    assert config["id2label"] == {"0": "entailment", "1": "not_entailment"}
    card = (out / "model" / "README.md").read_text(encoding="utf-8")
    meta = _front_matter(card)
    assert meta["library_name"] == "bertscope" and "5 of the 32 hidden dimensions" in card
    assert "the mean token" in card and "load_finetuned" in card and "bertscope predict" in card
    assert 'pipeline("text-classification", model=' not in card
    predicted = api.predict(model=str(out), data_dir=str(glue_dir), max_examples=24, progress=False,
                            out=str(tmp_path / "predicted"))
    ours = _rows(tmp_path / "predicted" / "predictions.csv")
    theirs = _rows(out / "predictions.csv")
    assert [r["idx"] for r in ours] == [r["idx"] for r in theirs]
    for a, b in zip(ours, theirs):
        assert a["prediction_name"] == b["prediction_name"] and a["label_name"] == b["label_name"]
        for label in ("entailment", "not_entailment"):
            assert float(a[f"p_{label}"]) == pytest.approx(float(b[f"p_{label}"]), abs=1e-5)
    payload = json.loads((out / "results.json").read_text())
    assert predicted.scores["accuracy"] == pytest.approx(payload["final"]["validation"]["accuracy"])


@pytest.mark.parametrize("name", ["electra", "modernbert"])
def test_a_head_without_the_pooler_says_so_before_training_and_still_saves_label_names(name, tmp_path,
                                                                                     tiny_checkpoint, glue_dir,
                                                                                     caplog) -> None:
    out = tmp_path / name
    with caplog.at_level("WARNING", logger="bertscope"):
        api.finetune(model=str(tiny_checkpoint(name, 2)), task="rte", data_dir=str(glue_dir), save_model=True,
                     out=str(out), **SMALL)
    (said,) = [r.getMessage() for r in caplog.records if "--save-model" in r.getMessage()]
    assert "does not use the pooler" in said and "\n" not in said
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "entailment", "1": "not_entailment"}
    card = (out / "model" / "README.md").read_text(encoding="utf-8")
    assert "does not use the pooler" in card and "load_finetuned" in card


def test_a_fine_tuned_sentence_transformers_encoder_stays_one(tmp_path, glue_dir, default_model_dir):
    """The embedded default is a sentence-transformers model: a head that is no standard classifier saves the
    fine-tuned encoder, and SentenceTransformer loads it with the source's modules (Normalize, max_seq_length)."""
    st = pytest.importorskip("sentence_transformers")
    out = tmp_path / "ft"
    result = api.finetune(task="rte", data_dir=str(glue_dir), max_train=16, max_eval=8, epochs=1, batch_size=8,
                          max_length=48, token="mean", progress=False, out=str(out), save_model=True)
    assert result.saved_model == str(out / "model")
    source = st.SentenceTransformer(default_model_dir, device="cpu")
    tuned = st.SentenceTransformer(str(out / "model"), device="cpu")
    assert [type(m).__name__ for m in tuned] == [type(m).__name__ for m in source]
    assert tuned.max_seq_length == source.max_seq_length
    vectors = tuned.encode(["a fine-tuned encoder", "still a sentence model"], convert_to_tensor=True)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(2), atol=1e-5, rtol=0)


# --- atomic saves: a crash leaves the previous folder or the new one, never a mix; leftovers are cleared ------------




def _save_id(folder: Path, name: str) -> str:
    return json.loads((folder / name).read_text(encoding="utf-8"))[export.SAVE_ID_KEY]


def test_a_save_is_published_whole_with_one_id_in_encoder_and_head(tmp_path, bert_tokenizer) -> None:
    model = tiny_model("bert", "base")
    target = tmp_path / "out" / "model"
    export.save_finetuned(target, model, _standard_head(model), bert_tokenizer, seed=0, max_length=32)
    first = _save_id(target, "config.json")
    assert first == _save_id(target, "head_config.json")
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # no temp folder beside it
    export.save_finetuned(target, model, _standard_head(model, 2), bert_tokenizer, seed=0, max_length=32)
    second = _save_id(target, "config.json")
    assert second == _save_id(target, "head_config.json") != first
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # the previous folder is gone too
    assert load_finetuned(target).spec.num_labels == 2


def test_a_save_that_fails_half_way_leaves_the_previous_folder_untouched(tmp_path, bert_tokenizer,
                                                                         monkeypatch) -> None:
    model = tiny_model("bert", "base")
    target = tmp_path / "model"
    export.save_finetuned(target, model, _standard_head(model), bert_tokenizer, seed=0)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def crash(self, folder, *, seed=0):  # the encoder and tokenizer are written by now
        raise KeyboardInterrupt

    monkeypatch.setattr(SelectingHead, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        export.save_finetuned(target, model, _standard_head(model, 2), bert_tokenizer, seed=0)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_killed_save_leaves_a_leftover_the_next_save_removes(tmp_path, bert_tokenizer) -> None:
    """A save SIGKILLed between the encoder and the head: the previous folder stays as it was, the temp folder of
    the dead process is removed by the next save, a live process's temp folder is left alone."""
    from bertscope.core import publish

    model = tiny_model("bert", "base")
    target = tmp_path / "model"
    export.save_finetuned(target, model, _standard_head(model), bert_tokenizer, seed=0)
    previous = _save_id(target, "config.json")
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import tiny_model
import transformers
from bertscope.finetune import export
from bertscope.models import families
from bertscope.finetune.head import HeadSpec, SelectingHead
model = tiny_model("bert", "base")
spec = HeadSpec(num_labels=2, hidden_size=32, layers=(3,), dims=tuple(range(32)), pooler=True)
SelectingHead.save = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
tokenizer = transformers.AutoTokenizer.from_pretrained({str(bert_tokenizer.name_or_path)!r})
export.save_finetuned({str(target)!r}, model, SelectingHead(spec, pooler=families.pooler_parts(model)), tokenizer,
                      seed=0)
"""
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    leftovers = [p for p in tmp_path.iterdir() if p.name != "model"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".model.tmp-") and publish.is_stale(leftovers[0])
    assert (leftovers[0] / "config.json").is_file()  # the dead save had written its encoder there
    assert _save_id(target, "config.json") == _save_id(target, "head_config.json") == previous
    live = publish.temp_path(target)  # this (live) process's own temp folder
    live.mkdir()
    export.save_finetuned(target, model, _standard_head(model, 2), bert_tokenizer, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", live.name])
    assert load_finetuned(target).spec.num_labels == 2


def test_load_finetuned_refuses_a_head_and_an_encoder_of_different_saves(tmp_path, bert_tokenizer, capsys) -> None:
    model = tiny_model("bert", "base")
    old, new = tmp_path / "old", tmp_path / "new"
    for folder in (old, new):
        export.save_finetuned(folder, model, _standard_head(model), bert_tokenizer, seed=0)
    for name in ("head_config.json", "head.safetensors"):  # what an interrupted non-atomic save left behind
        shutil.copy(old / name, new / name)
    with pytest.raises(BertscopeError, match="different saves"):
        load_finetuned(new)
    texts = tmp_path / "texts.txt"
    texts.write_text("A sentence.\n", encoding="utf-8")
    err = _user_error(["predict", "--model", str(new), "--texts", str(texts), "--no-progress"], capsys)
    assert "different saves" in err and str(new) in err
    legacy = tmp_path / "legacy"  # a folder saved before save ids existed: neither side has one, it loads
    shutil.copytree(old, legacy)
    for name in ("config.json", "head_config.json"):
        values = json.loads((legacy / name).read_text(encoding="utf-8"))
        values.pop(export.SAVE_ID_KEY)
        (legacy / name).write_text(json.dumps(values), encoding="utf-8")
    assert load_finetuned(legacy).spec.num_labels == 3


# --- feature normalisation -----------------------------------------------------------------------------------------


def test_a_standardizing_head_is_exported_folded_with_the_same_logits(bert_tokenizer) -> None:
    model = tiny_model("bert", "base")
    plain = _standard_head(model)
    spec = HeadSpec.from_dict({**plain.spec.to_dict(), "feature_norm": "standardize"})
    head = SelectingHead(spec, seed=1, pooler=families.pooler_parts(model))
    head.load_state_dict({**plain.state_dict(), "feature_mean": torch.randn(32) * 0.3,
                          "feature_std": torch.rand(32) * 0.5 + 0.05})
    head.eval()
    assert export.classifier_blocker(head.spec, model) is None
    folded = export.folded_classifier(head)
    assert not torch.equal(folded.weight, head.classifier.weight)  # the statistics are in the folded layer
    classifier = export.to_sequence_classifier(model, head)
    ours = FinetunedModel(encoder=model, head=head, tokenizer=bert_tokenizer).logits(PAIRS, max_length=32)
    enc = bert_tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = classifier(**enc).logits
    assert (ours.max(0).values - ours.min(0).values).min() > 1e-3
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_a_layernorm_head_is_not_a_standard_classifier_in_one_line() -> None:
    model = tiny_model("bert", "base")
    spec = HeadSpec.from_dict({**_standard_head(model).spec.to_dict(), "feature_norm": "layernorm"})
    reason = export.classifier_blocker(spec, model)
    assert reason is not None and "layernorm" in reason and "\n" not in reason
