"""Layer surgery: layer maps, in-memory variants, run_layers, and verified Hugging Face checkpoints.

References are independent of bertscope's surgery code: the Hugging Face model's own hidden states, and a fresh
model of the new depth built by ``transformers`` from a config whose weights are loaded from a re-keyed state dict.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bertscope.cli import main
from bertscope.core.errors import BertscopeError, UnsupportedModelError
from bertscope.models import families, loading, runners
from bertscope.surgery import deepen as surgery
from bertscope.surgery.config import DeepenConfig
from bertscope.surgery.layer_map import check_layer_map
from conftest import FAMILY_IDS, tiny_config, tiny_model


def _inputs(seed: int = 1, vocab: int = 30000) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (3, 11), generator=g)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    return ids, mask


def _reference_by_state_dict(model: torch.nn.Module, layer_map: list[int]) -> torch.nn.Module:
    """The mapped model built by transformers itself: new config depth, weights re-keyed from the original."""
    family = families.family_for(model)
    config = copy.deepcopy(model.config)
    setattr(config, family.depth_key, len(layer_map))
    if family.layer_types_key:
        types = getattr(model.config, family.layer_types_key)
        setattr(config, family.layer_types_key, [types[i] for i in layer_map])
    fresh = type(model)(config).eval()
    state = model.state_dict()
    if family.shared_layers:
        fresh.load_state_dict(state)
        return fresh
    pattern = re.compile(rf"^(.*\b{re.escape(family.layers_path)})\.(\d+)\.(.*)$")
    new_state = {}
    for key in fresh.state_dict():
        match = pattern.match(key)
        if match:
            prefix, position, rest = match.groups()
            new_state[key] = state[f"{prefix}.{layer_map[int(position)]}.{rest}"]
        else:
            new_state[key] = state[key]
    fresh.load_state_dict(new_state)
    return fresh


def _valid_dup_map(name: str) -> list[int]:
    # ModernBERT's layer 0 must stay first (it has no attention norm); ALBERT's single group is always a repeat
    return [0, 1, 2, 1, 2, 2] if name != "albert" else [0, 0, 0, 0, 0]


# --- layer maps ---------------------------------------------------------------------------------------------------


def test_layer_map_from_config_counts_transformer_layers() -> None:
    def config(**op: str) -> DeepenConfig:
        return DeepenConfig(out="unused", **op)

    assert surgery.layer_map_from_config(config(duplicate="6-8"), 12) == (
        [0, 1, 2, 3, 4, 5, 6, 6, 7, 7, 8, 8, 9, 10, 11],
        {"op": "duplicate", "layers": [6, 7, 8], "copies": 1, "placement": "adjacent"})
    assert surgery.layer_map_from_config(config(remove="-1"), 4) == ([0, 1, 2], {"op": "remove", "layers": [3]})
    assert surgery.layer_map_from_config(config(layer_map="0-2,2-3"), 4)[0] == [0, 1, 2, 2, 3]
    for op, value in (("duplicate", "12"), ("remove", "-13"), ("layer_map", "0,12")):
        with pytest.raises(BertscopeError, match=f"--{op.replace('_', '-')} .*transformer-layer .*0..11"):
            surgery.layer_map_from_config(config(**{op: value}), 12)


def test_duplicate_map_placements_and_copies() -> None:
    assert surgery.duplicate_map(12, [6, 7, 8]) == [0, 1, 2, 3, 4, 5, 6, 6, 7, 7, 8, 8, 9, 10, 11]
    assert surgery.duplicate_map(12, [6, 7, 8], placement="block") == [0, 1, 2, 3, 4, 5, 6, 7, 8, 6, 7, 8, 9, 10, 11]
    assert surgery.duplicate_map(4, [1], copies=2) == [0, 1, 1, 1, 2, 3]
    assert surgery.duplicate_map(6, [1, 3, 4], copies=2, placement="block") == [0, 1, 1, 1, 2, 3, 4, 3, 4, 3, 4, 5]


def test_remove_map() -> None:
    assert surgery.remove_map(12, [3, 7]) == [0, 1, 2, 4, 5, 6, 8, 9, 10, 11]
    with pytest.raises(BertscopeError, match="no layers"):
        surgery.remove_map(3, [0, 1, 2])


def test_deepen_config_needs_exactly_one_operation_and_an_out() -> None:
    with pytest.raises(BertscopeError, match="exactly one"):
        DeepenConfig(out="x")
    with pytest.raises(BertscopeError, match="exactly one"):
        DeepenConfig(out="x", duplicate="1", remove="2")
    with pytest.raises(BertscopeError, match="--out"):
        DeepenConfig(duplicate="1")
    with pytest.raises(BertscopeError, match="only apply to --duplicate"):
        DeepenConfig(out="x", remove="1", copies=2)


# --- in-memory surgery, every family ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_run_layers_reproduces_the_models_own_hidden_states(name: str) -> None:
    model = tiny_model(name, num_layers=3)
    ids, mask = _inputs()
    with torch.no_grad():
        ref = model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        h0 = runners.embed(model, ids, mask)
        states = runners.run_layers(model, h0, mask, [0, 1, 2], all_states=True)
        # restart from a cached middle state: the prefix is never recomputed
        tail = runners.run_layers(model, states[0], mask, [1, 2], start=1)
    torch.testing.assert_close(h0, ref.hidden_states[0], rtol=0, atol=0)
    for mine, theirs in zip(states[:-1], ref.hidden_states[1:-1]):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    torch.testing.assert_close(families.finalize_hidden(model, states[-1]), ref.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(tail, states[-1], rtol=0, atol=0)


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_identity_map_equals_the_original_exactly(name: str) -> None:
    model = tiny_model(name, num_layers=3)
    variant = surgery.variant_model(model, [0, 1, 2])
    ids, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(variant(input_ids=ids, attention_mask=mask).logits,
                                   model(input_ids=ids, attention_mask=mask).logits, rtol=0, atol=0)


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_duplication_map_equals_a_model_built_by_transformers_from_rekeyed_weights(name: str) -> None:
    model = tiny_model(name, num_layers=3)
    layer_map = _valid_dup_map(name)
    variant = surgery.variant_model(model, layer_map)
    reference = _reference_by_state_dict(model, layer_map)
    ids, mask = _inputs()
    with torch.no_grad():
        got = variant(input_ids=ids, attention_mask=mask).logits
        want = reference(input_ids=ids, attention_mask=mask).logits
        composed = families.finalize_hidden(model, runners.run_layers(model, runners.embed(model, ids, mask),
                                                                        mask, layer_map))
        base = variant.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert families.num_layers(variant) == len(layer_map)
    assert families.num_layers(model) == 3  # the original is untouched
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(base, composed, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, model(input_ids=ids, attention_mask=mask).logits, atol=1e-4)


@pytest.mark.parametrize("name", [n for n in FAMILY_IDS if n != "albert"])
def test_copies_are_real_and_per_layer_state_follows_the_position(name: str) -> None:
    model = tiny_model(name, num_layers=3)
    variant = surgery.variant_model(model, [0, 1, 2, 2])
    layers = families.get_layers(variant)
    with torch.no_grad():
        next(layers[3].parameters()).add_(1.0)
    assert not torch.equal(next(layers[2].parameters()), next(layers[3].parameters()))
    assert torch.equal(next(layers[2].parameters()), next(families.get_layers(model)[2].parameters()))
    for position, layer in enumerate(layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                assert module.layer_idx == position
    if name == "modernbert":
        assert variant.config.layer_types == [model.config.layer_types[i] for i in (0, 1, 2, 2)]
        assert [layer.attention_type for layer in layers] == variant.config.layer_types
    if name == "distilbert":
        assert variant.config.n_layers == 4 and variant.distilbert.transformer.n_layers == 4


def test_albert_only_accepts_maps_that_are_a_repeat_count_of_its_groups() -> None:
    one_group = tiny_model("albert", num_layers=4)
    assert families.num_layers(surgery.variant_model(one_group, [0, 3, 1, 2, 2, 0])) == 6
    config = tiny_config("albert", 4)
    config.num_hidden_groups = 2
    with pytest.raises(BertscopeError, match="shared layer group"):
        check_layer_map(config, [0, 3, 1, 2])
    check_layer_map(config, [0, 1, 2, 3])
    check_layer_map(config, [0, 0, 1, 1, 2, 2, 3, 3])


def test_modernbert_layer_zero_cannot_move() -> None:
    model = tiny_model("modernbert", num_layers=3)
    for bad in ([0, 0, 1, 2], [1, 2], [0, 1, 0, 2]):
        with pytest.raises(BertscopeError, match="layer 0"):
            surgery.variant_model(model, bad)


def test_empty_and_out_of_range_maps_are_refused() -> None:
    model = tiny_model("bert", num_layers=3)
    with pytest.raises(BertscopeError, match="empty"):
        check_layer_map(model, [])
    with pytest.raises(BertscopeError, match="out of range"):
        check_layer_map(model, [0, 3])


# --- saved checkpoints --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deepened(tiny_checkpoint, tmp_path_factory) -> dict[str, tuple[Path, Path, surgery.DeepenResult]]:
    """Every family's tiny checkpoint deepened once: name -> (source, out, result)."""
    root = tmp_path_factory.mktemp("deepened")
    made = {}
    for name in FAMILY_IDS:
        source = tiny_checkpoint(name)
        out = root / name
        spec = ",".join(map(str, _valid_dup_map(name)))
        made[name] = (source, out, surgery.run_deepen(DeepenConfig(model=str(source), layer_map=spec, out=str(out))))
    return made


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_deepen_writes_a_verified_folder_that_reloads_equal(name: str, deepened) -> None:
    source, out, result = deepened[name]
    layer_map = _valid_dup_map(name)
    assert result.verification["ok"] and result.new_depth == len(layer_map)
    assert {"config.json", "model.safetensors", surgery.PROVENANCE_FILE, "tokenizer.json"} <= set(os.listdir(out))
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{name}.")]  # no temp folder left behind
    provenance = json.loads((out / surgery.PROVENANCE_FILE).read_text())
    assert provenance["layer_map"] == layer_map and provenance["source_model"] == str(source)
    assert provenance["environment"]["versions"]["torch"] and provenance["bertscope_version"]
    assert provenance["layer_numbering"] == "block"
    config = json.loads((out / "config.json").read_text())
    assert config["bertscope_surgery"]["layer_map"] == layer_map
    # independent reload: plain transformers, masked-LM head included, equals the re-keyed reference
    import transformers

    original = transformers.AutoModelForMaskedLM.from_pretrained(source).eval()
    reloaded, info = transformers.AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    reference = _reference_by_state_dict(original, layer_map)
    ids, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(input_ids=ids, attention_mask=mask).logits,
                                   reference(input_ids=ids, attention_mask=mask).logits, rtol=1e-5, atol=1e-5)


def test_saved_folder_runs_in_a_transformers_process_without_bertscope(deepened, tmp_path) -> None:
    folders = {name: str(out) for name, (_, out, _) in deepened.items()}
    script = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "bertscope" or name.startswith("bertscope."):
            raise ImportError("bertscope is blocked in this process")
sys.meta_path.insert(0, Block())
import torch, transformers
folders = json.loads(sys.argv[1])
out = {}
for name, folder in folders.items():
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    enc = tok(["the cat sat on the mat", "a short one"], padding=True, return_tensors="pt")
    enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    depth = []
    for auto in (transformers.AutoModel, transformers.AutoModelForMaskedLM,
                 transformers.AutoModelForSequenceClassification):
        model = auto.from_pretrained(folder).eval()
        with torch.no_grad():
            first = model(**enc)[0]
        assert torch.isfinite(first).all()
        depth.append(getattr(model.config, "num_hidden_layers", getattr(model.config, "n_layers", None)))
    out[name] = depth
print(json.dumps(out))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([sys.executable, "-c", script, json.dumps(folders)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    depths = json.loads(done.stdout.strip().splitlines()[-1])
    for name in FAMILY_IDS:
        assert depths[name] == [len(_valid_dup_map(name))] * 3


def test_existing_out_is_refused_unless_overwrite(tiny_checkpoint, tmp_path) -> None:
    source = str(tiny_checkpoint("bert"))
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(BertscopeError, match="already exists"):
        surgery.run_deepen(DeepenConfig(model=source, remove="1", out=str(out)))
    assert (out / "keep.txt").exists()
    result = surgery.run_deepen(DeepenConfig(model=source, remove="1", out=str(out), overwrite=True))
    assert result.new_depth == 2 and not (out / "keep.txt").exists()
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp or set-aside folders left


def test_failure_mid_write_leaves_nothing_that_looks_complete(tiny_checkpoint, tmp_path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise BertscopeError("simulated crash during verification")

    monkeypatch.setattr(surgery, "verify_checkpoint", broken)
    with pytest.raises(BertscopeError, match="simulated"):
        surgery.run_deepen(DeepenConfig(model=str(tiny_checkpoint("bert")), duplicate="1", out=str(tmp_path / "m")))
    assert list(tmp_path.iterdir()) == []


def test_verification_catches_a_reload_that_differs_and_nothing_is_published(tiny_checkpoint, tmp_path,
                                                                             monkeypatch) -> None:
    real = loading.load_saved_architecture
    source = str(tiny_checkpoint("bert"))
    original = real(source).model
    calls = []

    def corrupt_reload(name, **kwargs):  # the first load is the source; later ones are the verification reloads
        loaded = real(name, **kwargs)
        calls.append(name)
        if len(calls) > 1:
            with torch.no_grad():
                for param in families.get_layers(loaded.model)[1].parameters():
                    param.add_(0.5 * torch.randn_like(param))
        return loaded

    monkeypatch.setattr(loading, "load_saved_architecture", corrupt_reload)
    calls.append("warm-up")  # verify_checkpoint below reloads once: corrupt it
    variant = surgery.variant_model(original, [0, 1, 1, 2])
    variant.save_pretrained(tmp_path / "saved")
    check = surgery.verify_checkpoint(tmp_path / "saved", variant, original, [0, 1, 1, 2])
    assert not check.ok and check.max_abs_diff_reload > check.tolerance
    calls.clear()
    with pytest.raises(BertscopeError, match="verification failed"):
        surgery.run_deepen(DeepenConfig(model=source, duplicate="1", out=str(tmp_path / "m")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_unsupported_family_is_a_clear_error(tmp_path) -> None:
    import transformers

    folder = tmp_path / "gpt2"
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=8, n_head=2, vocab_size=50)).save_pretrained(
        folder)
    with pytest.raises(UnsupportedModelError, match="not supported"):
        surgery.run_deepen(DeepenConfig(model=str(folder), duplicate="1", out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def test_cli_reports_one_line_errors_and_exit_code_2(tiny_checkpoint, tmp_path, capsys) -> None:
    source = str(tiny_checkpoint("bert"))
    assert main(["deepen", "--model", source, "--duplicate", "5", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "out of range" in err and len(err.splitlines()) == 1
    assert main(["deepen", "--model", source, "--remove", "0-2", "--out", str(tmp_path / "o")]) == 2
    assert "no layers" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["deepen", "--model", source, "--duplicate", "0-1", "--copies", "2", "--placement", "block",
                 "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / surgery.PROVENANCE_FILE).read_text())["layer_map"] == [0, 1, 0, 1, 0, 1, 2]


def test_deepen_refuses_an_unwritable_out_and_clears_leftovers_of_crashed_runs(tiny_checkpoint, tmp_path,
                                                                                 capsys) -> None:
    from bertscope.core import publish

    source = str(tiny_checkpoint("bert"))
    blocker = tmp_path / "a-file"
    blocker.write_text("mine", encoding="utf-8")
    capsys.readouterr()
    assert main(["deepen", "--model", source, "--duplicate", "1", "--out", str(blocker / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--out's folder" in err and "not a folder" in err and len(err.splitlines()) == 1
    assert blocker.read_text(encoding="utf-8") == "mine"
    child = subprocess.Popen(["true"])  # a deepen that died while saving left its temp folder
    child.wait()
    host = publish.owner().rsplit("-", 2)[0]
    crashed = tmp_path / f".o.tmp-{host}-{child.pid}-0-deadbeef"
    crashed.mkdir()
    (crashed / "config.json").write_text("{}", encoding="utf-8")
    assert main(["deepen", "--model", source, "--duplicate", "1", "--out", str(tmp_path / "o")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "o"]


def test_embedded_default_deepens_and_verifies(tmp_path) -> None:
    result = surgery.run_deepen(DeepenConfig(duplicate="2-3", placement="block", out=str(tmp_path / "d")))
    assert result.verification["ok"] and result.layer_map == [0, 1, 2, 3, 2, 3, 4, 5]
    assert families.num_layers(loading.load_model(str(tmp_path / "d"), "base").model) == 8


def test_deepened_checkpoint_fine_tunes_like_any_other(deepened, glue_dir) -> None:
    from bertscope import api

    _, out, result = deepened["bert"]
    tuned = api.finetune(model=str(out), task="sst2", data_dir=str(glue_dir), max_train=8, max_eval=8, epochs=1,
                         batch_size=4, progress=False)
    assert 0.0 <= tuned.metrics()["final.combined_score"] <= 1.0 and result.new_depth == 6


def test_classifier_heads_are_kept(bert_tokenizer, tmp_path) -> None:
    import transformers

    source = tmp_path / "cls"
    model = tiny_model("roberta", kind="sequence-classification")
    model.save_pretrained(source)
    bert_tokenizer.save_pretrained(source)
    result = surgery.run_deepen(DeepenConfig(model=str(source), duplicate="2", out=str(tmp_path / "out")))
    assert result.architecture == "RobertaForSequenceClassification" and not result.initialised_on_load
    reloaded, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"]
    for (name, theirs), (_, mine) in zip(model.classifier.named_parameters(), reloaded.classifier.named_parameters()):
        assert torch.equal(theirs, mine), name


# --- sentence-transformers models and model cards ----------------------------------------------------------------


ST_SENTENCES = ["The cat sat on the mat.", "Layer surgery needs no training.", "a", "What is the capital of France?"]


def _front_matter(folder: Path) -> dict:
    import yaml

    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text[4:text.index("\n---", 4)])


@pytest.fixture(scope="module")
def st_default(tmp_path_factory) -> dict:
    """The embedded default (a sentence-transformers model) deepened three ways, and the source loaded by
    sentence-transformers itself: the independent reference."""
    st = pytest.importorskip("sentence_transformers")
    root = tmp_path_factory.mktemp("st-default")
    made = {}
    for name, op in (("dup3", {"duplicate": "3"}), ("rm2", {"remove": "2"}),
                     ("identity", {"layer_map": "0,1,2,3,4,5"})):
        made[name] = (root / name, surgery.run_deepen(DeepenConfig(out=str(root / name), **op)))
    source = st.SentenceTransformer(loading.default_model_path(), device="cpu")
    return {"made": made, "source": source, "embeddings": source.encode(ST_SENTENCES, convert_to_tensor=True)}


def test_deepened_default_stays_a_sentence_transformers_model(st_default) -> None:
    from sentence_transformers import SentenceTransformer

    source = st_default["source"]
    for name, (out, result) in st_default["made"].items():
        model = SentenceTransformer(str(out), device="cpu")
        assert [type(m) for m in model] == [type(m) for m in source], name
        assert type(model[-1]).__name__ == "Normalize"
        assert model[1].get_config_dict() == source[1].get_config_dict()  # same pooling mode and dimension
        assert model.max_seq_length == source.max_seq_length == 256
        assert model[0].do_lower_case == source[0].do_lower_case
        assert model.similarity_fn_name == source.similarity_fn_name and model.prompts == source.prompts
        assert families.num_layers(model[0].model) == result.new_depth == len(result.layer_map)
        embeddings = model.encode(ST_SENTENCES, convert_to_tensor=True)
        torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(ST_SENTENCES)), rtol=0, atol=1e-5)
        if name == "identity":
            torch.testing.assert_close(embeddings, st_default["embeddings"], rtol=0, atol=1e-5)
        assert "modules.json" in result.sentence_transformers_files
        assert all((out / rel).is_file() for rel in result.sentence_transformers_files)
    assert st_default["made"]["dup3"][1].layer_map == [0, 1, 2, 3, 3, 4, 5]
    assert st_default["made"]["rm2"][1].layer_map == [0, 1, 3, 4, 5]


def test_deepened_default_has_a_card_that_keeps_the_source_metadata(st_default, default_model_dir) -> None:
    source_meta = _front_matter(Path(default_model_dir))
    out, result = st_default["made"]["dup3"]
    meta = _front_matter(out)
    assert meta["license"] == source_meta["license"] and meta["datasets"] == source_meta["datasets"]
    assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "sentence-similarity"
    text = (out / "README.md").read_text()
    assert "`0,1,2,3,3,4,5`" in text and "duplicated source layers: 3 (2 times)" in text
    assert "removed source layers: none" in text
    assert f"{result.verification['max_abs_diff_reload']:.2e}" in text and "SentenceTransformer(" in text
    assert "AutoModel.from_pretrained" in text and f"bertscope {result.to_dict()['bertscope_version']}" in text
    rm_text = (st_default["made"]["rm2"][0] / "README.md").read_text()
    assert "removed source layers: 2" in rm_text and "duplicated source layers: none" in rm_text
    provenance = json.loads((out / surgery.PROVENANCE_FILE).read_text())
    assert provenance["sentence_transformers"]["files"] == result.sentence_transformers_files
    assert provenance["model_card"] == "README.md"


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_a_plain_checkpoint_deepens_as_before_with_a_card(name: str, deepened) -> None:
    _, out, result = deepened[name]
    assert result.sentence_transformers_files == [] and not (out / "modules.json").exists()
    assert "modules.json" in result.sentence_transformers["note"]
    meta = _front_matter(out)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "fill-mask"
    assert "license" not in meta and "base_model" not in meta  # a local source with no card: nothing invented
    text = (out / "README.md").read_text()
    assert ",".join(map(str, _valid_dup_map(name))) in text and "SentenceTransformer" not in text
    assert "AutoModelForMaskedLM" in text


def test_the_card_keeps_a_local_sources_license(tiny_checkpoint, tmp_path) -> None:
    source = tmp_path / "src"
    shutil.copytree(tiny_checkpoint("bert"), source)
    (source / "README.md").write_text("---\nlicense: mit\nlanguage: de\n---\n# a tiny model\n")
    surgery.run_deepen(DeepenConfig(model=str(source), remove="1", out=str(tmp_path / "out")))
    meta = _front_matter(tmp_path / "out")
    assert meta["license"] == "mit" and meta["language"] == "de"
    assert "# a tiny model" not in (tmp_path / "out" / "README.md").read_text()
