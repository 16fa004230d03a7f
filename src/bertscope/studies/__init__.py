"""Paper 2's studies, each one command writing a JSON with every run, a CSV table and a PNG plot (resumable).

* :func:`run_dims` -- score vs number of hidden dimensions (random subsets as control, ranked choices), and the
  effective-dimension search (``--find-effective``);
* :func:`run_layers` -- one head configuration read from every hidden layer;
* :func:`run_tokens` -- CLS vs max-norm vs mean vs max vs fixed positions;
* :func:`run_cross` -- cross-fine-tuning over a sequence of tasks (stage x task matrix).

With a fully frozen encoder the runs share one encoder pass through the feature cache (:mod:`bertscope.finetune.features`).
``layers`` and ``tokens`` are each a declaration of their axis, run by the one function
:func:`bertscope.studies.axis.run_axis`; every study declares its report section beside its command
(``CommandInfo(report=...)``).
"""

from __future__ import annotations

from bertscope.studies.common import StudyResult
from bertscope.studies.cross import run_cross
from bertscope.studies.dims import run_dims
from bertscope.studies.layers import run_layers
from bertscope.studies.tokens import run_tokens

__all__ = ["StudyResult", "run_cross", "run_dims", "run_layers", "run_tokens"]
