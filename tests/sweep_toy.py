"""Test-only commands for the sweep tests, loaded as a spec plugin (``plugins: [.../sweep_toy.py]``).

``toy`` computes a closed-form score from its options (so tests can check every stored metric independently),
optionally sleeps, fails, or reads a "model" file produced by the ``toy-make`` pre-step. Both write their own
files under ``out`` like real commands, and append to a shared log so tests can count executions.

``toy-make`` declares one option that never changes its product (``cached``, as ``cache_features`` for
``finetune``) in its ``not_identity``: the sweep tests use it for a command whose identity rule differs from the
default one (and for the migration of run ids written before commands declared their own).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertscope.core.config import Config, opt
from bertscope.core.errors import BertscopeError
from bertscope.core.registry import LOCATION_OPTIONS, CommandInfo
from bertscope.core.results import write_json_atomic


def toy_score(x: float, seed: int, offset: float = 0.0) -> float:
    """The closed form the tests check against."""
    return x * x + 0.01 * seed + offset


@dataclass(frozen=True)
class ToyConfig(Config):
    command = "toy"

    x: float = opt(1.0, "input")
    seed: int = opt(0, "seed")
    model: str | None = opt(None, "a toy-make output folder")
    sleep: float = opt(0.0, "seconds to sleep")
    fail: bool = opt(False, "raise a user error")
    crash: bool = opt(False, "raise a bug")
    log: str | None = opt(None, "append the run's options to this file (an absolute path: a relative one would land "
                                "in the working directory, i.e. the repository)")
    out: str | None = opt(None, "output folder")
    progress: bool = opt(True, "progress")

    def validate(self) -> None:
        if self.x < -100:
            raise BertscopeError(f"--x must be at least -100, got {self.x}")
        if self.log is not None and not Path(self.log).is_absolute():
            raise BertscopeError(f"--log must be an absolute path, got {self.log!r}")


@dataclass(frozen=True)
class ToyResult:
    config: ToyConfig
    score: float
    offset: float

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "score": self.score, "offset": self.offset,
                "records": [{"layer": i, "top1": self.score / (i + 1)} for i in range(3)]}

    def metrics(self) -> dict[str, float]:
        return {"score": self.score, "offset": self.offset}

    def render(self) -> str:
        return f"score {self.score}"


def run_toy(config: ToyConfig) -> ToyResult:
    if config.log:
        with open(config.log, "a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} x={config.x} seed={config.seed}\n")
    if config.sleep:
        time.sleep(config.sleep)
    if config.fail:
        raise BertscopeError(f"toy failure for x={config.x}")
    if config.crash:
        raise ZeroDivisionError("toy bug")
    offset = 0.0
    if config.model:
        offset = float((Path(config.model) / "offset.txt").read_text())
    result = ToyResult(config, toy_score(config.x, config.seed, offset), offset)
    if config.out:
        write_json_atomic(Path(config.out) / "result.json", result.to_dict())
    return result


@dataclass(frozen=True)
class ToyMakeConfig(Config):
    command = "toy-make"

    offset: float = opt(0.5, "the value the produced 'model' carries")
    cached: bool = opt(False, "write the product the quick way (the same product: not part of the run's identity)")
    out: str | None = opt(None, "output folder (required)")

    def validate(self) -> None:
        if self.out is None:
            raise BertscopeError("--out is required")


@dataclass(frozen=True)
class ToyMakeResult:
    config: ToyMakeConfig

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict()}

    def metrics(self) -> dict[str, float]:
        return {"offset": self.config.offset}

    def render(self) -> str:
        return "made"


def run_toy_make(config: ToyMakeConfig) -> ToyMakeResult:
    out = Path(config.out or "")
    if out.exists():
        raise BertscopeError(f"{out} exists")
    out.mkdir(parents=True)
    (out / "offset.txt").write_text(str(config.offset))
    return ToyMakeResult(config)


#: What the spec's plugin loader reads: the commands this plugin adds (nothing is registered at import time).
BERTSCOPE_COMMANDS = [
    CommandInfo("toy", ToyConfig, run_toy, ToyResult, "test-only toy command"),
    CommandInfo("toy-make", ToyMakeConfig, run_toy_make, ToyMakeResult, "test-only pre-step", model_subdir="",
                not_identity=LOCATION_OPTIONS | {"cached"}),
]
