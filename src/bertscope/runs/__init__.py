"""A run's identity and the one result store.

:mod:`.identity` says which options of a command decide a run's numbers and names the run by them
(``<command>-<12 hex>``); :mod:`.store` keeps finished work in one SQLite file. Sweeps, studies (and their cross
stages) and ``finetune --seeds`` all name their runs with :func:`~bertscope.runs.identity.run_id` and keep them in a
:class:`~bertscope.runs.store.ResultStore`, so resuming, ``--retry-failed``, ``bertscope status`` and
``bertscope report`` work the same on each.
"""

from __future__ import annotations

__all__: list[str] = []
