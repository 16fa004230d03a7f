"""The command line (:func:`bertscope.cli.main`): every registered command's ``--help`` lists its options, user
errors are one stderr line ``bertscope <command>: error: ...`` with exit code 2, and a real command runs end to end.

No model is downloaded: the commands that load one get a tiny random checkpoint from ``conftest``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import pytest
import transformers

import bertscope
from bertscope.api import COMMANDS
from bertscope.cli import main
from bertscope.core.config import config_options

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def bert_folder(tiny_checkpoint, capsys) -> str:
    """A tiny BERT checkpoint; what saving it printed is dropped, so each test sees only its command's output."""
    folder = str(tiny_checkpoint("bert"))
    capsys.readouterr()
    return folder


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("BERTSCOPE_GLUE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # a command that writes by default (report, sweep stores) writes here


def run(argv: Sequence[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one CLI call, whether it returns or argparse exits."""
    try:
        code = main(list(argv))
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def user_error(argv: Sequence[str], capsys) -> str:
    """The one stderr line of a BertscopeError, after checking its form and the exit code."""
    code, _, err = run(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"bertscope {argv[0]}: error: "), lines[0]
    return lines[0]


def _flag_pattern(flag: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(flag)}(?![\w-])")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_lists_every_option_of_the_command(name: str, capsys) -> None:
    code, out, _ = run([name, "--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    assert text.startswith(f"usage: bertscope {name}")
    info = COMMANDS[name]
    for option in config_options(info.config):  # every flat option, groups included
        flag = option.flag
        if not option.cli:
            assert not _flag_pattern(flag).search(text), f"{flag} is API-only but shown"
            continue
        if option.positional:
            assert (option.metavar or option.name) in text
            continue
        assert _flag_pattern(flag).search(text), f"{flag} missing from {name} --help"
        if option.type is bool:
            assert _flag_pattern("--no-" + flag[2:]).search(text)
        help_text = " ".join(option.help.split())
        assert help_text[:40] in text  # the help text is the option's own
        if option.default is not None and option.type is not bool:
            assert f"(default: {option.default})" in text


def test_every_command_is_offered(capsys) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for name, info in COMMANDS.items():
        assert name in out and " ".join(info.help.split())[:30] in " ".join(out.split())


def test_no_command_prints_the_usage_and_exits_2(capsys) -> None:
    code, out, _ = run([], capsys)
    assert code == 2
    assert out.startswith("usage: bertscope")


def test_version(capsys) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out.strip() == f"bertscope {bertscope.__version__}"


def test_an_unknown_command_exits_2(capsys) -> None:
    code, _, err = run(["no-such-command"], capsys)
    assert code == 2 and "invalid choice" in err


# --- user errors ---------------------------------------------------------------------------------------------------


def test_finetune_without_a_task(capsys) -> None:
    assert "--task is required" in user_error(["finetune", "--epochs", "1"], capsys)


def test_deepen_needs_one_edit_and_an_out_folder(capsys) -> None:
    assert "exactly one of --duplicate, --remove or --layer-map" in user_error(["deepen"], capsys)
    line = user_error(["deepen", "--duplicate", "1", "--remove", "2", "--out", "x"], capsys)
    assert "--duplicate, --remove" in line
    assert "--out is required" in user_error(["deepen", "--duplicate", "1"], capsys)


def test_cross_and_studies_check_their_options(capsys) -> None:
    assert "--tasks" in user_error(["cross"], capsys)
    assert "--tasks" in user_error(["cross", "--tasks", "rte"], capsys)
    assert "does not save models" in user_error(["dims", "--task", "rte", "--save-model", "--out", "o"], capsys)


@pytest.mark.parametrize(("argv", "option"), [
    (["finetune", "--task", "rte", "--head", "bilinear"], "--head"),
    (["reconstruct", "--dtype", "float64"], "--dtype"),
    (["deepen", "--duplicate", "1", "--out", "x", "--placement", "middle"], "--placement"),
    (["sweep", "spec.yaml", "--executor", "slurm"], "--executor"),
])
def test_an_unknown_choice_names_the_option_and_the_choices(argv: list[str], option: str, capsys) -> None:
    code, _, err = run(argv, capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2
    assert last.startswith(f"bertscope {argv[0]}: error: argument {option}: invalid choice")
    assert "choose from" in last


@pytest.mark.parametrize("argv", [["finetune", "--task", "rte", "--epochs", "two"],
                                  ["status", "--slowest", "1.5"],
                                  ["finetune", "--task", "rte", "--lr", "fast"]])
def test_a_value_of_the_wrong_type_exits_2(argv: list[str], capsys) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(f"bertscope {argv[0]}: error: argument")


def test_a_missing_positional_is_one_line(capsys) -> None:
    assert user_error(["sweep"], capsys) == ("bertscope sweep: error: the following arguments are required: SPEC "
                                             "(see bertscope sweep --help)")


def test_range_checks_are_one_line(capsys) -> None:
    assert "--epochs must be at least 1" in user_error(["finetune", "--task", "rte", "--epochs", "0"], capsys)
    assert "--batch-size must be at least 1" in user_error(["reconstruct", "--batch-size", "0"], capsys)
    assert "--workers must be at least 1" in user_error(["sweep", "s.yaml", "--workers", "0"], capsys)
    assert "--address needs --executor ray" in user_error(["sweep", "s.yaml", "--address", "auto"], capsys)


def test_a_missing_store_is_one_line(tmp_path, capsys) -> None:
    line = user_error(["status", "--store", str(tmp_path / "missing.db")], capsys)
    assert "missing.db" in line
    assert not (tmp_path / "missing.db").exists()  # status never creates a store


@pytest.mark.parametrize(("spec", "bad"), [("9", "9"), ("x", "x"), ("2-1", "2-1")])
def test_a_bad_layer_spec_is_one_line_and_writes_nothing(spec: str, bad: str, bert_folder, tmp_path, capsys) -> None:
    out = tmp_path / "deep"
    line = user_error(["deepen", "--model", bert_folder, "--duplicate", spec, "--out", str(out), "--device", "cpu"],
                      capsys)
    message = line.split(": error: ", 1)[1]
    assert "--duplicate" in message and re.search(rf"(?<![\w-]){re.escape(bad)}(?![\w-])", message), line
    assert not out.exists()


def test_a_bad_layer_list_for_reconstruct_is_one_line(bert_folder, tmp_path, capsys) -> None:
    texts = tmp_path / "s.txt"
    texts.write_text("One sentence here.\nAnother one.\n", encoding="utf-8")
    line = user_error(["reconstruct", "--model", bert_folder, "--texts", str(texts), "--layers", "0,99",
                       "--no-progress", "--device", "cpu"], capsys)
    assert "--layers" in line and "99" in line


# --- a real command ----------------------------------------------------------------------------------------------


def test_deepen_end_to_end(bert_folder, tmp_path, capsys) -> None:
    out = tmp_path / "deep"
    code, printed, err = run(["deepen", "--model", bert_folder, "--duplicate", "0-1", "--copies",
                              "2", "--placement", "block", "--out", str(out), "--device", "cpu"], capsys)
    assert code == 0, err
    assert "3 -> 7 layers" in printed
    assert transformers.AutoConfig.from_pretrained(out).num_hidden_layers == 7
    saved = [json.loads(p.read_text()) for p in out.glob("*.json") if "layer_map" in p.read_text()]
    assert saved and saved[0]["layer_map"] == [0, 1, 0, 1, 0, 1, 2]
    line = user_error(["deepen", "--model", bert_folder, "--duplicate", "1", "--out", str(out), "--device", "cpu"],
                      capsys)
    assert "exists" in line  # refused: the folder is there already


def test_sigterm_handling_is_installed_only_while_a_command_runs(capsys) -> None:
    import signal

    before = signal.getsignal(signal.SIGTERM)
    assert main(["status", "--store", "missing.db"]) == 2
    capsys.readouterr()
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's own handler is back


def test_sigterm_stops_finetune_like_ctrl_c_with_exit_143(bert_folder, glue_dir, tmp_path) -> None:
    """What SLURM and Kubernetes send: the run records "interrupted", writes no results, one line, exit 143."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "preempted"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "bertscope", "finetune", "--model", bert_folder, "--task", "rte", "--data-dir",
               str(glue_dir), "--max-train", "16", "--max-eval", "8", "--max-length", "16", "--epochs", "100000",
               "--no-progress", "--device", "cpu", "--out", str(out)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    status = out / "status.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not status.exists():
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    assert json.loads(status.read_text())["state"] == "running"
    time.sleep(0.5)  # into the training loop
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert lines == ["bertscope finetune: terminated (SIGTERM); results already finished were kept"], err
    assert json.loads(status.read_text())["state"] == "interrupted"
    assert not (out / "results.json").exists()
