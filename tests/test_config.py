"""The option machinery of :mod:`bertscope.core.config`: typed frozen dataclasses that coerce and validate their values,
round-trip through dicts, JSON and YAML, name unknown keys, and generate the argparse interface with ``--help``.

The machinery is tested on small config classes defined here; every real config class of :mod:`bertscope.configs`
is then round-tripped with its defaults (plus the few values its ``validate`` requires).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
from dataclasses import dataclass

import pytest
import yaml

from bertscope.core.config import Config, Options, add_arguments, config_from_args, config_options, group, opt
from bertscope.core.errors import BertscopeError
from bertscope.finetune import config as finetune_config
from bertscope.finetune.config import FinetuneConfig
from bertscope.lens import config as lens_config
from bertscope.lens.config import ReconstructConfig
from bertscope.models import options as model_options
from bertscope.replicate import config as replicate_config
from bertscope.report import config as report_config
from bertscope.studies import config as studies_config
from bertscope.surgery import config as surgery_config
from bertscope.sweep import config as sweep_config

CONFIG_MODULES = (model_options, lens_config, surgery_config, finetune_config, studies_config, sweep_config,
                  report_config, replicate_config)


@dataclass(frozen=True)
class Sample(Config):
    """A sample command's options."""

    command = "sample"

    name: str = opt("alpha", "a name")
    count: int = opt(3, "how many")
    rate: float = opt(0.5, "a rate")
    flag: bool = opt(False, "a switch that is off")
    loud: bool = opt(True, "a switch that is on")
    limit: int | None = opt(None, "an optional limit")
    layers: str | None = opt(None, "a list-like string option", metavar="LAYERS")
    mode: str = opt("fast", "the mode", choices=("fast", "slow"))
    hidden: str = opt("api-only", "not on the command line", cli=False)

    def validate(self) -> None:
        if self.count < 0:
            raise BertscopeError(f"--count must not be negative, got {self.count}")


@dataclass(frozen=True)
class WithPositional(Config):
    command = "pos"

    spec: str | None = opt(None, "the spec file", positional=True, metavar="SPEC")
    store: str = opt("results.db", "the store")


@dataclass(frozen=True)
class WithOptionalPositional(Config):
    command = "pos2"

    target: str = opt("here", "where to go", positional=True)


def _parser(cls: type[Config]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"test {cls.command}", description=cls.__doc__)
    add_arguments(parser, cls)
    return parser


def _help(cls: type[Config], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        _parser(cls).parse_args(["--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal width


# --- values: coercion, choices, validation ---------------------------------------------------------------------------


def test_defaults_are_the_dataclass_defaults() -> None:
    sample = Sample()
    assert sample.to_dict() == {"name": "alpha", "count": 3, "rate": 0.5, "flag": False, "loud": True,
                                "limit": None, "layers": None, "mode": "fast", "hidden": "api-only"}
    assert Sample.field_names() == list(sample.to_dict())


@pytest.mark.parametrize(("field", "given", "expected"), [
    ("count", "7", 7),
    ("count", 7.0, 7),
    ("rate", "0.25", 0.25),
    ("rate", 2, 2.0),
    ("name", 12, "12"),
    ("limit", "5", 5),
    ("limit", None, None),
    ("flag", "yes", True),
    ("flag", "On", True),
    ("flag", "1", True),
    ("flag", "true", True),
    ("loud", "off", False),
    ("loud", "No", False),
    ("loud", "0", False),
    ("loud", "false", False),
    ("flag", 1, True),
    ("layers", [3, 5], "3,5"),
    ("layers", ["0-2", -1], "0-2,-1"),
    ("layers", "3,5", "3,5"),
])
def test_values_are_coerced_to_the_field_type(field: str, given, expected) -> None:
    value = getattr(Sample(**{field: given}), field)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("field", "given", "message"), [
    ("count", "many", "option 'count' expects int, got 'many'"),
    ("count", 2.5, "option 'count' expects int, got 2.5"),
    ("rate", "fast", "option 'rate' expects float"),
    ("flag", "maybe", "option 'flag' expects bool"),
    ("count", None, "option 'count' must not be empty"),
    ("name", None, "option 'name' must not be empty"),
])
def test_bad_values_are_named_errors(field: str, given, message: str) -> None:
    with pytest.raises(BertscopeError) as error:
        Sample(**{field: given})
    assert message in str(error.value)


def test_choices_are_enforced_with_the_option_and_the_accepted_values_named() -> None:
    assert Sample(mode="slow").mode == "slow"
    with pytest.raises(BertscopeError, match=r"option 'mode' must be one of fast, slow; got 'medium'"):
        Sample(mode="medium")


def test_validate_runs_on_creation_and_on_replace() -> None:
    with pytest.raises(BertscopeError, match="--count must not be negative"):
        Sample(count=-1)
    sample = Sample()
    with pytest.raises(BertscopeError, match="--count must not be negative"):
        sample.replace(count=-1)
    with pytest.raises(BertscopeError, match="option 'mode'"):
        sample.replace(mode="medium")
    changed = sample.replace(count="9", layers=[1, 2])
    assert (changed.count, changed.layers, sample.count) == (9, "1,2", 3)


def test_configs_are_frozen_and_compare_by_value() -> None:
    sample = Sample()
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.count = 4  # type: ignore[misc]
    assert Sample(count="4") == Sample(count=4)  # type: ignore[arg-type]  # coerced on purpose
    assert Sample(count=4) != Sample(count=5)
    assert hash(Sample(count=4)) == hash(Sample(count=4))


# --- dicts, JSON, YAML ---------------------------------------------------------------------------------------------


def test_from_dict_accepts_dashes_and_coerces() -> None:
    sample = Sample.from_dict({"count": "2", "layers": [0, 6], "flag": "on", "mode": "slow", "name": "b"})
    assert sample == Sample(count=2, layers="0,6", flag=True, mode="slow", name="b")
    assert WithPositional.from_dict({"spec": "s.yaml"}).spec == "s.yaml"


def test_from_dict_names_every_unknown_key_and_the_known_ones() -> None:
    with pytest.raises(BertscopeError) as error:
        Sample.from_dict({"count": 1, "colour": "red", "max-size": 3}, where="spec.yaml")
    message = str(error.value)
    assert message.startswith("spec.yaml: unknown option(s) colour, max_size for 'sample'")
    for name in Sample.field_names():
        assert name in message.split("known:")[1]


def test_dict_json_and_yaml_round_trip(tmp_path) -> None:
    sample = Sample(name="x y", count=0, rate=1e-5, flag=True, loud=False, limit=4, layers="0,-1", mode="slow",
                    hidden="h")
    assert Sample.from_dict(sample.to_dict()) == sample
    assert Sample.from_dict(json.loads(json.dumps(sample.to_dict()))) == sample
    text = sample.to_yaml()
    assert yaml.safe_load(text) == sample.to_dict()
    assert list(yaml.safe_load(text)) == Sample.field_names()  # field order kept
    path = tmp_path / "sample.yaml"
    path.write_text(text, encoding="utf-8")
    assert Sample.from_yaml(path) == sample
    assert Sample.from_yaml(str(path)) == sample


def test_from_yaml_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(BertscopeError, match="cannot read config .*missing.yaml"):
        Sample.from_yaml(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("count: [1, 2\n", encoding="utf-8")
    with pytest.raises(BertscopeError, match="cannot read config .*broken.yaml"):
        Sample.from_yaml(broken)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("count: 1\nsize: 2\n", encoding="utf-8")
    with pytest.raises(BertscopeError, match=r"unknown.yaml: unknown option\(s\) size"):
        Sample.from_yaml(unknown)
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert Sample.from_yaml(empty) == Sample()


def test_yaml_lists_for_list_like_options(tmp_path) -> None:
    path = tmp_path / "lists.yaml"
    path.write_text("layers: [3, 5, -1]\ncount: 2\n", encoding="utf-8")
    assert Sample.from_yaml(path) == Sample(layers="3,5,-1", count=2)


# --- the command line --------------------------------------------------------------------------------------------


def test_help_is_generated_from_the_dataclass_with_defaults(capsys) -> None:
    text = _help(Sample, capsys)
    assert "A sample command's options." in text
    for shown in ("--name NAME a name (default: alpha)", "--count COUNT how many (default: 3)",
                  "--rate RATE a rate (default: 0.5)", "--limit LIMIT an optional limit",
                  "--layers LAYERS a list-like string option", "a switch that is off (default: off)",
                  "a switch that is on (default: on)", "--mode {fast,slow} the mode (default: fast)"):
        assert shown in text
    assert "--flag, --no-flag" in text and "--loud, --no-loud" in text
    assert "(default: None)" not in text
    assert "--hidden" not in text and "not on the command line" not in text


def test_unset_options_keep_the_dataclass_defaults() -> None:
    parser = _parser(Sample)
    assert config_from_args(Sample, parser.parse_args([])) == Sample()
    given = parser.parse_args(["--count", "5", "--rate", "0.1", "--no-loud", "--flag", "--layers", "0-2",
                               "--mode", "slow", "--limit", "9", "--name", "z"])
    assert config_from_args(Sample, given) == Sample(count=5, rate=0.1, loud=False, flag=True, layers="0-2",
                                                    mode="slow", limit=9, name="z")
    assert config_from_args(Sample, parser.parse_args(["--loud"])).loud is True
    assert config_from_args(Sample, parser.parse_args(["--no-flag"])).flag is False


def test_config_from_args_validates() -> None:
    with pytest.raises(BertscopeError, match="--count must not be negative"):
        config_from_args(Sample, _parser(Sample).parse_args(["--count", "-2"]))


@pytest.mark.parametrize("argv", [["--count", "many"], ["--rate", "x"], ["--mode", "medium"], ["--hidden", "h"]])
def test_the_parser_refuses_bad_types_choices_and_api_only_options(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser(Sample).parse_args(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_positional_options(capsys) -> None:
    parser = _parser(WithPositional)
    config = config_from_args(WithPositional, parser.parse_args(["grid.yaml", "--store", "r.db"]))
    assert config == WithPositional(spec="grid.yaml", store="r.db")
    with pytest.raises(SystemExit):
        parser.parse_args([])  # a positional without a default is required
    assert "SPEC" in capsys.readouterr().err
    assert "SPEC the spec file" in _help(WithPositional, capsys)

    optional = _parser(WithOptionalPositional)
    assert config_from_args(WithOptionalPositional, optional.parse_args([])).target == "here"
    assert config_from_args(WithOptionalPositional, optional.parse_args(["there"])).target == "there"


# --- every config class of the package -----------------------------------------------------------------------------

#: The values a config's validate() insists on; every other field keeps its default.
REQUIRED: dict[str, dict[str, object]] = {
    "FinetuneConfig": {"task": "rte"},
    # A base class that inherits finetune's command name, so finetune's rule that --cache-features (on by default
    # in studies) needs a frozen encoder applies to it alone.
    "StudyConfig": {"task": "rte", "freeze": "encoder"},
    "DimsConfig": {"task": "rte"},
    "LayersConfig": {"task": "rte"},
    "TokensConfig": {"task": "rte"},
    "CrossConfig": {"tasks": "sst2,rte"},
    "ReplicateConfig": {"paper": "paper2"},
    "PowerConfig": {"paper": "paper2"},
    "DeepenConfig": {"out": "deepened", "duplicate": "1"},
    "CompareConfig": {"variant": "variant-folder"},
    "SweepConfig": {"spec": "spec.yaml"},
    "PredictConfig": {"model": "finetuned-folder"},
}

CONFIG_CLASSES = sorted(
    (obj for module in CONFIG_MODULES for name in module.__all__
     if inspect.isclass(obj := getattr(module, name)) and issubclass(obj, Config)),
    key=lambda cls: cls.__name__)


def test_every_public_config_class_is_listed() -> None:
    assert len(CONFIG_CLASSES) >= 12
    assert {c.command for c in CONFIG_CLASSES if c.command} >= {
        "reconstruct", "deepen", "compare", "layer-scan", "finetune", "dims", "layers", "tokens", "cross", "sweep",
        "status", "report"}


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
def test_every_config_round_trips_with_its_defaults(cls: type[Config], tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("BERTSCOPE_GLUE_DIR", raising=False)
    config = cls(**REQUIRED.get(cls.__name__, {}))
    values = config.to_dict()
    assert list(values) == cls.field_names()
    assert cls.from_dict(values) == config
    assert cls.from_dict(json.loads(json.dumps(values))) == config
    assert cls.from_dict({k.replace("_", "-"): v for k, v in values.items()}) == config
    path = tmp_path / f"{cls.__name__}.yaml"
    path.write_text(config.to_yaml(), encoding="utf-8")
    assert cls.from_yaml(path) == config
    for name, value in REQUIRED.get(cls.__name__, {}).items():
        assert values[name] == value
    with pytest.raises(BertscopeError, match="unknown option"):
        cls.from_dict({**values, "no_such_option": 1})


@pytest.mark.parametrize("cls", [c for c in CONFIG_CLASSES if c.__name__ in REQUIRED], ids=lambda c: c.__name__)
def test_the_required_values_are_required(cls: type[Config], monkeypatch) -> None:
    monkeypatch.delenv("BERTSCOPE_GLUE_DIR", raising=False)
    for name in REQUIRED[cls.__name__]:
        with pytest.raises(BertscopeError):
            cls(**{k: v for k, v in REQUIRED[cls.__name__].items() if k != name})


def test_the_glue_folder_comes_from_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("BERTSCOPE_GLUE_DIR", str(tmp_path))
    assert FinetuneConfig(task="rte").data.data_dir == str(tmp_path)
    assert ReconstructConfig().text.data_dir == str(tmp_path)
    assert FinetuneConfig(task="rte", data_dir="elsewhere").data.data_dir == "elsewhere"
    monkeypatch.delenv("BERTSCOPE_GLUE_DIR")
    assert FinetuneConfig(task="rte").data.data_dir is None


@pytest.mark.parametrize(("field", "given"), [("count", True), ("flag", 2)])
def test_bools_and_numbers_are_not_mixed_up(field: str, given) -> None:
    with pytest.raises(BertscopeError, match=f"option '{field}' expects"):
        Sample(**{field: given})


# ---- option groups composed into configs: grouped inside, flat outside


@dataclass(frozen=True)
class _Speed(Options):
    rate: float = opt(0.5, "a rate")
    steps: int = opt(3, "steps")

    def validate(self) -> None:
        if self.steps < 1:
            raise BertscopeError("--steps must be at least 1")


@dataclass(frozen=True, init=False)
class _Grouped(Config):
    command = "grouped"

    name: str = opt("x", "a name")
    speed: _Speed = group(_Speed)
    last: bool = opt(False, "a flag")


def test_a_config_lists_its_groups_options_flat_in_declaration_order() -> None:
    options = config_options(_Grouped)
    assert [(o.name, o.group, o.default, o.help) for o in options] == [
        ("name", None, "x", "a name"), ("rate", "speed", 0.5, "a rate"), ("steps", "speed", 3, "steps"),
        ("last", None, False, "a flag")]
    assert _Grouped.field_names() == ["name", "rate", "steps", "last"]
    assert _Grouped().to_dict() == {"name": "x", "rate": 0.5, "steps": 3, "last": False}


def test_a_grouped_config_is_built_from_flat_names_or_groups_and_read_by_group() -> None:
    config = _Grouped(rate="0.25", last=True)  # flat names, coerced as any option
    assert config.speed == _Speed(rate=0.25) and config.speed.rate == 0.25 and config.last is True
    assert _Grouped(speed=_Speed(steps=7), rate=0.1).speed == _Speed(rate=0.1, steps=7)
    assert _Grouped.from_dict({"steps": 2, "name": "y"}) == _Grouped(name="y", steps=2)
    with pytest.raises(BertscopeError, match="--steps must be at least 1"):  # a group validates itself
        _Grouped(steps=0)
    with pytest.raises(BertscopeError, match="unknown option"):
        _Grouped.from_dict({"speed": 1})  # the group's attribute is no option name


def test_replace_takes_flat_names_and_validates_again() -> None:
    config = _Grouped(rate=0.25)
    assert config.replace(steps=5, name="z") == _Grouped(rate=0.25, steps=5, name="z")
    assert config.replace(speed=_Speed(steps=9)).speed == _Speed(steps=9)
    with pytest.raises(BertscopeError):
        config.replace(steps=0)
    with pytest.raises(BertscopeError, match="unknown option"):
        config.replace(speed_rate=1.0)


def test_the_cli_of_a_grouped_config_is_flat(capsys) -> None:
    parser = argparse.ArgumentParser(prog="grouped")
    add_arguments(parser, _Grouped)
    config = config_from_args(_Grouped, parser.parse_args(["--rate", "0.75", "--last"]))
    assert config == _Grouped(rate=0.75, last=True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--rate RATE a rate (default: 0.5)" in shown and "--speed" not in shown


def test_an_option_name_declared_twice_is_refused() -> None:
    @dataclass(frozen=True, init=False)
    class Twice(Config):
        rate: float = opt(1.0, "again")
        speed: _Speed = group(_Speed)

    with pytest.raises(TypeError, match="declared twice: rate"):
        config_options(Twice)


def test_finetune_reads_grouped_and_writes_flat(monkeypatch) -> None:
    monkeypatch.delenv("BERTSCOPE_GLUE_DIR", raising=False)
    config = FinetuneConfig(task="rte", lr=1e-3, freeze="encoder", log_every=5)
    assert (config.optim.lr, config.selection.freeze, config.tracking.log_every) == (1e-3, "encoder", 5)
    flat = config.to_dict()
    assert flat["lr"] == 1e-3 and not any(isinstance(v, Options) for v in flat.values())
    assert FinetuneConfig.from_dict(flat) == config
