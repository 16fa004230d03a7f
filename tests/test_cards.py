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
