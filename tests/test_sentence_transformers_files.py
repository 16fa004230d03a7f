"""sentence-transformers files: found, carried, adapted to a new depth or refused; loaded by sentence-transformers.

The reference is sentence-transformers itself: it writes the source folder (``SentenceTransformer.save``) and loads
the deepened one; the deepened model's embeddings are compared with the source model's own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bertscope.core.errors import BertscopeError
from bertscope.models.sentence_transformers_files import (
    MODULES_FILE,
    copy_sentence_transformers_files,
    find_sentence_transformers_files,
    is_sentence_transformers_folder,
)
from bertscope.surgery import deepen as surgery
from bertscope.surgery.config import DeepenConfig

SENTENCES = ["The cat sat on the mat.", "A quick brown fox jumps over the lazy dog.", "query text", "short"]


def _module_files(folder: Path) -> list[str]:
    """Every file the source's modules.json points at, read independently of the module under test."""
    entries = json.loads((folder / MODULES_FILE).read_text())
    files = []
    for entry in entries:
        if entry["path"]:
            files += [p.relative_to(folder).as_posix() for p in (folder / entry["path"]).rglob("*") if p.is_file()]
    return files


@pytest.fixture(scope="module")
def st_source(tiny_checkpoint, tmp_path_factory) -> Path:
    """A tiny sentence-transformers model written by sentence-transformers itself: CLS pooling, a Dense layer,
    Normalize, dot-product similarity, a query prompt and max_seq_length 64; with a README carrying a license."""
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("st-source")
    modules = [Transformer(str(tiny_checkpoint("bert")), max_seq_length=64), Pooling(32, "cls"), Dense(32, 16),
               Normalize()]
    st.SentenceTransformer(modules=modules, similarity_fn_name="dot", prompts={"query": "query: "},
                           device="cpu").save(str(folder), create_model_card=False)
    (folder / "README.md").write_text("---\nlicense: mit\nlibrary_name: sentence-transformers\n---\n# tiny\n")
    return folder


def _synthetic(tmp_path: Path, source: Path) -> Path:
    """A copy of ``source``'s files to edit (weights included, so it stays a loadable model folder)."""
    folder = tmp_path / "edited"
    shutil.copytree(source, folder)
    return folder


def test_default_model_is_found_and_copied_byte_for_byte(default_model_dir, tmp_path) -> None:
    source = Path(default_model_dir)
    assert is_sentence_transformers_folder(source) and not is_sentence_transformers_folder(tmp_path)
    found = find_sentence_transformers_files(None)  # None: the embedded default, as every command resolves it
    assert found.found and found.folder == source and not found.adaptations
    assert found.modules == tuple(e["type"] for e in json.loads((source / MODULES_FILE).read_text()))
    expected = {MODULES_FILE, "sentence_bert_config.json", "config_sentence_transformers.json", *_module_files(source)}
    assert set(found.files) == expected
    carried = copy_sentence_transformers_files(str(source), tmp_path, num_layers=9)
    assert carried == list(found.files)
    for rel in carried:
        assert (tmp_path / rel).read_bytes() == (source / rel).read_bytes(), rel
    assert not (tmp_path / "README.md").exists()  # the card is written by the command, not copied


def test_a_plain_checkpoint_has_none(tiny_checkpoint, tmp_path) -> None:
    found = find_sentence_transformers_files(str(tiny_checkpoint("bert")), num_layers=4)
    assert not found.found and MODULES_FILE in found.note
    assert copy_sentence_transformers_files(str(tiny_checkpoint("bert")), tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_a_depth_in_the_transformer_config_kwargs_follows_the_new_depth(st_source, tmp_path) -> None:
    folder = _synthetic(tmp_path, st_source)
    config = json.loads((folder / "sentence_bert_config.json").read_text())
    config["config_kwargs"] = {"num_hidden_layers": 3, "hidden_dropout_prob": 0.0}
    (folder / "sentence_bert_config.json").write_text(json.dumps(config))
    found = find_sentence_transformers_files(str(folder), num_layers=5)
    assert found.adaptations and "3 -> 5" in found.adaptations[0]
    out = tmp_path / "out"
    found.write(out)
    written = json.loads((out / "sentence_bert_config.json").read_text())
    assert written["config_kwargs"] == {"num_hidden_layers": 5, "hidden_dropout_prob": 0.0}
    assert {k: v for k, v in written.items() if k != "config_kwargs"} == \
        {k: v for k, v in config.items() if k != "config_kwargs"}
    assert json.loads((folder / "sentence_bert_config.json").read_text())["config_kwargs"]["num_hidden_layers"] == 3
    config["config_kwargs"] = {"layer_types": ["full"] * 3}
    (folder / "sentence_bert_config.json").write_text(json.dumps(config))
    with pytest.raises(BertscopeError, match=r"config_kwargs\.layer_types"):
        find_sentence_transformers_files(str(folder), num_layers=5)


def _add_module(folder: Path, path: str, kind: str, config: dict | None = None) -> None:
    entries = json.loads((folder / MODULES_FILE).read_text())
    entries.append({"idx": len(entries), "name": str(len(entries)), "path": path, "type": kind})
    (folder / MODULES_FILE).write_text(json.dumps(entries))
    if config is not None:
        (folder / path).mkdir(parents=True, exist_ok=True)
        (folder / path / "config.json").write_text(json.dumps(config))


def test_a_layer_indexed_module_is_carried_at_its_depth_and_refused_at_another(st_source, tmp_path) -> None:
    folder = _synthetic(tmp_path, st_source)
    _add_module(folder, "4_WeightedLayerPooling", "sentence_transformers.models.WeightedLayerPooling",
                {"word_embedding_dimension": 32, "layer_start": 1, "num_hidden_layers": 3})
    assert "4_WeightedLayerPooling/config.json" in find_sentence_transformers_files(str(folder), num_layers=3).files
    with pytest.raises(BertscopeError, match=r"WeightedLayerPooling.*tied to 3 layers.*new depth 4"):
        find_sentence_transformers_files(str(folder), num_layers=4)


@pytest.mark.parametrize(("path", "kind", "config", "message"), [
    ("4_Router/query_0_Transformer", "sentence_transformers.models.Router", {"model_type": "bert"},
     "keeps a model of its own"),
    ("4_Custom", "my_package.CustomPooling", {}, "custom code"),
    ("../outside", "sentence_transformers.models.Normalize", None, "unsafe path"),
])
def test_what_cannot_be_carried_is_refused_in_one_line(st_source, tmp_path, path, kind, config, message) -> None:
    folder = _synthetic(tmp_path, st_source)
    _add_module(folder, path, kind, config)
    with pytest.raises(BertscopeError, match=message) as caught:
        find_sentence_transformers_files(str(folder), num_layers=3)
    assert len(str(caught.value).splitlines()) == 1


def test_an_old_layout_with_the_transformer_in_a_subfolder_is_refused(st_source, tmp_path) -> None:
    folder = _synthetic(tmp_path, st_source)
    entries = json.loads((folder / MODULES_FILE).read_text())
    entries[0]["path"] = "0_Transformer"
    (folder / MODULES_FILE).write_text(json.dumps(entries))
    with pytest.raises(BertscopeError, match="root"):
        find_sentence_transformers_files(str(folder))


def test_a_hub_id_is_read_from_the_hugging_face_cache_and_offline_without_it_says_so(default_model_dir, tmp_path,
                                                                                       monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # never touch the network, whatever the environment
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # the hub id must not exist as a relative folder
    missing = find_sentence_transformers_files("nobody/not-cached", num_layers=7)
    assert not missing.found and missing.folder is None and not missing.source_read
    assert "could not be read" in missing.note and len(missing.note.splitlines()) == 1
    # a cached snapshot in the hub's own cache layout: what transformers and sentence-transformers read offline
    repo = tmp_path / "cache" / "models--someone--minilm"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    source = Path(default_model_dir)
    for rel in [MODULES_FILE, "sentence_bert_config.json", "config_sentence_transformers.json", "README.md",
                *_module_files(source)]:
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, snapshot / rel)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    found = find_sentence_transformers_files("someone/minilm", num_layers=7)
    assert found.folder == snapshot and found.source_read and found.files == find_sentence_transformers_files(str(source)).files
    copy_sentence_transformers_files("someone/minilm", tmp_path / "out")
    assert (tmp_path / "out" / "1_Pooling" / "config.json").read_bytes() == \
        (source / "1_Pooling" / "config.json").read_bytes()


# --- deepen of a model sentence-transformers wrote itself ----------------------------------------------------------


@pytest.fixture(scope="module")
def st_deepened(st_source, tmp_path_factory) -> dict[str, tuple[Path, surgery.DeepenResult]]:
    root = tmp_path_factory.mktemp("st-deepened")
    made = {}
    for name, op in (("identity", {"layer_map": "0,1,2"}), ("dup", {"duplicate": "1"}), ("rm", {"remove": "0"})):
        out = root / name
        made[name] = (out, surgery.run_deepen(DeepenConfig(model=str(st_source), out=str(out), **op)))
    return made


def _describe(model) -> list[tuple[str, dict]]:
    """Each module's type with the settings that decide its output (pooling mode, Dense shape...)."""
    described = []
    for module in model:
        settings = {k: v for k, v in module.get_config_dict().items() if k != "modality_config"}
        described.append((type(module).__name__, settings))
    return described


def test_sentence_transformers_loads_the_deepened_folder_with_the_sources_modules(st_source, st_deepened) -> None:
    from sentence_transformers import SentenceTransformer

    source = SentenceTransformer(str(st_source), device="cpu")
    source_embeddings = source.encode(SENTENCES, convert_to_tensor=True, prompt_name="query")
    for name, (out, result) in st_deepened.items():
        model = SentenceTransformer(str(out), device="cpu")
        assert _describe(model) == _describe(source), name
        assert model.max_seq_length == source.max_seq_length == 64
        assert model.similarity_fn_name == "dot" and model.prompts == source.prompts
        torch.testing.assert_close(model[2].linear.weight, source[2].linear.weight, rtol=0, atol=0)
        assert model[0].model.config.num_hidden_layers == result.new_depth
        assert set(result.sentence_transformers_files) == {
            MODULES_FILE, "sentence_bert_config.json", "config_sentence_transformers.json", *_module_files(st_source)}
        embeddings = model.encode(SENTENCES, convert_to_tensor=True, prompt_name="query")
        torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(SENTENCES)), rtol=0, atol=1e-5)
        if name == "identity":
            torch.testing.assert_close(embeddings, source_embeddings, rtol=0, atol=1e-5)
        else:
            assert not torch.allclose(embeddings, source_embeddings, atol=1e-3), name


def test_the_card_keeps_the_source_license_and_says_sentence_transformers(st_deepened) -> None:
    import yaml

    out, result = st_deepened["dup"]
    text = (out / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "mit" and meta["library_name"] == "sentence-transformers"
    assert meta["pipeline_tag"] == "sentence-similarity" and "bertscope" in meta["tags"]
    assert "SentenceTransformer(" in text and ",".join(map(str, result.layer_map)) in text
    provenance = json.loads((out / surgery.PROVENANCE_FILE).read_text())
    assert provenance["sentence_transformers"]["files"] == result.sentence_transformers_files
    assert provenance["model_card"] == "README.md"


def test_a_module_that_cannot_follow_the_depth_stops_deepen_before_anything_is_written(st_source, tmp_path) -> None:
    folder = _synthetic(tmp_path, st_source)
    _add_module(folder, "4_WeightedLayerPooling", "sentence_transformers.models.WeightedLayerPooling",
                {"word_embedding_dimension": 32, "layer_start": 1, "num_hidden_layers": 3})
    with pytest.raises(BertscopeError, match="tied to 3 layers"):
        surgery.run_deepen(DeepenConfig(model=str(folder), duplicate="1", out=str(tmp_path / "out")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited"]


def test_links_inside_the_source_and_a_hub_snapshots_links_into_its_blobs_are_carried(default_model_dir, tmp_path,
                                                                                       monkeypatch) -> None:
    source = Path(default_model_dir)
    local = tmp_path / "local"
    shutil.copytree(source, local)
    (local / "1_Pooling" / "config.json").rename(local / "pooling.json")
    (local / "1_Pooling" / "config.json").symlink_to(local / "pooling.json")  # a link that stays inside
    assert "1_Pooling/config.json" in find_sentence_transformers_files(str(local)).files
    # the hub cache's own layout: snapshot files are links into the repository's blobs/
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    repo = tmp_path / "cache" / "models--someone--linked"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    for i, rel in enumerate([MODULES_FILE, "sentence_bert_config.json", "config_sentence_transformers.json",
                             *_module_files(source)]):
        blob = repo / "blobs" / f"blob{i}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, blob)
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    copy_sentence_transformers_files("someone/linked", tmp_path / "out")
    assert (tmp_path / "out" / "1_Pooling" / "config.json").read_bytes() == \
        (source / "1_Pooling" / "config.json").read_bytes()
    # but a snapshot link that leaves the repository's folder is refused like any other
    (snapshot / "1_Pooling" / "leak.txt").symlink_to(tmp_path / "local" / "pooling.json")
    with pytest.raises(BertscopeError, match="outside the model folder"):
        find_sentence_transformers_files("someone/linked")
