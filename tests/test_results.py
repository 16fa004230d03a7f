"""Result files: written atomically, with the mode the process umask gives (as a plain ``open()`` would)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bertscope.core import results


@pytest.fixture
def umask():
    """Set the process umask for one test, and put the old one back."""
    before = os.umask(0o022)
    os.umask(before)
    yield lambda value: os.umask(value)
    os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_result_files_follow_the_umask(tmp_path, umask, mask, mode) -> None:
    umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives under this umask: the reference
    assert _mode(plain) == mode
    written = [results.write_json_atomic(tmp_path / "r.json", {"a": 1}),
               results.write_csv_atomic(tmp_path / "r.csv", [{"a": 1}]),
               results.write_text_atomic(tmp_path / "r.txt", "text")]
    assert [_mode(p) for p in written] == [_mode(plain)] * 3
    assert results.file_mode() == mode
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_a_figure_follows_the_umask(tmp_path, umask) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    umask(0o002)
    fig = plt.figure()
    try:
        path = results.save_figure_atomic(fig, tmp_path / "f.png")
    finally:
        plt.close(fig)
    assert _mode(path) == 0o664


def test_reading_the_umask_does_not_change_it(umask) -> None:
    umask(0o027)
    assert results.file_mode() == 0o640
    assert os.umask(0o027) == 0o027  # still what was set


def test_a_fresh_process_follows_its_umask(tmp_path) -> None:
    """The umask a batch job starts with (set before bertscope is imported)."""
    code = ("import os, sys; os.umask(0o002); from bertscope.core import results; "
            "results.write_json_atomic(sys.argv[1], {'a': 1})")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(results.__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.json")], check=True, env=env, timeout=120)
    assert _mode(tmp_path / "r.json") == 0o664


def test_without_proc_the_umask_is_read_once_and_kept(monkeypatch, umask) -> None:
    import builtins

    real_open = builtins.open

    def no_proc(file, *args, **kwargs):
        if str(file).startswith("/proc/"):
            raise FileNotFoundError(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    monkeypatch.setattr(results, "_UMASK_FALLBACK", [])
    umask(0o002)
    assert results.file_mode() == 0o664
    assert os.umask(0o002) == 0o002  # set back after reading
    umask(0o022)
    assert results.file_mode() == 0o664  # read once: the first value is kept


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_a_published_folder_follows_the_umask_whatever_mode_its_writer_chose(tmp_path, umask, mask) -> None:
    from bertscope.core import publish

    umask(mask)
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "plain").write_text("x")  # what mkdir() and open() give under this umask
    (tmp_path / "outside").write_text("not ours")
    os.chmod(tmp_path / "outside", 0o640)
    with publish.building(tmp_path / "model") as tmp:
        weights = tmp / "sub" / "model.safetensors"
        weights.parent.mkdir()
        weights.write_bytes(b"w")
        os.chmod(weights, 0o600)  # as transformers' save_pretrained leaves its weights
        os.chmod(weights.parent, 0o700)
        (tmp / "link").symlink_to(tmp_path / "outside")
    out = tmp_path / "model"
    assert _mode(out / "sub" / "model.safetensors") == _mode(reference / "plain")
    assert _mode(out / "sub") == _mode(out) == _mode(reference)
    assert (out / "link").is_symlink() and _mode(tmp_path / "outside") == 0o640  # a link is never followed
