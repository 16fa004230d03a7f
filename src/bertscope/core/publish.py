"""Folders that appear whole or not at all, and the leftovers of runs that crashed while writing one.

A folder (a saved model, a deepened checkpoint, a cache entry) is built under a temporary name beside its target,
``.NAME.tmp-OWNER-TAG``, and renamed into place by :func:`publish`. A folder it replaces is first set aside as
``.NAME.old-OWNER-TAG`` and deleted only once the new one is in place, so a crash at any moment leaves the previous
folder or the new one (never a mix of both), plus a leftover that the next run clears.

``OWNER`` is ``host-pid-start`` (the process's start time in clock ticks since boot, where ``/proc`` has it), so the
next run can tell a crashed run's leftovers from a live run's work even when pids are reused (containers restart
with the same small pids): :func:`remove_stale` deletes a leftover only when it was made on this host by a process
that is gone. A set-aside folder whose target is missing (a crash between the two renames) is renamed back, so the
previous result is never lost. Leftovers of other hosts (a shared file system) are left alone: their owner cannot be
asked. A published folder's files get the umask's mode (:func:`bertscope.core.results.follow_umask`), whatever mode
the libraries that wrote them chose. This module imports only ``errors`` and ``results`` of bertscope.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from bertscope.core.errors import BertscopeError
from bertscope.core.results import follow_umask

__all__ = ["building", "check_writable", "drop_retired", "is_stale", "owner", "previous_name", "publish", "remove_stale",
           "retire", "temp_path"]

_log = logging.getLogger("bertscope")
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-(?P<start>\d+)"
                       r"-(?P<tag>[0-9a-f]{8})$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (``/proc/PID/stat`` field 22), or None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])  # fields after "(comm)" start at field 3
    except (IndexError, ValueError):
        return None


def owner() -> str:
    """``host-pid-start`` of this process, as written into temporary names."""
    return f"{_host()}-{os.getpid()}-{_start_ticks(os.getpid()) or 0}"


def temp_path(target: str | os.PathLike[str], kind: str = "tmp") -> Path:
    """A fresh name beside ``target`` for a temporary (``tmp``) or set-aside (``old``) copy of it, owned by this
    process."""
    target = Path(target)
    return target.with_name(f".{target.name}.{kind}-{owner()}-{uuid.uuid4().hex[:8]}")


def check_writable(folder: str | os.PathLike[str], option: str = "--out") -> Path:
    """Check, before any heavy work, that files can be written into ``folder`` (which need not exist yet: then
    into the nearest folder above it that does); nothing is left behind. A bad ``--out`` then fails in a second
    with one line instead of a traceback after the training."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise BertscopeError(f"{option} {folder} exists and is not a folder")
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise BertscopeError(f"cannot write to {option} {folder}: {probe} is not a folder")
    try:
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as exc:
        raise BertscopeError(f"cannot write to {option} {folder}: {exc.strerror or exc} ({probe})") from None
    return folder


def _alive(pid: int, start: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    now = _start_ticks(pid)
    return start == 0 or now is None or now == start  # a different start time: the pid was reused


def is_stale(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a leftover (temporary or set-aside name) of a process of this host that is gone."""
    match = _LEFTOVER.match(Path(path).name)
    if match is None or match["host"] != _host():
        return False
    return not _alive(int(match["pid"]), int(match["start"]))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Clear the leftovers of crashed runs in ``folder`` (of target ``name`` only, when given); returns what was
    removed. A stale set-aside copy whose target is missing is renamed back instead (the previous result returns)."""
    folder = Path(folder)
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    removed: list[Path] = []
    for path in entries:
        match = _LEFTOVER.match(path.name)
        if match is None or (name is not None and match["name"] != name) or not is_stale(path):
            continue
        target = folder / match["name"]
        with contextlib.suppress(OSError):
            if match["kind"] == "old" and not target.exists():
                os.replace(path, target)
                _log.warning("restored %s from an interrupted replacement (%s)", target, path.name)
                continue
            _remove(path)
            removed.append(path)
    if removed:
        _log.info("removed %d leftover(s) of crashed runs in %s", len(removed), folder)
    return removed


def publish(tmp: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """Rename the finished folder ``tmp`` to ``out``; an existing ``out`` is set aside first and deleted last."""
    tmp, out = Path(tmp), Path(out)
    follow_umask(tmp)
    old = None
    if out.exists():
        old = temp_path(out, "old")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        _remove(old)


@contextlib.contextmanager
def building(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary folder beside ``target`` to write into; published as ``target`` when the block ends normally,
    deleted when it raises. Leftovers of crashed builds of ``target`` are cleared first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target.parent, target.name)
    tmp = temp_path(target)
    tmp.mkdir()
    try:
        yield tmp
        publish(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def previous_name(name: str) -> str:
    """Where :func:`retire` puts ``name``: ``results.json`` -> ``results.previous.json``, ``model`` ->
    ``model.previous``."""
    path = Path(name)
    return f"{path.stem}.previous{path.suffix}" if path.suffix else f"{name}.previous"


def retire(folder: str | os.PathLike[str], names: Sequence[str]) -> list[Path]:
    """Move each of ``names`` in ``folder`` to its :func:`previous_name` (replacing an older one), in the order
    given: a run that replaces another's output (``--overwrite``) and is then interrupted leaves no file of the
    previous run under a current name. Name the file that makes a folder look complete first. Returns the moved."""
    folder = Path(folder)
    moved: list[Path] = []
    for name in names:
        source = folder / name
        if not source.exists() and not source.is_symlink():
            continue
        target = folder / previous_name(name)
        if target.exists() or target.is_symlink():
            _remove(target)
        os.replace(source, target)
        moved.append(target)
    return moved


def drop_retired(folder: str | os.PathLike[str], names: Sequence[str]) -> None:
    """Delete what :func:`retire` set aside for ``names`` (the new run is complete)."""
    for name in names:
        target = Path(folder) / previous_name(name)
        if target.exists() or target.is_symlink():
            _remove(target)

