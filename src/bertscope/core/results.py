"""Provenance and crash-safe writing of result files.

Every result file bertscope writes records the options it ran with, the library versions and the git hash of the
bertscope source, so a number in a paper can be traced back. Files are written to a temporary name and renamed,
so an interrupted run never leaves a file that looks complete; a written file's mode follows the umask, as a
plain ``open()`` would. This module imports only ``errors`` of bertscope.
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from bertscope.core.errors import BertscopeError

__all__ = [
    "CommandResult",
    "environment_info",
    "file_mode",
    "file_sha256",
    "files_match_checksums",
    "follow_umask",
    "git_info",
    "prepare_out_dir",
    "run_environment",
    "save_figure_atomic",
    "to_jsonable",
    "write_checksums",
    "write_csv_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

_TRACKED_PACKAGES = (
    "bertscope", "torch", "transformers", "tokenizers", "datasets", "accelerate", "safetensors",
    "numpy", "scikit-learn", "scipy",
)


def git_info(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Commit hash and dirty flag of the git checkout holding ``path`` (default: the bertscope source)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(status)}


def environment_info() -> dict[str, Any]:
    """Versions of Python, the key libraries and the hardware, plus the bertscope git hash and a UTC timestamp."""
    versions: dict[str, str | None] = {}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "git": git_info(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import torch

        info["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_threads"] = torch.get_num_threads()
        from bertscope.core.precision import native_support

        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["bfloat16_support"] = {"cpu": native_support("bfloat16", "cpu")[1],
                                    **({"cuda": native_support("bfloat16", "cuda")[1]}
                                       if torch.cuda.is_available() else {})}
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return info


@functools.lru_cache(maxsize=1)
def _static_environment() -> dict[str, Any]:
    return environment_info()


def run_environment() -> dict[str, Any]:
    """:func:`environment_info` for one run: versions and git state are looked up once per process (the lookup
    takes most of a second, longer than a cached head's training); the timestamp is the run's own."""
    info = dict(_static_environment())
    info["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return info


def to_jsonable(value: Any) -> Any:
    """Convert dataclasses, paths, tuples, numpy and torch scalars into plain JSON values."""
    import dataclasses

    from bertscope.core.config import Options

    if isinstance(value, Options):  # a config or option group: its flat options, as written next to every result
        return to_jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and value != value:  # NaN is not valid JSON
        return None
    return value


def prepare_out_dir(out: str | os.PathLike[str] | None) -> Path | None:
    """Create the output folder and check it is writable *before* any heavy work, so a bad --out fails in a second."""
    if out is None:
        return None
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise BertscopeError(f"--out {out} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise BertscopeError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
    return folder


_UMASK_LOCK = threading.Lock()
_UMASK_FALLBACK: list[int] = []  # the umask, read once where /proc cannot tell it


def _umask() -> int:
    """The process umask, read without changing it: Linux reports it in /proc/self/status; elsewhere it is read
    once (``os.umask`` can only be read by setting it, so it is set back at once, under a lock)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        if not _UMASK_FALLBACK:
            current = os.umask(0o077)
            os.umask(current)
            _UMASK_FALLBACK.append(current)
    return _UMASK_FALLBACK[0]


def file_mode() -> int:
    """The mode a new result file gets: 0666 minus the umask, as ``open()`` would give it (``tempfile.mkstemp``
    creates 0600 whatever the umask, so collaborators could not read the files of a shared folder)."""
    return 0o666 & ~_umask()


def follow_umask(folder: str | os.PathLike[str]) -> None:
    """Give every file under ``folder`` (and the folder and its subfolders) the umask's mode before it is published.

    Libraries write weights through their own private temporary files (transformers' ``save_pretrained`` leaves
    ``model.safetensors`` 0600 whatever the umask), and a temporary build folder may be private too; a published
    result must be readable by whoever the umask lets read it. Links are left alone (never followed)."""
    umask = _umask()
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~umask)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]


def _publish(tmp: str, target: Path) -> None:
    """Give the temporary file the umask's mode and rename it into place (atomically)."""
    os.chmod(tmp, file_mode())
    os.replace(tmp, target)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def save_figure_atomic(fig: Any, path: str | os.PathLike[str], **savefig_options: Any) -> Path:
    """Save a matplotlib figure via a temporary file and an atomic rename (the figure is not closed); the format
    is the file's suffix (``.png``, ``.svg``, ``.pdf``; PNG when it has none). ``figures.save_figure`` writes all
    three."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fmt = target.suffix.lstrip(".").lower() or "png"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".{fmt}", dir=target.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format=fmt, **savefig_options)
        _publish(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    return write_text_atomic(path, json.dumps(to_jsonable(payload), indent=2, allow_nan=False) + "\n")


def write_csv_atomic(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write dict rows as CSV (columns in first-seen order), atomically."""
    rows = [dict(r) for r in rows]
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: to_jsonable(v) for k, v in row.items()})
    return write_text_atomic(path, buffer.getvalue())


class CommandResult(Protocol):
    """What every command returns (see docs/DEVELOPING.md)."""

    def to_dict(self) -> dict[str, Any]: ...

    def metrics(self) -> dict[str, float]: ...

    def render(self) -> Any: ...


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes (hex), read in chunks (a checkpoint or a cache file may be gigabytes): what a
    checkpoint or a cache entry records of its files when written and checks before trusting them."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: The file beside a cache entry's files that records their SHA-256s (:func:`write_checksums`).
CHECKSUMS = "checksums.json"


def write_checksums(folder: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Record the SHA-256 of each of ``names`` in ``folder`` (in ``checksums.json``), after they are written."""
    folder = Path(folder)
    write_json_atomic(folder / CHECKSUMS, {name: file_sha256(folder / name) for name in names})


def files_match_checksums(folder: str | os.PathLike[str], names: Iterable[str]) -> bool:
    """Whether each of ``names`` in ``folder`` still has the SHA-256 :func:`write_checksums` recorded (False when
    one was never recorded, or the record is unreadable): a cache entry whose contents changed is refitted."""
    folder = Path(folder)
    try:
        recorded = json.loads((folder / CHECKSUMS).read_text(encoding="utf-8"))
        return isinstance(recorded, dict) and all(
            isinstance(recorded.get(name), str) and file_sha256(folder / name) == recorded[name] for name in names)
    except (OSError, UnicodeDecodeError, ValueError):
        return False

