"""Experiment specs: validation that names the bad key, grid expansion, deterministic ids, pre-steps."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from bertscope.core.errors import BertscopeError
from bertscope.sweep.spec import load_spec, parse_spec, run_id

TOY = str(Path(__file__).with_name("sweep_toy.py"))
TESTS = str(Path(__file__).parent)


def spec(**fields):
    return {"plugins": [TOY], "command": "toy", **fields}


def parse(raw, **options):
    """parse_spec allowed to import the toy plugin (from this folder, where it lives)."""
    return parse_spec(raw, allow_plugins=True, plugins_from=options.pop("plugins_from", TESTS), **options)


def test_grid_expands_to_the_cartesian_product_with_distinct_stable_ids(tmp_path):
    grid = {"x": [1, 2, 3], "seed": [0, 1], "sleep": [0.0, 0.01]}
    runs = parse(spec(grid=grid), runs_dir=tmp_path / "a").runs
    assert len(runs) == 3 * 2 * 2
    assert len({r.id for r in runs}) == len(runs)
    expected = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    assert [r.axes for r in runs] == expected
    for run, point in zip(runs, expected):
        assert run.options["x"] == float(point["x"]) and run.options["seed"] == point["seed"]
        assert run.options["out"] == str(tmp_path / "a" / run.id)  # each run writes under runs dir / id
        assert run.options["progress"] is False
        assert run.id == run_id("toy", run.identity)
    # the same spec elsewhere (other runs dir, other key order) gives the same ids
    again = parse(spec(grid=dict(reversed(list(grid.items())))), runs_dir=tmp_path / "b").runs
    assert {r.id for r in again} == {r.id for r in runs}


def test_id_ignores_defaults_spelled_out_and_output_options_but_not_real_changes(tmp_path):
    base = parse(spec(base={"x": 2}), runs_dir=tmp_path).runs[0]
    explicit = parse(spec(base={"x": 2.0, "seed": 0, "sleep": 0, "progress": True}), runs_dir=tmp_path).runs[0]
    changed = parse(spec(base={"x": 2, "seed": 1}), runs_dir=tmp_path).runs[0]
    assert base.id == explicit.id
    assert changed.id != base.id
    assert "out" not in base.identity and "progress" not in base.identity


def test_each_command_leaves_its_own_not_identity_options_out_of_its_id(tmp_path):
    made = {"toy-make": {"offset": 0.25, "cached": True}}
    make, reader = parse(spec(grid={"model": [made], "x": [1]}), runs_dir=tmp_path).runs
    assert "cached" not in make.identity and make.id == run_id("toy-make", {"offset": 0.25})
    uncached = parse(spec(grid={"model": [{"toy-make": {"offset": 0.25}}], "x": [1]}), runs_dir=tmp_path).runs
    assert [r.id for r in uncached] == [make.id, reader.id]  # `cached` gives the same product: the same ids
    assert reader.identity["model"] == {"@run": make.id}


def test_sweep_and_report_never_import_the_api_or_the_cli():
    """api imports sweep and report: the other way round would be an import cycle (imports in functions too)."""
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "bertscope"
    files = [*(src / "sweep").glob("*.py"), *(src / "report").glob("*.py")]
    assert len(files) >= 8
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            assert not [n for n in names if n in ("bertscope.api", "bertscope.cli")], (path.name, names)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (spec(base={"nope": 1}), "base: unknown option(s) nope for 'toy'"),
        (spec(grid={"x": [1], "bogus_axis": [1, 2]}), "grid: unknown option(s) bogus_axis"),
        (spec(grid={"x": 3}), "grid.x must be a non-empty list"),
        (spec(grid={"x": []}), "grid.x must be a non-empty list"),
        (spec(grid={"x": [1, 1]}), "grid.x lists 1 twice"),
        (spec(base={"x": 1}, grid={"x": [2]}), "x are in both base and grid"),
        (spec(base={"out": "here"}), "'out' is set by the sweep"),
        (spec(grid={"x": [1, -1000]}), "x must be at least -100"),
        (spec(grid={"x": [1, "abc"]}), "option 'x' expects float"),
        ({"plugins": [TOY], "command": "no-such-command"}, "unknown command 'no-such-command'"),
        ({"plugins": [TOY], "base": {"x": 1}}, "missing 'command'"),
        ({**spec(), "grids": {}}, "unknown top level key(s) grids"),
        (spec(resources={"gpu": 1}), "unknown resources key(s) gpu"),
        (spec(resources={"gpus": -1}), "resources.gpus must be a non-negative number"),
        ({"plugins": ["no_such_module_xyz"], "command": "toy"}, "plugin module 'no_such_module_xyz'"),
        ({"plugins": ["/nope/plugin.py"], "command": "toy"}, "plugin file not found"),
        ([1, 2], "a spec is a mapping"),
        (spec(grid={"model": [{"toy-mak": {"offset": 1}}]}),
         "model: no option takes a mapping and toy-mak names no command a pre-step can run"),
        (spec(grid={"model": [{"toy-make": {"offset": 1}, "lable": "one"}]}),
         "model: unknown pre-step key(s) lable beside 'toy-make' (allowed: label, resources)"),
        (spec(grid={"model": [{"toy-make": {}, "toy": {}}]}), "a pre-step names one command, not toy-make, toy"),
        (spec(base={"model": {"label": "x"}}), "no option takes a mapping and it names no command"),
        (spec(grid={"x": list(range(100)), "seed": list(range(100)), "sleep": list(range(11))}),
         "its grids hold 110,000 runs, more than the limit of 100,000"),
    ],
)
def test_validation_errors_name_the_bad_key(tmp_path, raw, message):
    with pytest.raises(BertscopeError) as info:
        parse(raw, runs_dir=tmp_path, where="my.yaml", plugins_from="any")
    assert message in str(info.value)
    assert str(info.value).startswith("my.yaml")
    assert "\n" not in str(info.value)


def test_bad_value_names_the_run(tmp_path):
    with pytest.raises(BertscopeError, match=r'run \{"seed":1,"x":-1000\}'):
        parse(spec(grid={"seed": [1], "x": [-1000]}), runs_dir=tmp_path)


def test_load_spec_reports_yaml_errors_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("command: toy\nbase: {x: 1\n")
    with pytest.raises(BertscopeError, match=r"bad.yaml: line \d+ not valid YAML"):
        load_spec(bad, runs_dir=tmp_path)
    with pytest.raises(BertscopeError, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml", runs_dir=tmp_path)


def test_load_spec_names_the_sweep_after_the_file_and_resolves_relative_plugins(tmp_path):
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "toy.py").write_text(Path(TOY).read_text())
    path = folder / "my-sweep.yaml"
    path.write_text(yaml.safe_dump({"plugins": ["toy.py"], "command": "toy", "grid": {"x": [1, 2]}}))
    loaded = load_spec(path, runs_dir=tmp_path / "runs", allow_plugins=True)  # the default rule: the spec's folder
    assert loaded.name == "my-sweep"
    assert loaded.plugins == (str((folder / "toy.py").resolve()),)
    assert len(loaded.runs) == 2


def test_pre_step_runs_once_and_feeds_its_output_folder(tmp_path):
    made = {"toy-make": {"offset": 0.5}, "label": "made"}
    runs = parse(spec(grid={"model": [None, made], "x": [1, 2], "seed": [1, 2]}), runs_dir=tmp_path).runs
    pre = [r for r in runs if r.command == "toy-make"]
    main = [r for r in runs if r.command == "toy"]
    assert len(pre) == 1 and len(main) == 8
    order = [r.id for r in runs]
    assert all(order.index(pre[0].id) < order.index(r.id) for r in main if r.depends_on)  # pre-steps first
    assert pre[0].axes is None and pre[0].label == "made"
    users = [r for r in main if r.depends_on]
    assert len(users) == 4 and all(r.depends_on == (pre[0].id,) for r in users)
    assert all(r.options["model"] == str(tmp_path / pre[0].id) for r in users)
    assert all(r.identity["model"] == {"@run": pre[0].id} for r in users)
    assert all(r.axes["model"] == "made" for r in users)
    # changing the pre-step's options changes the ids of the runs built on it
    other = parse(spec(grid={"model": [{"toy-make": {"offset": 0.7}}], "x": [1]}), runs_dir=tmp_path).runs
    assert other[-1].id not in {r.id for r in users}


def test_experiments_blocks_inherit_the_top_level_base(tmp_path):
    raw = {"plugins": [TOY], "command": "toy", "base": {"sleep": 0.01},
           "experiments": [{"name": "a", "grid": {"x": [1, 2]}}, {"grid": {"x": [3]}, "base": {"sleep": 0.0}}]}
    runs = parse(raw, runs_dir=tmp_path, default_name="two").runs
    assert [r.experiment for r in runs] == ["a", "a", "two[1]"]
    assert [r.options["sleep"] for r in runs] == [0.01, 0.01, 0.0]
    with pytest.raises(BertscopeError, match=r"experiments\[0\]: unknown experiment key\(s\) bases"):
        parse({**raw, "experiments": [{"bases": {}}]}, runs_dir=tmp_path)


def test_real_command_specs_validate_against_their_configs(tmp_path):
    raw = {"command": "reconstruct", "base": {"max_examples": 8}, "grid": {"head": ["pretrained", "fit"],
                                                                           "seed": [1, 2]}}
    runs = parse_spec(raw, runs_dir=tmp_path).runs
    assert len(runs) == 4 and {r.options["head"] for r in runs} == {"pretrained", "fit"}
    with pytest.raises(BertscopeError, match="head' must be one of"):
        parse_spec({**raw, "grid": {"head": ["sideways"]}}, runs_dir=tmp_path)


def test_shipped_experiment_specs_are_valid(tmp_path, monkeypatch):
    from bertscope.api import COMMANDS

    folder = Path(__file__).resolve().parents[1] / "experiments"
    specs = sorted(folder.glob("*.yaml"))
    assert specs, "experiments/*.yaml are missing"
    for path in specs:
        raw = yaml.safe_load(path.read_text())
        commands = {raw.get("command")} | {b.get("command") for b in raw.get("experiments") or []}
        missing = sorted(c for c in commands if c and c not in COMMANDS)
        if missing:  # a command another engineer has not registered yet
            continue
        loaded = load_spec(path, runs_dir=tmp_path)
        assert loaded.runs, path


def test_block_grid_overrides_inherited_base_and_pre_steps_take_their_own_resources(tmp_path):
    raw = {"plugins": [TOY], "command": "toy", "base": {"seed": 5, "x": 1}, "resources": {"cpus": 4, "gpus": 1},
           "experiments": [{"grid": {"seed": [1, 2]}},
                           {"grid": {"model": [{"toy-make": {}, "resources": {"gpus": 0}}]}}]}
    runs = parse(raw, runs_dir=tmp_path).runs
    assert [r.options["seed"] for r in runs if r.command == "toy"] == [1, 2, 5]
    pre = next(r for r in runs if r.command == "toy-make")
    user = next(r for r in runs if r.depends_on)
    assert pre.resources == {"cpus": 4.0, "gpus": 0.0} and user.resources == {"cpus": 4.0, "gpus": 1.0}
    with pytest.raises(BertscopeError, match="x are in both base and grid"):
        parse({**raw, "experiments": [{"base": {"x": 2}, "grid": {"x": [1]}}]}, runs_dir=tmp_path)


# --- plugins are code: imported only when asked, never on a dry run, only from where allowed ----------------------

MARKER_PLUGIN = '''
from dataclasses import dataclass
from pathlib import Path

from bertscope.core.config import Config, opt
from bertscope.core.registry import CommandInfo

Path(__file__).with_suffix(".imported").write_text("imported")  # what the tests look for


@dataclass(frozen=True)
class MarkConfig(Config):
    command = "mark"

    x: int = opt(0, "input")
    out: str | None = opt(None, "output folder")


BERTSCOPE_COMMANDS = [CommandInfo("mark", MarkConfig, lambda c: c, MarkConfig, "marks its import")]
'''


def marker_spec(folder: Path, plugin: str = "mark.py", *, plugin_dir: Path | None = None) -> Path:
    """A spec in ``folder`` with a plugin (written to ``plugin_dir``, default ``folder``) that leaves a marker file
    when imported, one block of its command (3 points) and one block of a built-in command (2 runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    (plugin_dir or folder).mkdir(parents=True, exist_ok=True)
    ((plugin_dir or folder) / "mark.py").write_text(MARKER_PLUGIN)
    path = folder / "marked.yaml"
    path.write_text(yaml.safe_dump({"plugins": [plugin], "experiments": [
        {"name": "plugin", "command": "mark", "grid": {"x": [1, 2, 3]}},
        {"name": "builtin", "command": "reconstruct", "base": {"max_examples": 4}, "grid": {"seed": [1, 2]}}]}))
    return path


def test_a_spec_with_plugins_is_refused_without_the_flag_and_nothing_is_imported(tmp_path):
    path = marker_spec(tmp_path)
    with pytest.raises(BertscopeError) as info:
        load_spec(path, runs_dir=tmp_path / "runs")
    message = str(info.value)
    assert "--allow-plugins" in message and message.startswith(str(path)) and "\n" not in message
    assert not (tmp_path / "mark.imported").exists()
    loaded = load_spec(path, runs_dir=tmp_path / "runs", allow_plugins=True)
    assert (tmp_path / "mark.imported").exists()
    assert sorted(r.command for r in loaded.runs) == ["mark"] * 3 + ["reconstruct"] * 2


@pytest.mark.parametrize("allow", [False, True])
def test_a_dry_run_never_imports_plugins_and_lists_the_built_in_runs(tmp_path, allow):
    path = marker_spec(tmp_path)
    loaded = load_spec(path, runs_dir=tmp_path / "runs", allow_plugins=allow, dry_run=True)
    assert not (tmp_path / "mark.imported").exists()
    assert [r.command for r in loaded.runs] == ["reconstruct", "reconstruct"]
    assert loaded.not_loaded == ("mark",) and loaded.not_loaded_runs == 3
    assert loaded.plugins == (str((tmp_path / "mark.py").resolve()),)


def test_a_dry_run_through_the_api_reports_the_plugins_it_did_not_load(tmp_path):
    from bertscope import api

    path = marker_spec(tmp_path)
    result = api.sweep(spec=str(path), store=str(tmp_path / "results.db"), dry_run=True, progress=False)
    assert not (tmp_path / "mark.imported").exists() and not (tmp_path / "results.db").exists()
    assert len(result.plan) == 2 and result.runs_not_loaded == 3 and result.commands_not_loaded == ("mark",)
    import io

    from rich.console import Console

    console = Console(record=True, width=1000, file=io.StringIO())
    console.print(result.render())
    text = " ".join(console.export_text().split())
    assert "plugins not loaded" in text and "3 run(s) of their commands (mark) not listed" in text
    assert "a real run needs --allow-plugins" in text


def test_plugins_come_only_from_the_spec_folder_unless_told_otherwise(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    path = marker_spec(tmp_path / "specs", "../elsewhere/mark.py", plugin_dir=elsewhere)
    with pytest.raises(BertscopeError, match="outside the spec's folder") as info:
        load_spec(path, runs_dir=tmp_path / "runs", allow_plugins=True)
    assert "--plugins-from" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(BertscopeError, match="outside the --plugins-from folder"):
        load_spec(path, runs_dir=tmp_path / "runs", allow_plugins=True, plugins_from=str(tmp_path / "specs"))
    assert not (elsewhere / "mark.imported").exists()
    load_spec(path, runs_dir=tmp_path / "runs", allow_plugins=True, plugins_from=str(elsewhere))
    assert (elsewhere / "mark.imported").exists()


def test_a_symlink_out_of_the_spec_folder_counts_as_outside(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    path = marker_spec(tmp_path / "specs", "link.py", plugin_dir=elsewhere)
    (tmp_path / "specs" / "link.py").symlink_to(elsewhere / "mark.py")
    with pytest.raises(BertscopeError, match="outside the spec's folder"):
        load_spec(path, runs_dir=tmp_path / "runs", allow_plugins=True)
    assert not (elsewhere / "mark.imported").exists()


def test_plugin_modules_need_plugins_from_any(tmp_path):
    raw = {"plugins": ["json"], "command": "reconstruct"}
    with pytest.raises(BertscopeError, match="--plugins-from any"):
        parse_spec(raw, runs_dir=tmp_path, allow_plugins=True)
    with pytest.raises(BertscopeError, match="declares no BERTSCOPE_COMMANDS"):  # imported, then refused
        parse_spec(raw, runs_dir=tmp_path, allow_plugins=True, plugins_from="any")


def test_plugins_from_needs_allow_plugins_and_a_real_folder(tmp_path):
    from bertscope.sweep.config import SweepConfig

    with pytest.raises(BertscopeError, match="add --allow-plugins"):
        SweepConfig(spec="s.yaml", plugins_from="any")
    with pytest.raises(BertscopeError, match="an existing folder"):
        SweepConfig(spec="s.yaml", allow_plugins=True, plugins_from=str(tmp_path / "nope"))
    assert SweepConfig(spec="s.yaml", allow_plugins=True, plugins_from=str(tmp_path)).plugins_from == str(tmp_path)


# --- values that collapse to one run, unknown tasks: errors a dry run reports ------------------------------------


def test_grid_values_that_collapse_to_the_same_run_are_named(tmp_path):
    with pytest.raises(BertscopeError) as info:
        parse(spec(grid={"x": [2], "seed": [1, 1.0, True]}), runs_dir=tmp_path, where="my.yaml")
    message = str(info.value)
    assert message.startswith("my.yaml") and "collapse to the same run" in message and "\n" not in message
    assert "seed: 1 and 1.0" in message and "x:" not in message  # only the axis that differs is named
    # an option its command leaves out of the identity collapses too (toy-make's `cached`)
    with pytest.raises(BertscopeError, match="cached: True and False"):
        parse({"plugins": [TOY], "command": "toy-make", "grid": {"cached": [True, False]}}, runs_dir=tmp_path)
    # the same configuration in two experiments is no collapse: it runs once and serves both
    raw = {"plugins": [TOY], "command": "toy", "experiments": [{"grid": {"x": [1]}}, {"grid": {"x": [1.0]}}]}
    loaded = parse(raw, runs_dir=tmp_path)
    assert len(loaded.runs) == 1 and len(loaded.members) == 2


@pytest.mark.parametrize("command", ["finetune", "reconstruct", "layers"])
def test_unknown_tasks_are_caught_by_validation(tmp_path, command):
    raw = {"command": command, "grid": {"task": ["rte", "nosuch"]}}
    with pytest.raises(BertscopeError, match=r'run \{"task":"nosuch"\}: unknown GLUE task \'nosuch\''):
        parse_spec(raw, runs_dir=tmp_path)


def test_a_dry_run_reports_an_unknown_task_and_a_bad_value(tmp_path):
    from bertscope import api

    for base, message in (({"task": "nosuch"}, "unknown GLUE task 'nosuch'"),
                          ({"task": "rte", "dropout": 2.0}, "--dropout must be in [0, 1)")):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({"command": "finetune", "base": base, "grid": {"seed": [1, 2]}}))
        with pytest.raises(BertscopeError) as info:
            api.sweep(spec=str(path), store=str(tmp_path / "results.db"), dry_run=True, progress=False)
        assert message in str(info.value) and str(info.value).startswith(str(path))


def test_expansion_is_linear_in_the_runs(tmp_path, monkeypatch):
    """Machine-independent: count the configs built and the member comparisons, not seconds. 8x the runs must cost
    at most ~8x the work (a quadratic step would cost 64x); the timed 10k/100k measure is benchmarks/bench_sweep.py."""
    import bertscope.sweep.spec as spec_module

    calls = {"canonical": 0}
    original = spec_module.canonical_json

    def counting(value):
        calls["canonical"] += 1
        return original(value)

    monkeypatch.setattr(spec_module, "canonical_json", counting)
    work = {}
    for n in (250, 2000):
        calls["canonical"] = 0
        start = __import__("time").process_time()
        raw = {"command": "reconstruct", "grid": {"seed": list(range(n // 2)), "head": ["pretrained", "fit"]}}
        loaded = parse_spec(raw, runs_dir=tmp_path)
        work[n] = (calls["canonical"], __import__("time").process_time() - start)
        assert len(loaded.runs) == n and len(loaded.members) == n
    assert work[2000][0] <= 8 * work[250][0] + 50  # the same few conversions per run
    assert work[2000][1] <= 8 * 4 * max(work[250][1], 0.05)  # generous: quadratic would be 8x more again


def test_the_grid_is_counted_before_it_is_expanded(tmp_path, monkeypatch):
    """A grid past the limit is refused before a single run is built (so a 10^12-point typo costs nothing), the
    count spans every block, and --max-runs moves the limit."""
    from bertscope.sweep import spec as spec_module

    built = []
    monkeypatch.setattr(spec_module._Expander, "add", lambda self, *a, **k: built.append(a))
    huge = spec(grid={"x": list(range(10_000)), "seed": list(range(10_000)), "sleep": list(range(10_000))})
    with pytest.raises(BertscopeError, match=r"1\.0e\+12 runs, more than the limit of 100,000"):
        parse(huge, runs_dir=tmp_path)
    blocks = {"plugins": [TOY], "command": "toy",
              "experiments": [{"grid": {"x": list(range(1, 7))}}, {"grid": {"seed": list(range(1, 6))}}]}
    with pytest.raises(BertscopeError, match="its grids hold 11 runs, more than the limit of 10"):
        parse(blocks, runs_dir=tmp_path, max_runs=10)
    assert built == []
    monkeypatch.undo()
    assert len(parse(blocks, runs_dir=tmp_path, max_runs=11).runs) == 11


def test_a_misspelled_pre_step_is_caught_by_a_dry_run(tmp_path):
    """A dry run of a spec with plugins imports none, yet a mapping that is no pre-step of a known shape still
    fails there (a plugin command's pre-step, one key holding options, is counted as not loaded)."""
    raw = {"plugins": [TOY], "command": "reconstruct",
           "grid": {"model": [{"deepen": {"model": "m", "layer_map": "0,1"}, "lable": "2L"}]}}
    with pytest.raises(BertscopeError, match="unknown pre-step key.s. lable beside 'deepen'"):
        parse_spec(raw, runs_dir=tmp_path, dry_run=True)
    raw["grid"] = {"model": [{"deepen": {"model": "m", "layer_mapp": "0,1"}}]}
    with pytest.raises(BertscopeError, match="unknown option.s. layer_mapp for 'deepen'"):
        parse_spec(raw, runs_dir=tmp_path, dry_run=True)
    raw["grid"] = {"model": [{"toy-make": {"offset": 1}}]}  # a plugin's pre-step: not loaded, not an error
    assert parse_spec(raw, runs_dir=tmp_path, dry_run=True).not_loaded == ("toy-make",)
