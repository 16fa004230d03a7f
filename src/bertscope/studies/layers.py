"""``bertscope layers``: the same head configuration read from each hidden layer 0..L in turn (paper 2).

Every run differs from the others only in ``--layer``; dimensions given as ``random:K`` are drawn once from
``--seed`` and so are the same at every layer. With ``--freeze encoder`` (and the default ``--cache-features``) the
encoder runs once for the whole scan and every layer's head trains on cached vectors. The claim each layer is
checked against: as good as the last one (and whether it is worse). The study is its axis, run by
:func:`~bertscope.studies.axis.run_axis`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bertscope.core.options import parse_hidden_states
from bertscope.core.registry import CommandInfo
from bertscope.finetune.command import NOT_IDENTITY
from bertscope.studies.axis import Axis, run_axis
from bertscope.studies.common import StudyResult, model_shape
from bertscope.studies.config import LayersConfig

__all__ = ["LAYERS", "run_layers"]


def _layers(config: LayersConfig) -> list[Any]:
    depth, _ = model_shape(config)
    return list(parse_hidden_states(config.layers, depth, option="--layers", default_all=True))


def _canonical(config: LayersConfig, layer: Any) -> str:
    """The last hidden state as ``-1``, finetune's default: the layers study's last-layer run is then the same run
    (one identity) as the tokens study's and the dims study's reference, and a sibling's finished one is reused."""
    depth, _ = model_shape(config)
    return "-1" if layer == depth else str(layer)


def _context(config: LayersConfig, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    depth, hidden = model_shape(config)
    return {"num_layers": depth, "hidden_size": hidden, "dims": records[0]["dims"], "token": config.selection.token}


#: The hidden layer the head reads, 0 (embeddings) .. L; every layer is compared with the last.
LAYERS = Axis(
    study="layers", option="layer", column="layer", word="layer", values=_layers,
    reference=lambda layers: layers[-1], versus="vs_last", also_worse=True,
    tokens=lambda config, layers: [config.selection.token],
    fixed=lambda config: f"token {config.selection.token}, dims {config.selection.dims}", context=_context,
    plot="line", what="score per layer", xlabel="hidden layer read (0 = embeddings)", label="head on this layer",
    note="layer", heading="score by layer", noun="layer", stem="layers", canonical=_canonical)


def run_layers(config: LayersConfig) -> StudyResult:
    return run_axis(LAYERS, config)


COMMAND = CommandInfo("layers", LayersConfig, run_layers, StudyResult,
                      "paper 2 study: the same head read from every hidden layer",
                      resumes_in_out=True, report=LAYERS.section(), not_identity=NOT_IDENTITY)
