"""The Python API: one function per command, each taking its config (or the same options as keywords).

    >>> from bertscope import api
    >>> result = api.reconstruct(model="bert-base-uncased", task="sst2", max_examples=200)
    >>> config = api.FinetuneConfig(task="rte", epochs=1)
    >>> api.finetune(config).final_score

Each function returns its command's immutable result object and, when ``out`` is set, writes its files there. The
commands themselves are declared next to their code (``COMMAND = CommandInfo(...)``); :data:`COMMANDS` is the one
registry the CLI reads: the analyses of :mod:`bertscope.sweep.commands` plus ``sweep``, ``status``, ``report`` and
``replicate``.

Keywords are typed: ``**options`` of :func:`finetune` is ``Unpack[FinetuneOptions]`` (:mod:`bertscope.api_types`,
generated from the configs), so mypy reports ``api.finetune(task="rte", epochs="one")`` and an enumerated option
given a value outside its choices.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TypeVar

from bertscope import replicate as _replicate
from bertscope import report as _report
from bertscope import sweep as _sweep
from bertscope.api_types import (
    CompareOptions,
    CrossOptions,
    DeepenOptions,
    DimsOptions,
    FinetuneOptions,
    LayerScanOptions,
    LayersOptions,
    PowerOptions,
    PredictOptions,
    ReconstructOptions,
    ReplicateOptions,
    ReportOptions,
    StatusOptions,
    SweepOptions,
    TokensOptions,
)
from bertscope.core.config import Config
from bertscope.core.errors import BertscopeError
from bertscope.core.precision import warn_if_emulated
from bertscope.core.registry import CommandInfo, Registry
from bertscope.finetune.command import COMMAND as FINETUNE_COMMAND
from bertscope.finetune.command import run_command, run_finetune
from bertscope.finetune.config import FinetuneConfig, PredictConfig
from bertscope.finetune.predict import PredictResult, run_predict
from bertscope.finetune.result import FinetuneResult
from bertscope.finetune.seeds import SeedsResult, run_finetune_seeds
from bertscope.lens.config import ReconstructConfig
from bertscope.lens.reconstruct import ReconstructResult, run_reconstruct
from bertscope.replicate import PowerResult, ReplicateResult, run_power, run_replicate
from bertscope.replicate.config import PowerConfig, ReplicateConfig
from bertscope.report import ReportResult, build_report
from bertscope.report.config import ReportConfig
from bertscope.studies import StudyResult, run_cross, run_dims, run_layers, run_tokens
from bertscope.studies.config import CrossConfig, DimsConfig, LayersConfig, TokensConfig
from bertscope.surgery.compare import CompareResult, run_compare
from bertscope.surgery.config import CompareConfig, DeepenConfig, LayerScanConfig
from bertscope.surgery.deepen import DeepenResult, run_deepen
from bertscope.surgery.layer_scan import LayerScanResult, run_layer_scan
from bertscope.sweep import StatusResult, SweepResult, run_sweep, sweep_status
from bertscope.sweep.commands import ANALYSES
from bertscope.sweep.config import StatusConfig, SweepConfig

if sys.version_info >= (3, 11):  # imported at run time too: typing.get_type_hints(api.finetune) resolves it
    from typing import Unpack
else:
    from typing_extensions import Unpack

__all__ = [
    "COMMANDS",
    "CommandInfo",
    "CompareConfig",
    "CompareOptions",
    "CompareResult",
    "CrossConfig",
    "CrossOptions",
    "DeepenConfig",
    "DeepenOptions",
    "DeepenResult",
    "DimsConfig",
    "DimsOptions",
    "FinetuneConfig",
    "FinetuneOptions",
    "FinetuneResult",
    "LayerScanConfig",
    "LayerScanOptions",
    "LayerScanResult",
    "LayersConfig",
    "LayersOptions",
    "PowerConfig",
    "PowerOptions",
    "PowerResult",
    "PredictConfig",
    "PredictOptions",
    "PredictResult",
    "ReconstructConfig",
    "ReconstructOptions",
    "ReconstructResult",
    "ReplicateConfig",
    "ReplicateOptions",
    "ReplicateResult",
    "ReportConfig",
    "ReportOptions",
    "ReportResult",
    "SeedsResult",
    "StatusConfig",
    "StatusOptions",
    "StatusResult",
    "StudyResult",
    "SweepConfig",
    "SweepOptions",
    "SweepResult",
    "TokensConfig",
    "TokensOptions",
    "compare",
    "cross",
    "deepen",
    "dims",
    "finetune",
    "finetune_seeds",
    "layer_scan",
    "layers",
    "power",
    "predict",
    "reconstruct",
    "replicate",
    "report",
    "status",
    "sweep",
    "tokens",
]

C = TypeVar("C", bound=Config)

#: Every command of the CLI and the API, in CLI order.
COMMANDS: Registry = ANALYSES.with_commands([_sweep.COMMAND, _sweep.STATUS_COMMAND, _report.COMMAND,
                                                  _replicate.COMMAND, _replicate.POWER_COMMAND])


def _config(cls: type[C], config: C | None, options: Mapping[str, Any]) -> C:
    """The config of one call: ``config`` (or the defaults) with ``options`` on top, checked like keywords."""
    made = cls.from_dict(options) if config is None else (config.replace(**options) if options else config)
    warn_if_emulated(made)
    return made


def reconstruct(config: ReconstructConfig | None = None, /, **options: Unpack[ReconstructOptions]) -> ReconstructResult:
    """Per-layer reconstruction of the input tokens by the masked-LM head."""
    return run_reconstruct(_config(ReconstructConfig, config, options))


def deepen(config: DeepenConfig | None = None, /, **options: Unpack[DeepenOptions]) -> DeepenResult:
    """Apply a layer map (from ``duplicate``, ``remove`` or ``layer_map``) and save the new model."""
    return run_deepen(_config(DeepenConfig, config, options))


def compare(config: CompareConfig | None = None, /, **options: Unpack[CompareOptions]) -> CompareResult:
    """Top-1 agreement, KL, cosine and both reconstruction curves of ``model`` vs ``variant``."""
    return run_compare(_config(CompareConfig, config, options))


def layer_scan(config: LayerScanConfig | None = None, /, **options: Unpack[LayerScanOptions]) -> LayerScanResult:
    """Agreement with the original of each one-layer-duplicated (or removed) variant."""
    return run_layer_scan(_config(LayerScanConfig, config, options))


def sweep(config: SweepConfig | None = None, /, **options: Unpack[SweepOptions]) -> SweepResult:
    """Run every not-yet-done run of a spec and commit each result to the store."""
    return run_sweep(_config(SweepConfig, config, options))


def status(config: StatusConfig | None = None, /, **options: Unpack[StatusOptions]) -> StatusResult:
    """Summarise a result store (read-only)."""
    return sweep_status(_config(StatusConfig, config, options))


def report(config: ReportConfig | None = None, /, **options: Unpack[ReportOptions]) -> ReportResult:
    """Build report.md, report.html (self-contained), plots and tables from a result store."""
    return build_report(_config(ReportConfig, config, options))


def replicate(config: ReplicateConfig | None = None, /, **options: Unpack[ReplicateOptions]) -> ReplicateResult:
    """Run a paper's protocol (``paper="paper1"|"paper2"``, ``budget=...``) into a resumable store and write its
    claims table (claims.md, claims.json, claims.html) to ``out``."""
    return run_replicate(_config(ReplicateConfig, config, options))


def power(config: PowerConfig | None = None, /, **options: Unpack[PowerOptions]) -> PowerResult:
    """The power study of ``paper="paper2"``: the noise of each claim's paired difference per setting and the seeds
    it needs, written to ``out`` (power.md, power.json)."""
    return run_power(_config(PowerConfig, config, options))


def finetune(config: FinetuneConfig | None = None, /, **options: Unpack[FinetuneOptions]) -> FinetuneResult:
    """Fine-tune on a GLUE task with a representation-selecting head (several seeds: :func:`finetune_seeds`)."""
    config = _config(FinetuneConfig, config, options)
    if config.seeds is not None:
        raise BertscopeError("several seeds make several runs: use bertscope.api.finetune_seeds")
    result: FinetuneResult = run_command(config)  # the command's runner (one run without seeds)
    return result


def finetune_seeds(config: FinetuneConfig | None = None, /, **options: Unpack[FinetuneOptions]) -> SeedsResult:
    """``finetune --seeds``: one fine-tuning run per seed of ``seeds`` and each metric's interval over them."""
    return run_finetune_seeds(_config(FinetuneConfig, config, options), run_finetune, FINETUNE_COMMAND)


def predict(config: PredictConfig | None = None, /, **options: Unpack[PredictOptions]) -> PredictResult:
    """Predictions (label names, probabilities) of a model saved by ``finetune --save-model``, with the official
    metrics where the examples have labels."""
    return run_predict(_config(PredictConfig, config, options))


def dims(config: DimsConfig | None = None, /, **options: Unpack[DimsOptions]) -> StudyResult:
    """Score vs K dimensions (or the effective-dimension search)."""
    return run_dims(_config(DimsConfig, config, options))


def layers(config: LayersConfig | None = None, /, **options: Unpack[LayersOptions]) -> StudyResult:
    """Score per hidden layer 0..L."""
    return run_layers(_config(LayersConfig, config, options))


def tokens(config: TokensConfig | None = None, /, **options: Unpack[TokensOptions]) -> StudyResult:
    """Score per token strategy."""
    return run_tokens(_config(TokensConfig, config, options))


def cross(config: CrossConfig | None = None, /, **options: Unpack[CrossOptions]) -> StudyResult:
    """Sequential fine-tuning with per-task heads and dims (stage x task matrix)."""
    return run_cross(_config(CrossConfig, config, options))
