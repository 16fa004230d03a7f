"""The Python API: one function per command, each taking its config (or the same options as keywords).

    >>> from bertscope import api
    >>> result = api.reconstruct(model="bert-base-uncased", task="sst2", max_examples=200)

Each function returns an immutable result object and, when ``out`` is set, writes its files there. The CLI is a thin
layer over the :data:`COMMANDS` registry below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bertscope.config import Config
from bertscope.configs import ReconstructConfig

__all__ = ["COMMANDS", "Command", "reconstruct"]

C = TypeVar("C", bound=Config)


@dataclass(frozen=True)
class Command:
    """A CLI/API command: its config class and the function that runs it."""

    name: str
    config: type[Config]
    run: Callable[..., Any]
    help: str


COMMANDS: dict[str, Command] = {}


def _config(cls: type[C], config: C | None, options: dict[str, Any]) -> C:
    if config is None:
        return cls.from_dict(options)
    return config.replace(**options) if options else config


def _register(name: str, cls: type[Config], help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        COMMANDS[name] = Command(name=name, config=cls, run=fn, help=help)
        return fn

    return decorate


@_register("reconstruct", ReconstructConfig, "decode every hidden layer with the MLM head (paper 1)")
def reconstruct(config: ReconstructConfig | None = None, /, **options: Any) -> Any:
    """Per-layer reconstruction of the input tokens by the masked-LM head; returns a ReconstructResult."""
    from bertscope.lens import run_reconstruct

    return run_reconstruct(_config(ReconstructConfig, config, options))
