"""``bertscope replicate paper1|paper2``: each paper's protocol as data, run through the sweep machinery, turned
into a claims table (measurement, 95% interval over seeds, verdict, assumptions).

``protocols`` (the protocols per budget), ``claims`` (pure functions from finished runs to claim rows),
``claims_files`` (claims.md, claims.json, claims.html), ``runner`` (the command, adaptive seeds in rounds),
``cost`` (FLOPs, the GPU-hours estimate, compute fractions) and ``power`` (the power study that sizes budgets).
"""

from __future__ import annotations

from bertscope.replicate.claims import Claim, RunRow, claims_for
from bertscope.replicate.power import COMMAND as POWER_COMMAND
from bertscope.replicate.power import PowerResult, run_power
from bertscope.replicate.protocols import BUDGETS, PAPERS, Protocol, protocol
from bertscope.replicate.runner import COMMAND, ReplicateResult, run_replicate

__all__ = ["BUDGETS", "COMMAND", "PAPERS", "POWER_COMMAND", "Claim", "PowerResult", "Protocol", "ReplicateResult",
           "RunRow", "claims_for", "protocol", "run_power", "run_replicate"]
