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
from bertscope.configs import (
    CompareConfig,
    CrossConfig,
    DeepenConfig,
    DimsConfig,
    FinetuneConfig,
    LayerScanConfig,
    LayersConfig,
    ReconstructConfig,
    ReportConfig,
    StatusConfig,
    SweepConfig,
    TokensConfig,
)

__all__ = ["COMMANDS", "Command", "compare", "deepen", "finetune", "layer_scan", "reconstruct", "report", "status", "sweep"]
__all__ += ["cross", "dims", "layers", "tokens"]

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
    from bertscope.reconstruct import run_reconstruct

    return run_reconstruct(_config(ReconstructConfig, config, options))


@_register("deepen", DeepenConfig, "deepen or shrink an encoder by copying/removing layers; saves a verified HF folder")
def deepen(config: DeepenConfig | None = None, /, **options: Any) -> Any:
    """Apply a layer map (from --duplicate, --remove or --layer-map) and save the new model; returns a DeepenResult."""
    from bertscope.surgery import run_deepen

    return run_deepen(_config(DeepenConfig, config, options))


@_register("compare", CompareConfig, "agreement of an original and a variant model on real text (top-1, KL, cosine)")
def compare(config: CompareConfig | None = None, /, **options: Any) -> Any:
    """Top-1 agreement, KL, cosine and both reconstruction curves of --model vs --variant; returns a CompareResult."""
    from bertscope.compare import run_compare

    return run_compare(_config(CompareConfig, config, options))


@_register("layer-scan", LayerScanConfig, "measure every single-layer duplicate/remove variant in memory")
def layer_scan(config: LayerScanConfig | None = None, /, **options: Any) -> Any:
    """Agreement with the original of each one-layer-duplicated (or removed) variant; returns a LayerScanResult."""
    from bertscope.compare import run_layer_scan

    return run_layer_scan(_config(LayerScanConfig, config, options))


@_register("sweep", SweepConfig, "run an experiment spec (YAML grid) into a resumable result store, locally or on Ray")
def sweep(config: SweepConfig | None = None, /, **options: Any) -> Any:
    """Run every not-yet-done run of a spec and commit each result to the store; returns a SweepResult."""
    from bertscope.sweep import run_sweep

    return run_sweep(_config(SweepConfig, config, options))


@_register("status", StatusConfig, "counts by status, slowest and failed runs of a sweep result store")
def status(config: StatusConfig | None = None, /, **options: Any) -> Any:
    """Summarise a result store (read-only); returns a StatusResult."""
    from bertscope.sweep import sweep_status

    return sweep_status(_config(StatusConfig, config, options))


@_register("report", ReportConfig, "Markdown + HTML report with plots and mean +/- std tables from a result store")
def report(config: ReportConfig | None = None, /, **options: Any) -> Any:
    """Build report.md, report.html (self-contained), PNG plots and CSV tables; returns a ReportResult."""
    from bertscope.report import build_report

    return build_report(_config(ReportConfig, config, options))


@_register("finetune", FinetuneConfig, "GLUE fine-tuning with a head reading a chosen token, layer and dimensions "
                                       "(paper 2)")
def finetune(config: FinetuneConfig | None = None, /, **options: Any) -> Any:
    """Fine-tune on a GLUE task with a representation-selecting head; returns a FinetuneResult."""
    from bertscope.finetune import run_finetune

    return run_finetune(_config(FinetuneConfig, config, options))


@_register("dims", DimsConfig, "paper 2 study: score vs number of hidden dimensions (random control, ranked), or "
                               "--find-effective")
def dims(config: DimsConfig | None = None, /, **options: Any) -> Any:
    """Score vs K dimensions (or the effective-dimension search); writes dims.json/.csv/.png; returns a StudyResult."""
    from bertscope.studies import run_dims

    return run_dims(_config(DimsConfig, config, options))


@_register("layers", LayersConfig, "paper 2 study: the same head read from every hidden layer")
def layers(config: LayersConfig | None = None, /, **options: Any) -> Any:
    """Score per hidden layer 0..L; writes layers.json/.csv/.png; returns a StudyResult."""
    from bertscope.studies import run_layers

    return run_layers(_config(LayersConfig, config, options))


@_register("tokens", TokensConfig, "paper 2 study: CLS vs max-norm vs mean vs max vs fixed token positions")
def tokens(config: TokensConfig | None = None, /, **options: Any) -> Any:
    """Score per token strategy; writes tokens.json/.csv/.png; returns a StudyResult."""
    from bertscope.studies import run_tokens

    return run_tokens(_config(TokensConfig, config, options))


@_register("cross", CrossConfig, "paper 2 study: cross-fine-tuning over a task sequence (stage x task matrix)")
def cross(config: CrossConfig | None = None, /, **options: Any) -> Any:
    """Sequential fine-tuning with per-task heads and dims; writes cross.json/.csv/.png; returns a StudyResult."""
    from bertscope.studies import run_cross

    return run_cross(_config(CrossConfig, config, options))
