"""What a command prints while it works: one rule for every command's progress.

``--log`` (and ``--progress`` / ``--no-progress``) decide it: ``auto`` is tqdm bars on a terminal and plain
timestamped lines elsewhere (a pipe or a batch job's log file gets no ``\\r``-redrawn bar frames), ``bar`` and
``plain`` are taken as they are, and ``off`` (or ``--no-progress``) prints nothing. The fine-tuning loop's own lines
(:mod:`bertscope.finetune.progress`) and every other bar (the lens pass, the fitted head, the feature cache) read
their mode here, so a command never shows bars in a pipe or anything with ``--log off``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["LOG_CHOICES", "PlainProgress", "Progress", "log_mode", "progress_bar", "progress_setting"]

#: The values of ``--log``.
LOG_CHOICES = ("auto", "bar", "plain", "off")

#: What a function that shows progress is told: ``True`` (as ``--log auto``), ``False`` (nothing) or a ``--log``
#: value.
Progress = bool | str


def log_mode(log: str, stream: Any = None) -> str:
    """What ``--log`` means here: ``auto`` is ``bar`` when ``stream`` (default stdout) is a terminal and ``plain``
    otherwise; ``bar``, ``plain`` and ``off`` (print nothing, as each run inside a study) are taken as they are."""
    if log != "auto":
        return log
    isatty = getattr(sys.stdout if stream is None else stream, "isatty", None)
    try:
        return "bar" if callable(isatty) and isatty() else "plain"
    except (OSError, ValueError):  # a closed or detached stream is no terminal
        return "plain"


def progress_setting(progress: bool, log: str) -> str:
    """The one ``--log`` value of a command with both options: ``--no-progress`` is ``off``."""
    return log if progress else "off"


class PlainProgress:
    """A bar's plain form: a timestamped line when the work starts, at most one per ``seconds`` while it runs, and
    one when it ends, on ``stream``; the part of tqdm's interface bertscope's bars use."""

    def __init__(self, iterable: Iterable[Any] | None, total: int | None, desc: str, unit: str, stream: Any,
                 seconds: float) -> None:
        self.iterable, self.desc, self.unit, self.stream, self.seconds = iterable, desc, unit, stream, seconds
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)  # type: ignore[arg-type]
        self.n = 0
        self.postfix = ""
        self.started = time.monotonic()
        self.last = -float("inf")
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self, done: bool = False) -> None:
        self.last = time.monotonic()
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        postfix = f" ({self.postfix})" if self.postfix else ""
        took = f" in {self.last - self.started:.1f} s" if done else ""
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {self.desc}: {count} {self.unit}{postfix}{took}",
              file=self.stream, flush=True)

    def update(self, count: int = 1) -> None:
        self.n += count
        if time.monotonic() - self.last >= self.seconds:
            self._line()

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line(done=True)


def progress_bar(iterable: Iterable[Any] | None = None, *, progress: Progress, total: int | None = None,
                 desc: str = "", unit: str = "it", seconds: float = 30.0, stream: Any = None) -> Any:
    """Progress over ``iterable`` (or ``total`` steps counted with ``update``) as ``progress`` says: a transient tqdm
    bar on ``stream`` (default stderr), :class:`PlainProgress` lines there, or a disabled tqdm (nothing)."""
    from tqdm.auto import tqdm

    stream = sys.stderr if stream is None else stream
    log = "auto" if progress is True else "off" if progress is False else progress
    mode = log_mode(log, stream)
    if mode == "plain":
        return PlainProgress(iterable, total, desc, unit, stream, seconds)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=mode != "bar", leave=False, dynamic_ncols=True,
                file=stream)
