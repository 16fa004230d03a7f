"""Command-line front door: parses options into configs, calls the API, prints. No logic of its own."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import NoReturn

from bertscope._version import __version__
from bertscope.api import COMMANDS
from bertscope.core.config import add_arguments, config_from_args
from bertscope.core.errors import BertscopeError, Terminated
from bertscope.core.precision import warn_if_emulated
from bertscope.finetune.distributed import is_main

__all__ = ["UsageError", "build_parser", "main"]


#: What argparse may take as an option's value although it starts with a dash: any float spelling, so
#: ``--lr -1e-3`` and ``--head-lr -inf`` reach the option's own check instead of "expected one argument".
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


class UsageError(Exception):
    """A command line argparse refuses (unknown option, a value of the wrong type, a missing value)."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{prog}: error: {message} (see {prog} --help)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a refused command line is one line like every other user error (argparse prints the whole usage
    block first) and negative numbers of every float spelling are values, not options."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bertscope",
        description="Look inside BERT-family encoders: layers, token vectors, hidden dimensions.",
    )
    parser.add_argument("--version", action="version", version=f"bertscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.config.__doc__)
        add_arguments(p, command.config)
    return parser


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"received {signal.Signals(signum).name}")


@contextlib.contextmanager
def _sigterm_like_ctrl_c() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` while a command runs (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # named by the command they were given to, as its other errors are
            prog = f"{parser.prog} {args.command}" if args.command else parser.prog
            raise UsageError(prog, f"unrecognized arguments: {' '.join(unknown)}")
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 2
    command = COMMANDS[args.command]
    try:
        with _sigterm_like_ctrl_c():
            config = config_from_args(command.config, args)
            warn_if_emulated(config)
            result = command.run(config)
    except BertscopeError as exc:
        print(f"bertscope {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (a scheduler's preemption) as Terminated
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"bertscope {args.command}: {how}; results already finished were kept", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    render = getattr(result, "render", None)
    if callable(render) and is_main():  # a data-parallel run's table: rank 0 prints it
        from rich.console import Console

        Console().print(render())
    return int(getattr(result, "exit_code", 0))  # e.g. a sweep with failed runs exits 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
