"""Stores written before commands declared their own identity rule keep resuming: their runs are re-keyed once.

A run's id hashes the options its command says change its result (``CommandInfo.identity``). Before that, every
command left out the same six location options, so a command whose ``not_identity`` now holds more (``finetune``
and the studies leave out ``cache_features``), and any run reading such a run's product, has a new id. Each
:class:`~bertscope.sweep.spec.Run` also carries its id under the old rule (``legacy_id``); when the store holds
that one and not the new one, :func:`migrate_legacy_ids` renames the run folder ``<runs dir>/<legacy id>`` to
``<runs dir>/<id>`` and then re-keys the store record (:meth:`ResultStore.rekey`: record, payload, memberships
and other runs' references, in one transaction). Both steps are idempotent, in that order, so a sweep killed
between them finishes the job on its next start; once re-keyed, the new id is found and nothing happens again.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bertscope.core.errors import BertscopeError
from bertscope.sweep.spec import Run
from bertscope.sweep.store import ResultStore

__all__ = ["known_statuses", "migrate_legacy_ids"]


def migrate_legacy_ids(store: ResultStore, runs: Iterable[Run], runs_dir: Path) -> list[tuple[str, str]]:
    """Re-key every run the store holds only under its legacy id; returns the (legacy id, id) pairs moved.

    Call it with the store lock held and the runs in spec order (pre-steps first), before registering them."""
    moved: list[tuple[str, str]] = []
    for run in runs:
        legacy = run.legacy_id
        if not legacy or legacy == run.id:
            continue
        found = store.status_of([run.id, legacy])
        if run.id in found or legacy not in found:
            continue
        old_dir, new_dir = runs_dir / legacy, runs_dir / run.id
        _move_folder(old_dir, new_dir)
        store.rekey(legacy, run.id, identity=run.identity, depends_on=run.depends_on, old_dir=old_dir,
                    new_dir=new_dir)
        moved.append((legacy, run.id))
    return moved


def known_statuses(store: ResultStore, runs: Iterable[Run]) -> dict[str, str]:
    """Each run's status in the store by its id, read under its legacy id when it is not migrated yet (read-only:
    what a dry run shows)."""
    runs = list(runs)
    statuses = store.status_of(r.id for r in runs)
    legacy = store.status_of(r.legacy_id for r in runs if r.id not in statuses and r.legacy_id)
    for r in runs:
        if r.id not in statuses and r.legacy_id and r.legacy_id in legacy:
            statuses[r.id] = legacy[r.legacy_id]
    return statuses


def _move_folder(old: Path, new: Path) -> None:
    """``old`` -> ``new`` by one rename; nothing to do when ``old`` is gone (never written, or already moved)."""
    if not old.exists():
        return
    if new.exists():
        raise BertscopeError(f"cannot migrate run folder {old} to {new}: both exist; remove the one that is not "
                             "the run's output and run the sweep again")
    old.rename(new)
