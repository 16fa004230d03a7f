"""One run identity: a sweep's run, a study's run, a cross stage and a seed of ``finetune --seeds`` with the same
options have the same id, computed by one function (bertscope.runs.identity)."""

from __future__ import annotations

import hashlib

from bertscope.core.registry import LOCATION_OPTIONS, CommandInfo
from bertscope.finetune.command import COMMAND as FINETUNE
from bertscope.finetune.config import FinetuneConfig
from bertscope.finetune.seeds import _seed_config, _stored_run
from bertscope.runs.identity import canonical_json, run_id, run_identity
from bertscope.studies import common, cross
from bertscope.studies.config import CrossConfig, LayersConfig
from bertscope.studies.store import finetune_identity, finetune_run_id
from bertscope.sweep.spec import parse_spec

OPTIONS = {"task": "rte", "max_train": 64, "epochs": 1, "dims": "random:2", "seed": 3}


def test_the_id_is_a_hash_of_the_command_and_the_canonical_identity():
    identity = {"b": [1, 2.5], "a": "x"}
    digest = hashlib.sha256(b'toy\n{"a":"x","b":[1,2.5]}').hexdigest()[:12]
    assert canonical_json(identity) == '{"a":"x","b":[1,2.5]}' and run_id("toy", identity) == f"toy-{digest}"
    assert run_id("toy", {"a": "x", "b": (1, 2.5)}) == run_id("toy", identity)  # plain JSON: tuples are lists
    assert run_id("other", identity) != run_id("toy", identity)


def test_identity_leaves_out_what_the_command_declares():
    info = CommandInfo("finetune", FinetuneConfig, lambda c: c, object, "x",
                       not_identity=LOCATION_OPTIONS | {"epochs"})
    values = FinetuneConfig(**OPTIONS, out="somewhere").to_dict()
    identity = run_identity(info, values)
    assert "epochs" not in identity and "out" not in identity and identity["max_train"] == 64
    assert "seeds" not in identity  # at its neutral value (registry.NEUTRAL_VALUES)
    assert run_identity(FINETUNE, values)["epochs"] == 1


def test_a_sweep_run_a_study_run_and_a_seed_with_the_same_options_share_one_id(tmp_path):
    sweep_run = parse_spec({"command": "finetune", "base": OPTIONS}, runs_dir=tmp_path).runs[0]
    study = LayersConfig(**{k: v for k, v in OPTIONS.items()}, layers="4", out=str(tmp_path / "study"))
    study_run = common.finetune_config(study, layer="-1")  # one run of a layers study
    seeds = FinetuneConfig(**{k: v for k, v in OPTIONS.items() if k != "seed"}, seeds="3,4", out=str(tmp_path / "s"))
    seed_run = _stored_run(FINETUNE, _seed_config(seeds, 3))
    assert sweep_run.id == finetune_run_id(study_run) == seed_run.id
    assert sweep_run.identity == finetune_identity(study_run) == seed_run.identity
    assert _stored_run(FINETUNE, _seed_config(seeds, 4)).id != seed_run.id  # the seed is part of it


def test_a_cross_stage_is_named_by_the_options_and_the_tasks_so_far():
    config = CrossConfig(tasks="rte,mrpc,sst2", epochs=1)
    stages = [cross._stage_id(config, s) for s in (1, 2, 3)]
    assert len(set(stages)) == 3 and all(s.startswith("cross-") for s in stages)
    assert cross._stage_id(CrossConfig(tasks="rte,mrpc", epochs=1), 2) == stages[1]  # later tasks do not matter
    assert cross._stage_id(config.replace(out="elsewhere", single_task=False), 1) == stages[0]
    assert cross._stage_id(config.replace(epochs=2), 1) != stages[0]
