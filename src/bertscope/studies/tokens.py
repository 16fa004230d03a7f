"""``bertscope tokens``: the same head configuration reading different token vectors (paper 2).

Strategies: ``cls`` (position 0), ``max-norm`` (the token with the largest L2 norm), ``mean`` and ``max``
(element-wise) over the tokens, and fixed positions ``index:K`` (negative from the end: ``index:-1`` is [SEP]); see
:func:`bertscope.finetune.selection.select_tokens` for the details (special tokens excluded from pooling unless
``--include-special``). Everything else is the same for every run. The claim each strategy is checked against: as
good as [CLS] (when ``cls`` is among them). The study is its axis, run by :func:`~bertscope.studies.axis.run_axis`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bertscope.core.options import parse_token_list
from bertscope.core.registry import CommandInfo
from bertscope.finetune.command import NOT_IDENTITY
from bertscope.studies.axis import Axis, run_axis
from bertscope.studies.common import StudyResult
from bertscope.studies.config import TokensConfig

__all__ = ["TOKENS", "run_tokens"]


def _context(config: TokensConfig, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"layer": config.selection.layer, "dims": records[0]["dims"]}


#: The token vector the head reads; every strategy is compared with [CLS].
TOKENS = Axis(
    study="tokens", option="token", column="token_strategy", word="token",
    values=lambda config: list(parse_token_list(config.tokens, option="--tokens")),
    reference=lambda tokens: "cls" if "cls" in tokens else None, versus="vs_cls",
    tokens=lambda config, tokens: list(tokens),
    fixed=lambda config: f"layer {config.selection.layer}, dims {config.selection.dims}", context=_context,
    plot="bars", what="token strategies", xlabel="token vector the head reads", label="head on this token vector",
    note="token", heading="token choice", text="Which token vector the head reads (e.g. `cls`, `mean`, `max-norm`).",
    stem="token")


def run_tokens(config: TokensConfig) -> StudyResult:
    return run_axis(TOKENS, config)


COMMAND = CommandInfo("tokens", TokensConfig, run_tokens, StudyResult,
                      "paper 2 study: CLS vs max-norm vs mean vs max vs fixed token positions",
                      resumes_in_out=True, report=TOKENS.section(), not_identity=NOT_IDENTITY)
