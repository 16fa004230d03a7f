"""claims.md, claims.json and claims.html of a replication: the claims table, the rule, the assumptions, the runs.

The HTML page is the Markdown rendered by the report package's one Markdown dialect
(:func:`bertscope.report.render.to_html`), so a claims page looks like a report page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bertscope.core.results import write_json_atomic, write_text_atomic
from bertscope.core.stats import tolerance_label
from bertscope.replicate.claims import Claim
from bertscope.report.render import to_html

__all__ = ["claims_markdown", "claims_payload", "claims_table", "learned_cell", "seeds_cell", "write_claims"]

TABLE_HEADERS = ("claim", "scope", "measurement", "difference (mean ± std [95% CI] (n))", "kind", "tolerance",
                 "verdict", "seeds", "learned heads", "note")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def learned_cell(claim: Claim) -> str:
    """``12/12``: the claim's heads that learned, of all it rests on; empty when it rests on no trained head."""
    return "" if claim.heads is None else f"{claim.heads[0]}/{claim.heads[1]}"


def seeds_cell(claim: Claim) -> str:
    """``4``: the seeds the verdict read; ``4 of 8`` when more were run (for other claims of the same runs)."""
    run = len(claim.per_seed)
    return "" if not claim.seeds_used else (f"{claim.seeds_used} of {run}" if run > claim.seeds_used
                                            else str(claim.seeds_used))


def claims_table(claims: Sequence[Claim]) -> list[str]:
    """The Markdown table: one row per claim (per task / model / comparison where a claim has several)."""
    lines = ["| " + " | ".join(TABLE_HEADERS) + " |", "|" + "|".join("---" for _ in TABLE_HEADERS) + "|"]
    for c in claims:
        lines.append("| " + " | ".join(_cell(x) for x in (
            c.statement, c.scope, c.measurement, c.difference.format(3), c.kind,
            tolerance_label(c.kind, c.tolerance), f"**{c.verdict}**",
            seeds_cell(c), learned_cell(c), c.note)) + " |")
    return lines


_ADAPTIVE = ("Seeds were adaptive (`--seeds auto`): the seeds ran in rounds, and each claim was read at fixed looks "
             "(cumulative seed counts) with alpha 0.05 spent over them (power-family spending, Bonferroni over the "
             "looks: bertscope.core.sequential, docs/statistics.md), so stopping at the first decisive look keeps "
             "wrong decisions at or below 5%. The interval shown is the deciding look's (its level in claims.json); "
             "`seeds` is how many seeds that look read, of how many ran.")


def claims_markdown(title: str, claims: Sequence[Claim], *, command: str, assumptions: Sequence[str],
                    context: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    counts = {v: sum(1 for c in claims if c.verdict == v) for v in ("supported", "not supported", "inconclusive")}
    lines = [f"# {title}", "", f"Regenerate: `{command}`", "",
             ", ".join(f"{n} {v}" for v, n in counts.items()) + f" (of {len(claims)} rows).", "",
             *[line for text in header for line in (text, "")],
             *claims_table(claims), "",
             "## Verdict rule", "",
             "The difference is claimed side minus reference side (or the measured value minus a stated threshold), "
             "over seeds: mean ± sample std, 95% Student-t interval, n (bertscope.core.stats, docs/statistics.md). "
             "`better`: supported when the whole interval is > 0; `worse`: < 0; `no_worse` (an \"as good as\" "
             "claim): at or above minus the tolerance (doing better counts); `as_good`: inside ± the tolerance; "
             "the mirror cases are not supported, anything else (and one seed without a bootstrap) is inconclusive. "
             "A claim resting on any fine-tuning head that did not learn (`learned heads` below its total: training "
             "loss at the constant predictor's, or one predicted class) is inconclusive, and so is a comparison "
             "whose two sides both sit at the majority-class score: a head that learned nothing measured its "
             "optimiser, not its features.",
             *(["", _ADAPTIVE] if any("sequential" in c.details for c in claims) else []),
             "", "## Assumptions", "", "Neither paper's full text is available; every unknown detail is this choice:",
             "", *[f"- {a}" for a in assumptions], "", "## Runs", ""]
    lines += [f"- {k}: {v}" for k, v in context.items()]
    return "\n".join(lines).rstrip() + "\n"


def claims_payload(claims: Sequence[Claim], *, context: Mapping[str, Any], assumptions: Sequence[str],
                   runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """claims.json: every claim with its interval and verdict, the context, the assumptions and each run's effective
    options (from the store's run records: whatever the commands' defaults were when they ran)."""
    return {"format": "bertscope-claims/1", **dict(context), "assumptions": list(assumptions),
            "claims": [c.to_dict() for c in claims], "runs": list(runs)}


def write_claims(out: Path, title: str, markdown: str, payload: Mapping[str, Any]) -> dict[str, str]:
    """Write claims.md, claims.json and claims.html into ``out`` (each atomically); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out / "claims.md", "json": out / "claims.json", "html": out / "claims.html"}
    write_text_atomic(files["markdown"], markdown)
    write_json_atomic(files["json"], payload)
    write_text_atomic(files["html"], to_html(title, markdown, out))
    return {k: str(v) for k, v in files.items()}
