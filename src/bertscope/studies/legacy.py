"""What bertscope 0.1.0 result stores and study folders look like, so that they keep resuming.

Run ids (sweeps) and run hashes (studies, cross stages) are hashes of a run's identity: its options minus those that
never change results. 0.1.0 computed them over *its* option names with *its* lists of result-neutral options; this
module freezes both, so a run's 0.1.0 id can be recomputed and a stored record found and re-keyed once
(:mod:`bertscope.sweep.migrate`, :class:`bertscope.studies.common.RunStore`, ``studies.cross``). Options added since
are left out of a legacy identity (a run that sets one to a non-default value cannot have existed in 0.1.0, and its
legacy id then matches nothing). Never edit these tables; add the next version's beside them if one is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CHANGED_SINCE_0_1", "CROSS_STAGE_SKIP_0_1", "FIELDS_0_1", "STUDY_NOT_HASHED_0_1", "SWEEP_NON_IDENTITY_0_1", "legacy_values"]

#: sweep/spec.py's NON_IDENTITY_OPTIONS in 0.1.0.
SWEEP_NON_IDENTITY_0_1 = frozenset({"out", "progress", "data_dir", "cache_dir", "head_cache", "overwrite"})

#: What a study's run hash (studies/common.py ``config_hash``) left out in 0.1.0.
STUDY_NOT_HASHED_0_1 = frozenset({"out", "progress", "overwrite", "device", "cache_features", "cache_dir",
                                  "save_model"})

#: What cross's stage hash left out in 0.1.0.
CROSS_STAGE_SKIP_0_1 = frozenset({"out", "progress", "overwrite", "device", "cache_features", "cache_dir",
                                  "save_model", "single_task", "keep_checkpoint", "tasks"})

#: Every command's option names in 0.1.0 (its config dataclass's fields).
FIELDS_0_1: dict[str, frozenset[str]] = {
    "reconstruct": frozenset({
        "model", "device", "dtype", "seed", "batch_size", "max_length", "out", "progress", "texts",
        "task", "split", "data_dir", "max_examples", "fit_corpus", "fit_steps", "fit_lr",
        "fit_batch_size", "fit_mask_prob", "fit_tie", "head_cache", "refit", "head", "head_part",
        "include_special", "mask_prob", "layers", "examples"}),
    "deepen": frozenset({
        "model", "out", "duplicate", "copies", "placement", "remove", "layer_map", "overwrite",
        "verify", "device", "seed"}),
    "compare": frozenset({
        "model", "device", "dtype", "seed", "batch_size", "max_length", "out", "progress", "texts",
        "task", "split", "data_dir", "max_examples", "fit_corpus", "fit_steps", "fit_lr",
        "fit_batch_size", "fit_mask_prob", "fit_tie", "head_cache", "refit", "variant", "head",
        "include_special", "curves"}),
    "layer-scan": frozenset({
        "model", "device", "dtype", "seed", "batch_size", "max_length", "out", "progress", "texts",
        "task", "split", "data_dir", "max_examples", "fit_corpus", "fit_steps", "fit_lr",
        "fit_batch_size", "fit_mask_prob", "fit_tie", "head_cache", "refit", "op", "layers", "head",
        "include_special", "variants_per_pass"}),
    "finetune": frozenset({
        "model", "device", "dtype", "seed", "batch_size", "max_length", "out", "progress", "task",
        "data_dir", "max_train", "max_eval", "eval_split", "bad_rows", "epochs", "lr", "head_lr",
        "weight_decay", "warmup_ratio", "grad_clip", "token", "include_special", "layer", "dims",
        "head", "head_hidden", "dropout", "pooler", "freeze", "group_by_length", "eval_batch_size",
        "save_model", "overwrite", "cache_features", "cache_dir"}),
    "dims": frozenset({
        "model", "device", "dtype", "seed", "batch_size", "max_length", "out", "progress", "task",
        "data_dir", "max_train", "max_eval", "eval_split", "bad_rows", "epochs", "lr", "head_lr",
        "weight_decay", "warmup_ratio", "grad_clip", "token", "include_special", "layer", "dims",
        "head", "head_hidden", "dropout", "pooler", "freeze", "group_by_length", "eval_batch_size",
        "save_model", "overwrite", "cache_features", "cache_dir", "k", "samples", "rank_by",
        "find_effective", "start", "start_subsets", "hurt_threshold", "max_pairs"}),
    "layers": frozenset({
        "model", "device", "dtype", "seed", "batch_size", "max_length", "out", "progress", "task",
        "data_dir", "max_train", "max_eval", "eval_split", "bad_rows", "epochs", "lr", "head_lr",
        "weight_decay", "warmup_ratio", "grad_clip", "token", "include_special", "layer", "dims",
        "head", "head_hidden", "dropout", "pooler", "freeze", "group_by_length", "eval_batch_size",
        "save_model", "overwrite", "cache_features", "cache_dir", "layers"}),
    "tokens": frozenset({
        "model", "device", "dtype", "seed", "batch_size", "max_length", "out", "progress", "task",
        "data_dir", "max_train", "max_eval", "eval_split", "bad_rows", "epochs", "lr", "head_lr",
        "weight_decay", "warmup_ratio", "grad_clip", "token", "include_special", "layer", "dims",
        "head", "head_hidden", "dropout", "pooler", "freeze", "group_by_length", "eval_batch_size",
        "save_model", "overwrite", "cache_features", "cache_dir", "tokens"}),
    "cross": frozenset({
        "model", "device", "dtype", "seed", "batch_size", "max_length", "out", "progress", "task",
        "data_dir", "max_train", "max_eval", "eval_split", "bad_rows", "epochs", "lr", "head_lr",
        "weight_decay", "warmup_ratio", "grad_clip", "token", "include_special", "layer", "dims",
        "head", "head_hidden", "dropout", "pooler", "freeze", "group_by_length", "eval_batch_size",
        "save_model", "overwrite", "cache_features", "cache_dir", "tasks", "dims_per_task", "dims_mode",
        "earlier_heads", "single_task", "keep_checkpoint"}),
}


#: Result-changing options added since 0.1.0 that a config's ``identity_values`` leaves out while they keep 0.1.0's
#: behaviour: present in the values they describe a run 0.1.0 could not make, so they stay in (and match nothing).
CHANGED_SINCE_0_1 = frozenset({"feature_norm"})


def _changed_since_0_1(values: Mapping[str, Any]) -> list[str]:
    """Options added since 0.1.0 whose value changes results from what 0.1.0 did (``--fit`` other than sgd: a
    converged probe), so the run cannot have been stored by 0.1.0."""
    from bertscope.finetune.options import fit_is_sgd

    return ["fit"] if "fit" in values and not fit_is_sgd(values) else []


def legacy_values(command: str, values: Mapping[str, Any], skip: frozenset[str]) -> dict[str, Any]:
    """``values`` as 0.1.0 hashed them for ``command``: its 0.1.0 options only, minus ``skip``, in the given order
    (plus any of :data:`CHANGED_SINCE_0_1` still present, so such a run matches no 0.1.0 one).

    A run that sets an option added since to a result-changing value gets a marker, so its legacy id matches no
    record 0.1.0 stored (a frozen study's probe run never resumes from a 0.1.0 sgd run)."""
    known = FIELDS_0_1.get(command)
    out = {k: v for k, v in values.items()
           if k not in skip and (known is None or k in known or k in CHANGED_SINCE_0_1)}
    changed = _changed_since_0_1(values)
    if changed:
        out["@not-0.1"] = changed
    return out
