"""The analysis commands, collected from their modules: the registry a sweep runs from.

Each command declares its :class:`bertscope.core.registry.CommandInfo` once, at the bottom of its own module
(``COMMAND = ...``); this module only lists them. :mod:`bertscope.api` adds ``sweep``, ``status`` and ``report``.
"""

from __future__ import annotations

from bertscope.core.registry import Registry
from bertscope.finetune import command as finetune
from bertscope.finetune import predict
from bertscope.lens import reconstruct
from bertscope.studies import cross, dims, layers, tokens
from bertscope.surgery import compare, layer_scan
from bertscope.surgery import deepen as surgery

__all__ = ["ANALYSES"]

#: Every command a sweep (or a spec's pre-step) may run, in CLI order.
ANALYSES: Registry = Registry.of([
    reconstruct.COMMAND,
    surgery.COMMAND,
    compare.COMMAND,
    layer_scan.COMMAND,
    finetune.COMMAND,
    predict.COMMAND,
    dims.COMMAND,
    layers.COMMAND,
    tokens.COMMAND,
    cross.COMMAND,
])
