"""Loading (bertscope.models.loading): sources, hub errors, devices and dtypes, fingerprints, quiet Hugging Face libraries."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from bertscope.core.device import resolve_device, resolve_dtype
from bertscope.core.errors import BertscopeError, HubUnreachableError
from bertscope.models import families, loading
from conftest import tiny_config, tiny_model
from conftest import user_error as _user_error


def test_missing_local_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(BertscopeError, match="does not exist"):
        loading.resolve_model_source(str(tmp_path / "nope"))
    with pytest.raises(BertscopeError, match="config.json"):
        loading.resolve_model_source(str(tmp_path))


def test_embedded_default_loads_and_reports_no_mlm_head() -> None:
    loaded = loading.load_model(None, "masked-lm")
    assert loaded.family.name == "bert"
    assert families.num_layers(loaded.model) == 6
    assert not loaded.has_pretrained_mlm_head


@pytest.mark.parametrize("name", ["bert", "electra", "modernbert"])
def test_saved_tiny_checkpoint_reports_its_pretrained_head(name: str, tiny_checkpoint) -> None:
    loaded = loading.load_model(str(tiny_checkpoint(name)), "masked-lm")
    assert loaded.has_pretrained_mlm_head
    assert families.num_layers(tiny_config(name)) == families.num_layers(loaded.model)


def test_device_and_dtype_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(BertscopeError, match="unknown device"):
        resolve_device("gpu0")
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("float32") is torch.float32
    with pytest.raises(BertscopeError, match="unknown dtype"):
        resolve_dtype("int8")


def test_weights_fingerprint_follows_the_encoder_weights_only() -> None:
    model = tiny_model("bert")
    same = copy.deepcopy(model)
    assert loading.weights_fingerprint(model) == loading.weights_fingerprint(same)
    with torch.no_grad():
        same.cls.predictions.transform.dense.weight.add_(1.0)  # the head is not part of the encoder
    assert loading.weights_fingerprint(model) == loading.weights_fingerprint(same)
    with torch.no_grad():
        families.get_layers(same)[0].output.dense.weight[0, 0] += 1e-3
    assert loading.weights_fingerprint(model) != loading.weights_fingerprint(same)


def test_quiet_hugging_face_silences_bars_and_logs_and_restores_them() -> None:
    import huggingface_hub.constants
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    if huggingface_hub.constants.HF_HUB_DISABLE_PROGRESS_BARS is not None:
        pytest.skip("HF_HUB_DISABLE_PROGRESS_BARS is set: it overrides every programmatic setting")
    before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    hf_logging.set_verbosity_warning()
    try:
        with loading.quiet_hugging_face():
            assert not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
            assert hf_logging.get_verbosity() == logging.ERROR
            with loading.quiet_hugging_face(logs=False):  # nested: stays quiet, changes no verbosity
                assert hf_logging.get_verbosity() == logging.ERROR
            assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
        assert hf_logging.get_verbosity() == logging.WARNING
        with loading.quiet_hugging_face(logs=False):
            assert not hf_logging.is_progress_bar_enabled()
            assert hf_logging.get_verbosity() == logging.WARNING
    finally:
        hf_logging.set_verbosity(before[0])
        if not before[1]:
            hf_logging.disable_progress_bar()


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"model_type": "nosuch-bert", "auto_map": {"AutoConfig": "my_code.MyConfig", "AutoModel": "my_code.MyModel"}},
         "auto_map naming AutoConfig, AutoModel"),
        ({"model_type": "nosuch-bert"}, "model_type 'nosuch-bert' is not one transformers knows"),
    ],
)
def test_a_folder_that_needs_its_own_code_is_refused_in_one_line(tmp_path, monkeypatch, fields, why) -> None:
    import json

    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**fields, "hidden_size": 8}))
    marker = tmp_path / "ran.txt"
    (folder / "my_code.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")  # what must never run
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # not mistaken for an unreachable hub
    for load in (loading.load_config, loading.load_tokenizer, loading.load_model, loading.load_saved_architecture):
        with pytest.raises(BertscopeError) as info:
            load(str(folder))
        message = str(info.value)
        assert why in message and "does not run a checkpoint's own code" in message and "\n" not in message
    assert not marker.exists()


def test_every_hugging_face_load_passes_trust_remote_code_false(monkeypatch, tiny_checkpoint) -> None:
    import transformers

    seen: list[tuple[str, object]] = []
    for cls_name in ("AutoConfig", "AutoTokenizer", "AutoModelForMaskedLM", "BertForMaskedLM"):
        cls = getattr(transformers, cls_name)
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, _name=cls_name, **kwargs):
            seen.append((_name, kwargs.get("trust_remote_code", "missing")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    folder = str(tiny_checkpoint("bert"))
    loading.load_tokenizer(None)
    loading.load_model(folder, "masked-lm", trust_remote_code=True)  # asked for: still not allowed
    loading.load_saved_architecture(folder)
    names = {name for name, _ in seen}
    assert {"AutoConfig", "AutoTokenizer", "AutoModelForMaskedLM"} <= names
    assert all(value is False for _, value in seen), seen




def _copy(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


def test_a_truncated_safetensors_file_is_one_line_naming_it(tmp_path, tiny_checkpoint, capsys) -> None:
    broken = _copy(tiny_checkpoint("bert", 2), tmp_path / "broken")
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2])  # a full disk or a broken download
    with pytest.raises(BertscopeError, match="model.safetensors"):
        loading.load_model(str(broken), "base")
    out = tmp_path / "deeper"
    err = _user_error(["deepen", "--model", str(broken), "--duplicate", "1", "--out", str(out)], capsys)
    assert str(weights) in err and "damaged or incomplete" in err and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["broken"]  # no temp folder of the deepen either


@pytest.mark.parametrize("damage", ["config", "weights"])
def test_a_broken_local_folder_offline_is_not_blamed_on_the_hub(damage: str, tmp_path, tiny_checkpoint, capsys,
                                                                monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    broken = _copy(tiny_checkpoint("bert", 2), tmp_path / "broken")
    if damage == "config":
        (broken / "config.json").write_text("{not json", encoding="utf-8")
    else:
        (broken / "model.safetensors").unlink()
    with pytest.raises(BertscopeError) as caught:
        loading.load_model(str(broken), "base")
    assert not isinstance(caught.value, HubUnreachableError)
    err = _user_error(["deepen", "--model", str(broken), "--duplicate", "1", "--out", str(tmp_path / "o")], capsys)
    assert "hub" not in err and f"model folder {broken}" in err
    assert ("config.json" in err) if damage == "config" else ("model.safetensors" in err)
    with pytest.raises(HubUnreachableError):  # a hub id offline still reads as the hub being unreachable
        loading.load_config("nobody-has/this-model")


@pytest.mark.parametrize("kind", ["masked-lm", "base", "sequence-classification"])
def test_heads_a_checkpoint_lacks_or_carries_beyond_the_kind_are_no_mismatch(kind: str, tiny_checkpoint) -> None:
    # a masked-LM checkpoint as a bare encoder (its MLM head unexpected) or a classifier (its classifier missing)
    loaded = loading.load_model(str(tiny_checkpoint("bert", 2)), kind)
    assert families.num_layers(loaded.model) == 2


def test_weights_that_disagree_with_the_config_are_named(tmp_path, tiny_checkpoint) -> None:
    import json
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_checkpoint("bert", 2), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(BertscopeError, match=r"encoder tensors the weights lack \(layers 2\), e\.g\. "
                                             r"bert\.encoder\.layer\.2\."):
        loading.load_model(str(folder), "masked-lm")
    with pytest.raises(BertscopeError, match="layers 2"):
        loading.load_saved_architecture(str(folder))
