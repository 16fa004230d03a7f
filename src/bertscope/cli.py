"""Command-line front door: parses options into configs, calls the API, prints. No logic of its own."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from bertscope._version import __version__
from bertscope.api import COMMANDS
from bertscope.core.config import add_arguments, config_from_args
from bertscope.core.errors import BertscopeError, Terminated
from bertscope.core.precision import warn_if_emulated
from bertscope.finetune.distributed import is_main

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    args = parser.parse_args(argv)
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
