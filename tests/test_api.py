"""The Python API (:mod:`bertscope.api`): reachable as ``bertscope.api``, one typed function per registered command,
the same config whether given as an object or as keywords, and real calls that return their concrete result types.

The config-building tests replace the command's runner (wherever the package keeps a reference to it) by one that
records the config it receives, so they run no model.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import subprocess
import sys
import typing
from typing import Any

import pytest
import torch
import transformers
from rich.console import Console

import bertscope
from bertscope import api
from bertscope.core.config import Config
from bertscope.core.errors import BertscopeError
from bertscope.core.registry import Registry

pytestmark = pytest.mark.usefixtures("one_thread")

#: The options each command's validate() insists on (everything else keeps its default) and one option to change.
MINIMAL: dict[str, dict[str, Any]] = {
    "reconstruct": {},
    "deepen": {"out": "deepened", "duplicate": "1"},
    "compare": {"variant": "variant-folder"},
    "layer-scan": {},
    "finetune": {"task": "rte"},
    "predict": {"model": "model-folder"},
    "dims": {"task": "rte"},
    "layers": {"task": "rte"},
    "tokens": {"task": "rte"},
    "cross": {"tasks": "sst2,rte"},
    "sweep": {"spec": "spec.yaml"},
    "status": {},
    "report": {},
    "replicate": {"paper": "paper1"},
    "power": {"paper": "paper2"},
}
OVERRIDE: dict[str, dict[str, Any]] = {
    "reconstruct": {"seed": 7, "layers": "0,-1"},
    "deepen": {"seed": 7, "copies": 2},
    "compare": {"seed": 7, "curves": False},
    "layer-scan": {"seed": 7, "op": "remove"},
    "finetune": {"seed": 7, "epochs": 1},
    "predict": {"seed": 7, "split": "test"},
    "dims": {"seed": 7, "k": "1,2"},
    "layers": {"seed": 7, "layers": "0-2"},
    "tokens": {"seed": 7, "tokens": "cls,mean"},
    "cross": {"seed": 7, "dims_mode": "shared"},
    "sweep": {"store": "other.db", "dry_run": True},
    "status": {"slowest": 2},
    "report": {"title": "T"},
    "replicate": {"budget": "small"},
    "power": {"seeds": "1-3"},
}
NAMES = list(api.COMMANDS)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("BERTSCOPE_GLUE_DIR", raising=False)


def function_of(name: str):
    return getattr(api, name.replace("-", "_"))


def test_import_bertscope_exposes_the_api() -> None:
    """In a fresh interpreter: a test process has imported ``bertscope.api`` already, which hides a missing import."""
    code = ("import bertscope, types; assert isinstance(bertscope.api, types.ModuleType); "
            "print(bertscope.__version__, ' '.join(bertscope.api.COMMANDS))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [bertscope.__version__, *NAMES]
    assert bertscope.api is api and "api" in bertscope.__all__


def test_the_registry_has_every_command() -> None:
    assert set(NAMES) == set(MINIMAL) == set(OVERRIDE), "a command was added or removed: update MINIMAL/OVERRIDE"


@pytest.mark.parametrize("name", NAMES)
def test_each_command_has_a_typed_api_function(name: str) -> None:
    info = api.COMMANDS[name]
    function = function_of(name)
    assert function.__name__ in api.__all__ and function.__doc__
    hints = typing.get_type_hints(function)
    assert hints["return"] is info.result
    first = next(iter(inspect.signature(function).parameters.values()))
    assert first.kind is inspect.Parameter.POSITIONAL_ONLY and first.default is None
    assert hints[first.name] == info.config | None
    for exported in (info.config, info.result):
        assert getattr(api, exported.__name__) is exported and exported.__name__ in api.__all__


def test_api_all_names_only_real_attributes() -> None:
    assert all(hasattr(api, name) for name in api.__all__)
    assert "COMMANDS" in api.__all__ and isinstance(api.COMMANDS, Registry)


class Captured:
    """Stands in for a command's runner: records every config it is given."""

    def __init__(self) -> None:
        self.configs: list[Config] = []
        self.result = object()

    def __call__(self, config: Config) -> object:
        self.configs.append(config)
        return self.result


def capture_runner(name: str, monkeypatch: pytest.MonkeyPatch) -> Captured:
    """Replace the runner of ``name`` everywhere the package refers to it: module attributes, CommandInfo records
    and registries (so the test survives moving the runner or calling it through the registry)."""
    info = api.COMMANDS[name]
    fake = Captured()
    patched_info = dataclasses.replace(info, run=fake)
    replaced = 0
    for module in [m for n, m in sys.modules.items() if n == "bertscope" or n.startswith("bertscope.")]:
        for attr, value in list(vars(module).items()):
            if value is info.run:
                monkeypatch.setattr(module, attr, fake)
            elif value is info:
                monkeypatch.setattr(module, attr, patched_info)
            elif isinstance(value, Registry) and value.get(name) is info:
                monkeypatch.setattr(module, attr, Registry(
                    {k: patched_info if k == name else v for k, v in value.items()}))
            else:
                continue
            replaced += 1
    assert replaced, f"found no reference to {name}'s runner to replace"
    return fake


@pytest.mark.parametrize("name", NAMES)
def test_a_config_and_keywords_build_the_same_config(name: str, monkeypatch) -> None:
    function, info = function_of(name), api.COMMANDS[name]
    fake = capture_runner(name, monkeypatch)
    config = info.config(**MINIMAL[name])
    assert function(config) is fake.result
    assert function(**MINIMAL[name]) is fake.result
    dashed = {k.replace("_", "-"): v for k, v in {**MINIMAL[name], **OVERRIDE[name]}.items()}
    function(**dashed)
    given, from_keywords, from_dashed = fake.configs
    assert given == config and type(given) is info.config
    assert from_keywords == config and type(from_keywords) is info.config
    assert from_dashed == info.config(**MINIMAL[name], **OVERRIDE[name])


@pytest.mark.parametrize("name", NAMES)
def test_options_override_a_given_config(name: str, monkeypatch) -> None:
    function, info = function_of(name), api.COMMANDS[name]
    fake = capture_runner(name, monkeypatch)
    config = info.config(**MINIMAL[name])
    function(config, **OVERRIDE[name])
    (changed,) = fake.configs
    assert changed == config.replace(**OVERRIDE[name]) != config
    for key, value in OVERRIDE[name].items():
        assert changed.to_dict()[key] == value
    assert config == info.config(**MINIMAL[name])  # the given config is not changed


def test_bad_options_are_user_errors_before_anything_runs(monkeypatch) -> None:
    fake = capture_runner("finetune", monkeypatch)
    with pytest.raises(BertscopeError, match="unknown option.*bogus"):
        api.finetune(task="rte", bogus=1)
    with pytest.raises(BertscopeError, match="--task is required"):
        api.finetune(epochs=1)
    with pytest.raises(BertscopeError, match="option 'head' must be one of"):
        api.finetune(api.FinetuneConfig(task="rte"), head="bilinear")
    with pytest.raises(BertscopeError, match="expects int"):
        api.finetune(task="rte", epochs="two")
    assert fake.configs == []


def test_options_beside_a_config_are_checked_like_keywords(monkeypatch) -> None:
    fake = capture_runner("finetune", monkeypatch)
    config = api.FinetuneConfig(task="rte")
    with pytest.raises(BertscopeError, match="unknown option.*bogus"):
        api.finetune(config, bogus=1)
    api.finetune(config, **{"max-train": 5})
    assert fake.configs == [config.replace(max_train=5)]


# --- real calls ------------------------------------------------------------------------------------------------------

SENTENCES = ["The cat sat on the mat.", "Rivers flow to the sea, slowly and without hurry.", "Why?",
             "She sold twelve old maps at the market on Saturday morning."]


def _rendered(result: Any) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(result.render())
    return console.export_text()


def _check_result(result: Any, name: str) -> dict[str, Any]:
    payload = json.loads(json.dumps(result.to_dict()))
    metrics = result.metrics()
    assert metrics and all(isinstance(k, str) and isinstance(v, float) for k, v in metrics.items())
    assert type(result) is api.COMMANDS[name].result
    return payload


def test_reconstruct_on_a_tiny_model(tiny_checkpoint, tmp_path) -> None:
    folder = tiny_checkpoint("bert")
    texts = tmp_path / "sentences.txt"
    texts.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    result = api.reconstruct(model=str(folder), texts=str(texts), progress=False, device="cpu", batch_size=3)
    payload = _check_result(result, "reconstruct")
    assert [r["layer"] for r in payload["records"]] == [0, 1, 2, 3]
    assert payload["config"] == result.config.to_dict() and result.config.encoder.batch_size == 3
    assert "reconstruct:" in _rendered(result)

    # The top layer through the checkpoint's own MLM head is the masked-LM itself: the mean negative
    # log-likelihood of the input tokens under its logits, over the non-special tokens.
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForMaskedLM.from_pretrained(folder).eval()
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt", return_special_tokens_mask=True)
    with torch.no_grad():
        logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
    counted = encoded["attention_mask"].bool() & ~encoded["special_tokens_mask"].bool()
    nll = -logits.log_softmax(-1).gather(-1, encoded["input_ids"][..., None])[..., 0][counted]
    top1 = (logits.argmax(-1) == encoded["input_ids"])[counted].float().mean().item()
    assert result.record(3).nll == pytest.approx(nll.mean().item(), rel=1e-5)
    assert result.record(3).top1 == pytest.approx(top1, abs=1e-6)
    assert result.record(0).nll != pytest.approx(result.record(3).nll, rel=1e-3)


def test_deepen_on_a_tiny_checkpoint(tiny_checkpoint, tmp_path) -> None:
    out = tmp_path / "deeper"
    config = api.DeepenConfig(model=str(tiny_checkpoint("bert")), out=str(out), duplicate="2", device="cpu")
    result = api.deepen(config)
    payload = _check_result(result, "deepen")
    assert payload["layer_map"] == [0, 1, 2, 2] and payload["new_depth"] == 4
    assert result.metrics()["new_depth"] == 4.0 and result.metrics()["verify.ok"] == 1.0
    assert transformers.AutoConfig.from_pretrained(out).num_hidden_layers == 4
    assert "3 -> 4 layers" in _rendered(result)
