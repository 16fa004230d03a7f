"""The typed API: bertscope.api_types equals what the configs say, and mypy checks a user's keyword arguments.

The TypedDicts are generated (tools/api_types.py); these tests fail when a config gains, loses or retypes an option
and the module was not regenerated, and they run mypy on small user scripts (a wrong type must be reported, a
correct call must not).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import typing
from pathlib import Path

import pytest

from bertscope import api, api_types
from bertscope.core.config import Config, config_options

REPO = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("api_types_generator", REPO / "tools" / "api_types.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFIGS = [c for c in (getattr(api, n) for n in api.__all__) if isinstance(c, type) and issubclass(c, Config)]


def test_module_is_what_the_generator_writes() -> None:
    assert _generator().render() == Path(api_types.__file__).read_text(encoding="utf-8"), (
        "src/bertscope/api_types.py is stale: run python tools/api_types.py")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_typed_dict_equals_the_config_options(config: type[Config]) -> None:
    """Names, types and Literal values, read independently of the generator's text."""
    typed = getattr(api_types, config.__name__.removesuffix("Config") + "Options")
    assert typed.__total__ is False  # every option has a default
    hints = typing.get_type_hints(typed)
    options = config_options(config)
    assert list(hints) == [o.name for o in options]
    for option in options:
        expected: typing.Any = typing.Literal[option.choices] if option.choices else option.kind
        if option.optional:
            expected = expected | None
        assert hints[option.name] == expected, option.name
        if option.choices:  # what the config itself accepts at run time is exactly the Literal's values
            literal = [a for a in typing.get_args(hints[option.name]) if a is not type(None)]
            assert set(typing.get_args(literal[0]) if len(literal) == 1 else literal) == set(option.choices)


def test_every_api_function_takes_its_config_options_as_keywords() -> None:
    checked = 0
    for name in api.__all__:
        function = getattr(api, name)
        if not inspect.isfunction(function):
            continue
        parameters = inspect.signature(function).parameters
        config = str(parameters["config"].annotation).split(" |")[0]
        assert parameters["config"].kind is inspect.Parameter.POSITIONAL_ONLY  # api.finetune(config) keeps working
        assert str(parameters["options"].annotation) == f"Unpack[{config.removesuffix('Config')}Options]", name
        checked += 1
    assert checked >= 14


def test_keywords_and_a_positional_config_still_build_the_same_config() -> None:
    config = api.FinetuneConfig(task="rte", epochs=2)
    assert api._config(api.FinetuneConfig, None, {"task": "rte", "epochs": 2}) == config
    assert api._config(api.FinetuneConfig, config, {}) is config


USER_SCRIPT = """\
from bertscope import api

{body}
"""


def _mypy(tmp_path: Path, scripts: dict[str, str]) -> dict[str, list[str]]:
    """mypy --strict on user scripts; bertscope's modules other than the API and its types are skipped (read as
    Any), so the check takes seconds rather than analysing torch. Errors per script name."""
    mypy_api = pytest.importorskip("mypy.api")
    for name, body in scripts.items():
        (tmp_path / f"{name}.py").write_text(USER_SCRIPT.format(body=body), encoding="utf-8")
    ini = tmp_path / "mypy.ini"
    ini.write_text(
        "[mypy]\nstrict = True\nfollow_imports = skip\n"
        f"mypy_path = {Path(api.__file__).resolve().parents[1]}\n"
        f"cache_dir = {tmp_path / 'cache'}\n"
        "[mypy-bertscope.api,bertscope.api_types]\nfollow_imports = silent\n", encoding="utf-8")
    out, err, _ = mypy_api.run(["--config-file", str(ini), "--python-executable", sys.executable,
                                *(str(tmp_path / f"{n}.py") for n in scripts)])
    assert not err, err
    found: dict[str, list[str]] = {name: [] for name in scripts}
    for line in out.splitlines():
        for name in scripts:
            if line.startswith(str(tmp_path / f"{name}.py")) and ": error:" in line:
                found[name].append(line)
    return found


def test_mypy_reports_wrong_keyword_types_and_accepts_right_ones(tmp_path: Path) -> None:
    errors = _mypy(tmp_path, {
        "wrong_type": 'api.finetune(task="rte", epochs="one")',
        "wrong_choice": 'api.finetune(task="rte", dtype="float64")',
        "unknown": 'api.reconstruct(max_exampels=3)',
        "right": 'config = api.FinetuneConfig(task="rte", epochs=1)\n'
                 'api.finetune(config)\napi.finetune(config, epochs=2, dtype="bfloat16", lr=1e-4)\n'
                 'api.finetune(task="rte", epochs=1, seed=3, out=None)\n'
                 'api.reconstruct(max_examples=3, attention="sdpa")',
    })
    assert len(errors["wrong_type"]) == 1 and '"epochs"' in errors["wrong_type"][0], errors
    assert len(errors["wrong_choice"]) == 1 and '"dtype"' in errors["wrong_choice"][0], errors
    assert len(errors["unknown"]) == 1 and "max_exampels" in errors["unknown"][0], errors
    assert errors["right"] == [], errors
