"""Model cards: the source's metadata is kept, bertscope's facts are added, the front matter is valid YAML."""

from __future__ import annotations

import yaml

from bertscope import __version__
from bertscope.models.cards import model_card, read_card_metadata, write_model_card


def _front(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text[4:text.index("\n---", 4)])


def test_card_keeps_the_source_license_and_tags(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "README.md").write_text("---\nlicense: apache-2.0\ntags:\n- sentence-transformers\n---\n# old\n")
    card = model_card("deepened", summary="Layers 3-4 duplicated.", sections={"How to load": "`AutoModel`"},
                      metadata={"pipeline_tag": "feature-extraction"}, source=source, base_model="minilm")
    meta = _front(card)
    assert meta["license"] == "apache-2.0" and meta["base_model"] == "minilm"
    assert meta["tags"] == ["sentence-transformers", "bertscope"] and meta["pipeline_tag"] == "feature-extraction"
    assert "## How to load" in card and f"bertscope {__version__}" in card and "# old" not in card


def test_missing_or_broken_source_card_gives_no_metadata(tmp_path):
    assert read_card_metadata(tmp_path) == {} and read_card_metadata(None) == {}
    (tmp_path / "README.md").write_text("---\n: [unclosed\n---\n")
    assert read_card_metadata(tmp_path) == {}
    path = write_model_card(tmp_path / "out", "t", summary="s", sections={})
    assert _front(path.read_text())["tags"] == ["bertscope"]


def test_what_describes_the_source_itself_is_not_inherited(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: mit\nbase_model: grandparent/model\nbase_model_relation: "
                                        "finetune\nmodel-index:\n- name: source\n  results: []\n---\n")
    meta = _front(model_card("derived", summary="s", sections={}, source=tmp_path))
    assert meta["license"] == "mit" and not {"base_model", "base_model_relation", "model-index"} & set(meta)
    assert _front(model_card("derived", summary="s", sections={}, source=tmp_path, base_model="parent/model"))[
        "base_model"] == "parent/model"


def test_a_classifier_from_a_sentence_similarity_source_drops_its_use_tags_and_loads_as_a_hub_card(tmp_path,
                                                                                                  default_model_dir):
    from huggingface_hub import ModelCard

    from bertscope.models.cards import hub_model_id

    source_meta = read_card_metadata(default_model_dir)
    assert source_meta["pipeline_tag"] == "sentence-similarity" and "sentence-similarity" in source_meta["tags"]
    path = write_model_card(tmp_path, "classifier", summary="s", sections={},
                            metadata={"pipeline_tag": "text-classification", "library_name": "transformers",
                                      "tags": ["text-classification"]},
                            source=default_model_dir, base_model=hub_model_id(None))
    card = ModelCard.load(path)  # the hub's own parser (validate() needs the network)
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.data.pipeline_tag == "text-classification" and card.data.license == source_meta["license"]
    assert not {"sentence-similarity", "sentence-transformers", "feature-extraction"} & set(card.data.tags)
    assert {"transformers", "bertscope", "text-classification"} <= set(card.data.tags)


def test_base_model_is_a_hub_id_or_nothing(tmp_path):
    from bertscope.models.cards import hub_model_id
    from bertscope.models.loading import DEFAULT_MODEL_HUB_ID, DEFAULT_MODEL_NAME

    assert hub_model_id(None) == hub_model_id(DEFAULT_MODEL_NAME) == DEFAULT_MODEL_HUB_ID
    assert hub_model_id("bert-base-uncased") == "bert-base-uncased"
    assert hub_model_id("FacebookAI/roberta-base") == "FacebookAI/roberta-base"
    assert hub_model_id(str(tmp_path)) is None  # a folder on this machine is no base model elsewhere
    assert hub_model_id("/no/such/folder") is None and hub_model_id("a/b/c") is None
