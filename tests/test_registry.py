"""The command registry (:mod:`bertscope.core.registry`): one immutable record per command, registries that refuse a
name declared twice and are extended by copying, never in place; and the package's own registries built from it.

Registries with plugin commands are built locally in each test: nothing here (or in any test module) adds a
command to a global registry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from bertscope import api
from bertscope.core.config import Config, opt
from bertscope.core.registry import LOCATION_OPTIONS, SECTION_KINDS, CommandInfo, Registry, ReportSection
from bertscope.sweep.commands import ANALYSES


@dataclass(frozen=True)
class PingConfig(Config):
    command = "ping"

    count: int = opt(1, "how many")
    out: str | None = opt(None, "output folder")
    data_dir: str | None = opt(None, "where the data is")
    verbose: bool = opt(False, "talk more")


@dataclass(frozen=True)
class PingResult:
    count: int


def run_ping(config: PingConfig) -> PingResult:
    return PingResult(config.count)


def _points(payload) -> list[tuple[dict, float]]:
    return [({"k": k}, float(v)) for k, v in payload.get("scores", {}).items()]


def _study(points=_points) -> ReportSection:
    return ReportSection("k", "bars", "score by k", points=points)


def _info(name: str, **extra) -> CommandInfo:
    return CommandInfo(name, PingConfig, run_ping, PingResult, f"the {name} command", **extra)


def test_command_info_defaults() -> None:
    info = _info("ping")
    assert info.sweepable and not info.resumes_in_out and info.model_subdir is None
    assert info.not_identity == LOCATION_OPTIONS and not info.is_study
    assert info.run(PingConfig(count=3)) == info.result(3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "pong"  # type: ignore[misc]


def test_location_options_are_where_things_are_not_what_they_compute() -> None:
    assert {"out", "progress", "data_dir", "cache_dir", "head_cache", "overwrite"} <= LOCATION_OPTIONS
    assert not {"seed", "model", "task", "lr", "layer", "dims", "token", "batch_size"} & LOCATION_OPTIONS


def test_identity_leaves_out_location_and_declared_options_in_field_order() -> None:
    options = PingConfig(count=2, out="somewhere", data_dir="/glue", verbose=True).to_dict()
    assert list(_info("ping").identity(options)) == ["count", "verbose"]
    quiet = _info("ping", not_identity=LOCATION_OPTIONS | {"verbose"})
    assert quiet.identity(options) == {"count": 2}
    moved = {**options, "out": "elsewhere", "data_dir": "/other/glue"}
    assert quiet.identity(moved) == quiet.identity(options)
    assert quiet.identity({**options, "count": 3}) != quiet.identity(options)


def test_a_command_whose_report_section_reads_points_is_a_study() -> None:
    study = _info("study", report=_study(), resumes_in_out=True)
    assert study.is_study and study.study_points is not None
    assert study.study_points({"scores": {"3": 0.5}}) == [({"k": "3"}, 0.5)]
    sectioned = _info("sectioned", report=_study(points=None))  # a section of its own, no points: no study
    assert not sectioned.is_study and sectioned.study_points is None


def test_a_report_section_is_one_of_the_kinds_and_only_a_matrix_has_two_axes() -> None:
    assert ReportSection("layer", "line", "score by layer").axes == ("layer",)
    assert ReportSection("source", "matrix", "m", across="target").axes == ("source", "target")
    with pytest.raises(ValueError, match="kind 'pie'"):
        ReportSection("layer", "pie", "score by layer")
    with pytest.raises(ValueError, match="across"):
        ReportSection("source", "matrix", "m")
    with pytest.raises(ValueError, match="across"):
        ReportSection("layer", "line", "m", across="task")


def test_each_study_declares_its_report_section_and_its_points() -> None:
    declared = {name: api.COMMANDS[name].report for name in STUDIES}
    assert {n: (s.axis, s.kind) for n, s in declared.items() if s is not None} == {
        "layers": ("layer", "line"), "tokens": ("token", "bars"), "dims": ("dims", "subsets"),
        "cross": ("source", "matrix")}
    assert all(s is not None and s.kind in SECTION_KINDS and s.points is not None for s in declared.values())
    # the study axes are finetune options: a sweep of finetune over them gets the same sections
    assert {"layer", "token", "dims", "freeze"} <= set(api.COMMANDS["finetune"].config.field_names())
    assert api.COMMANDS["finetune"].report is not None and api.COMMANDS["finetune"].report.axis == "freeze"


def test_registry_is_an_ordered_read_only_mapping() -> None:
    infos = [_info("b"), _info("a"), _info("c")]
    registry = Registry.of(infos)
    assert list(registry) == ["b", "a", "c"] and len(registry) == 3
    assert registry["a"] is infos[1] and "c" in registry and "d" not in registry
    assert list(registry.values()) == infos
    with pytest.raises(KeyError):
        registry["d"]
    with pytest.raises(TypeError):
        registry["d"] = _info("d")  # type: ignore[index]


def test_a_name_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="command 'a' declared twice"):
        Registry.of([_info("a"), _info("b"), _info("a")])
    registry = Registry.of([_info("a")])
    with pytest.raises(ValueError, match="command 'a' declared twice"):
        registry.with_commands([_info("a")])


def test_with_commands_extends_a_copy() -> None:
    base = Registry.of([_info("a"), _info("b")])
    extended = base.with_commands([_info("c")])
    assert list(extended) == ["a", "b", "c"]
    assert list(base) == ["a", "b"]
    assert extended["a"] is base["a"]


def test_sweepable_and_studies_keep_the_order() -> None:
    registry = Registry.of([_info("s1", report=_study()), _info("plain"), _info("driver", sweepable=False),
                            _info("s2", report=_study())])
    assert list(registry.sweepable()) == ["s1", "plain", "s2"]
    assert registry.studies() == ("s1", "s2")
    assert isinstance(registry.sweepable(), Registry) and len(registry) == 4


# --- the package's registries ---------------------------------------------------------------------------------------

STUDIES = {"dims", "layers", "tokens", "cross"}


def test_api_commands_are_the_analyses_then_sweep_status_report() -> None:
    assert list(api.COMMANDS) == [*ANALYSES, "sweep", "status", "report", "replicate", "power"]
    assert {"reconstruct", "deepen", "compare", "layer-scan", "finetune", "predict", *STUDIES} == set(ANALYSES)
    assert list(api.COMMANDS.sweepable()) == list(ANALYSES)
    assert set(api.COMMANDS.studies()) == STUDIES == set(ANALYSES.studies())


@pytest.mark.parametrize("name", list(api.COMMANDS))
def test_each_declared_command_is_consistent(name: str) -> None:
    info = api.COMMANDS[name]
    assert info.name == name == info.config.command
    assert issubclass(info.config, Config) and isinstance(info.result, type) and callable(info.run)
    assert info.help and "\n" not in info.help
    assert info.not_identity >= LOCATION_OPTIONS
    fields = set(info.config.field_names())
    assert info.not_identity - LOCATION_OPTIONS <= fields, "not_identity names an option the command lacks"
    assert info.is_study == (name in STUDIES)
    if info.is_study:
        assert info.resumes_in_out  # a re-run continues the study's finished fine-tuning runs
    if info.model_subdir is not None:
        assert "out" in fields  # the model lands inside the command's own output folder


def test_data_dir_is_never_part_of_a_run_identity() -> None:
    for info in api.COMMANDS.values():
        values = {name: f"value-{name}" for name in info.config.field_names()}
        identity = info.identity(values)
        assert not {"data_dir", "out", "cache_dir", "head_cache", "progress"} & set(identity), info.name


def test_a_plugin_registry_is_local() -> None:
    import sweep_toy

    before = list(api.COMMANDS)
    local = api.COMMANDS.with_commands(sweep_toy.BERTSCOPE_COMMANDS)
    assert list(local) == [*before, "toy", "toy-make"]
    assert local["toy-make"].model_subdir == "" and local["toy"].sweepable
    assert list(api.COMMANDS) == before and "toy" not in ANALYSES
    with pytest.raises(ValueError, match="declared twice"):
        local.with_commands(sweep_toy.BERTSCOPE_COMMANDS)


def test_a_registry_cannot_be_changed_in_place() -> None:
    registry = Registry.of([_info("a")])
    with pytest.raises(TypeError):
        registry.commands["b"] = _info("b")  # type: ignore[index]
    assert list(registry) == ["a"]


def test_options_added_since_0_1_stay_out_of_identity_at_their_neutral_value():
    from bertscope.core.registry import NEUTRAL_VALUES
    from bertscope.sweep.commands import ANALYSES

    info = ANALYSES["finetune"]
    options = info.config.from_dict({"task": "rte"}).to_dict()
    for name, neutral in NEUTRAL_VALUES.items():
        if name in options:
            assert name not in info.identity({**options, name: neutral})
    assert info.identity({**options, "seeds": "1,2"})["seeds"] == "1,2"  # the new behaviour has a new identity
