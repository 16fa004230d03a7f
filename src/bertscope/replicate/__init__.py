"""``bertscope replicate paper1|paper2``: each paper's protocol as data, run through the sweep machinery, turned
into a claims table (measurement, 95% interval over seeds, verdict, assumptions).

``protocols`` (the protocols per budget), ``claims`` (pure functions from finished runs to claim rows),
``render`` (claims.md, claims.json, claims.html) and ``runner`` (the command).
"""

from __future__ import annotations

from bertscope.replicate.claims import Claim, RunRow, claims_for
from bertscope.replicate.protocols import BUDGETS, PAPERS, Protocol, protocol
from bertscope.replicate.runner import COMMAND, ReplicateResult, run_replicate

__all__ = ["BUDGETS", "COMMAND", "PAPERS", "Claim", "Protocol", "ReplicateResult", "RunRow", "claims_for", "protocol",
           "run_replicate"]
