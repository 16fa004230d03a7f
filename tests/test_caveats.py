"""Model caveats: native pooling of sentence-transformers folders, GLUE tasks in a known model's training data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertscope.models import caveats


def _st_folder(root: Path, pooling: dict[str, bool] | None, pooling_dir: str = "1_Pooling") -> Path:
    root.mkdir(parents=True)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    if pooling is not None:
        modules.append({"idx": 1, "name": "1", "path": pooling_dir, "type": "sentence_transformers.models.Pooling"})
        (root / pooling_dir).mkdir()
        (root / pooling_dir / "config.json").write_text(json.dumps(pooling), encoding="utf-8")
    (root / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    return root


def test_folder_pooling_reads_any_sentence_transformers_folder(tmp_path: Path) -> None:
    cls = _st_folder(tmp_path / "cls", {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    mean = _st_folder(tmp_path / "mean", {"pooling_mode_mean_tokens": True}, pooling_dir="pool")
    assert caveats.folder_pooling(cls) == "cls" and caveats.folder_pooling(mean) == "mean"
    assert caveats.folder_pooling(_st_folder(tmp_path / "none", None)) is None  # no Pooling module
    assert caveats.folder_pooling(tmp_path / "missing") is None
    broken = _st_folder(tmp_path / "broken", {"pooling_mode_mean_tokens": True})
    (broken / "1_Pooling" / "config.json").write_text("{not json", encoding="utf-8")
    assert caveats.folder_pooling(broken) is None


def test_embedded_default_is_known_and_read_from_its_folder(default_model_dir: str) -> None:
    assert caveats.folder_pooling(default_model_dir) == "mean"  # its own 1_Pooling/config.json
    entry = caveats.known_model(None, default_model_dir)
    assert entry is not None and entry.pooling == "mean" and {"mnli", "qqp"} <= set(entry.glue_in_training)
    assert caveats.known_model("sentence-transformers/all-MiniLM-L6-v2") is entry
    assert caveats.known_model("/some/where/All_MiniLM_L6_v2/") is entry
    assert caveats.known_model("bert-base-uncased") is None


@pytest.mark.parametrize("token,expect_hint", [("cls", True), ("mean", False), ("max-norm", False)])
def test_notes_for_a_finetune_on_the_embedded_model(default_model_dir: str, token: str, expect_hint: bool) -> None:
    lines = caveats.notes(None, "mnli", token, path=default_model_dir)
    assert any("mean pooling" in line for line in lines)
    assert any(line.startswith("mnli:") and "model card" in line for line in lines)
    assert any("--token mean" in line for line in lines) == expect_hint
    assert not any(line.startswith("sst2:") for line in caveats.notes(None, "sst2", token, path=default_model_dir))


def test_notes_for_unknown_models_say_only_what_the_folder_shows(tmp_path: Path) -> None:
    assert caveats.notes("bert-base-uncased", "mnli", "cls") == []
    folder = _st_folder(tmp_path / "mine", {"pooling_mode_cls_token": True})
    lines = caveats.notes(str(folder), "mnli", "cls", path=str(folder))
    assert len(lines) == 1 and "cls pooling" in lines[0] and "never" not in lines[0]
    mean = _st_folder(tmp_path / "mine-mean", {"pooling_mode_mean_tokens": True})
    assert "--token mean" in caveats.notes(str(mean), "rte", "cls", path=str(mean))[0]


def test_notes_without_a_task_list_the_tasks_in_training(default_model_dir: str) -> None:
    lines = caveats.notes(None, None, None, path=default_model_dir)
    assert any("mnli" in line and "qqp" in line for line in lines)


def test_finetune_results_carry_the_caveats(default_model_dir: str) -> None:
    from bertscope.finetune.config import FinetuneConfig
    from bertscope.finetune.result import FinetuneResult

    def result(task: str, model_source: str) -> FinetuneResult:
        return FinetuneResult(
            config=FinetuneConfig(task=task), task=task, model_source=model_source, head={},
            selection={"token": "cls", "layers": [6], "dims": list(range(4))}, freezing={"policy": "none"}, data={},
            epochs=(), final={"validation": {"accuracy": 0.5}}, final_score=0.5,
            timing={"train_examples_per_second": 1.0, "train_seconds": 1.0, "eval_seconds": 1.0}, parameters={},
            environment={})

    on_default = result("qqp", default_model_dir)
    payload = on_default.to_dict()
    assert any(line.startswith("qqp:") for line in payload["caveats"])
    assert any("--token mean" in line for line in payload["caveats"])
    assert "caveat: " in on_default.render().caption
    assert result("qqp", "bert-base-uncased").to_dict()["caveats"] == []
