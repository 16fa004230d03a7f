"""Command-line front door: parses options into configs, calls the API, prints. No logic of its own."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bertscope._version import __version__
from bertscope.api import COMMANDS
from bertscope.config import add_arguments, config_from_args
from bertscope.errors import BertscopeError

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


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    command = COMMANDS[args.command]
    try:
        config = config_from_args(command.config, args)
        result = command.run(config)
    except BertscopeError as exc:
        print(f"bertscope {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bertscope {args.command}: interrupted; results already finished were kept", file=sys.stderr)
        return 130
    render = getattr(result, "render", None)
    if callable(render):
        from rich.console import Console

        Console().print(render())
    return int(getattr(result, "exit_code", 0))  # e.g. a sweep with failed runs exits 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
