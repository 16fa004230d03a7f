"""Data-parallel fine-tuning as one run: two CPU processes under torchrun (gloo), end to end.

The end-to-end runs start ``python -m torch.distributed.run --nproc_per_node 2 --standalone -m bertscope finetune``
in a subprocess with a timeout, so a deadlock (e.g. in evaluation, where a process may have no dev batch) fails the
test instead of hanging it. Their numbers are checked against single-process references computed here: the saved
weights evaluated by one process, and a single-process run with the same global batch.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bertscope.cli import main
from bertscope.core.errors import BertscopeError
from bertscope.data import glue
from bertscope.finetune import distributed as dp
from bertscope.finetune.batching import encode_split, length_grouped_batches
from bertscope.finetune.command import load_finetuned, run_finetune
from bertscope.finetune.config import FinetuneConfig
from bertscope.finetune.evaluation import evaluate_logits
from bertscope.finetune.representation import EncoderRepresentation

SRC = Path(__file__).resolve().parents[1] / "src"
TIMEOUT = 300  # seconds: far above a healthy run (~15 s on 2 idle cores), so only a hang reaches it


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               "-m", "bertscope", *args]
    try:
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the 2-process run did not finish within {TIMEOUT} s (a deadlock?): {exc.stderr!r:.2000}")


def _common(model: Path, glue_dir: Path) -> list[str]:
    return ["finetune", "--model", str(model), "--task", "rte", "--data-dir", str(glue_dir), "--max-train", "18",
            "--batch-size", "4", "--epochs", "2", "--seed", "3", "--device", "cpu", "--no-progress"]


# ----------------------------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize("sizes, world", [([8, 8, 2], 2), ([8, 8, 1], 2), ([1, 8, 8], 2), ([5, 7, 3], 3),
                                          ([4, 4, 4, 2], 4), ([6], 1)])
def test_shard_batches_gives_every_example_to_one_process_and_equal_steps(sizes: list[int], world: int) -> None:
    examples = iter(range(sum(sizes)))
    batches = [[next(examples) for _ in range(n)] for n in sizes]
    parts = [dp.shard_batches(batches, rank, world) for rank in range(world)]
    assert len({len(p) for p in parts}) == 1  # every process steps as often
    taken = sorted(i for p in parts for batch in p for i in batch)
    assert taken == list(range(sum(sizes)))  # each example once
    assert all(batch for p in parts for batch in p)  # nobody gets an empty part
    for step in zip(*parts):  # the parts of one global batch differ by at most one example
        assert max(map(len, step)) - min(map(len, step)) <= 1


def test_shard_batches_refuses_fewer_examples_than_processes() -> None:
    with pytest.raises(BertscopeError, match="cannot feed 3 processes"):
        dp.shard_batches([[0, 1]], 0, 3)


def test_run_alone_nothing_is_distributed(monkeypatch) -> None:
    for name in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    rows = torch.arange(6.0).reshape(3, 2)
    assert dp.world_size() == 1 and dp.rank() == 0 and dp.is_main() and not dp.is_active()
    assert torch.equal(dp.gather_rows(rows), rows)
    assert dp.sum_across(2.5, 3) == (2.5, 3)
    assert dp.setup(torch.device("cpu")) == torch.device("cpu")
    assert not dp.is_active()


def test_studies_and_cross_refuse_in_one_line_under_a_launcher(monkeypatch, capsys, tiny_checkpoint,
                                                               glue_dir) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    model = str(tiny_checkpoint("bert", 2))
    capsys.readouterr()  # what saving the checkpoint printed
    for argv in (["layers", "--model", model, "--task", "rte"], ["dims", "--model", model, "--task", "rte"],
                 ["tokens", "--model", model, "--task", "rte"], ["cross", "--model", model, "--tasks", "rte,wnli"]):
        assert main([*argv, "--data-dir", str(glue_dir)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "does not run data-parallel" in err[0] and argv[0] in err[0]
    assert main(["sweep", "spec.yaml"]) == 2  # a sweep parallelises runs itself
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sweep does not run data-parallel" in err[0]


# ------------------------------------------------------------------------------------------- end to end


def test_two_processes_are_one_run_whose_dev_metrics_equal_one_process(tmp_path, tiny_checkpoint,
                                                                       glue_dir) -> None:
    """Trainable encoder reading layer 1 of 2 (the top layer gets no gradient: DDP must cope); 18 training examples
    in global batches of 8 (8, 8, 2); 5 dev examples in dev batches of 2 (3 batches: 2 for rank 0, 1 for rank 1)."""
    model = tiny_checkpoint("bert", 2)
    out = tmp_path / "run"
    done = _torchrun([*_common(model, glue_dir), "--layer", "1", "--max-eval", "5", "--eval-batch-size", "2",
                      "--out", str(out), "--save-model"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(tmp_path.rglob("results.json"))) == 1
    assert done.stdout.count("final GLUE score") == 1  # the table: rank 0 only
    result = json.loads((out / "results.json").read_text())
    timing = result["timing"]
    assert (timing["world_size"], timing["per_process_batch_size"], timing["global_batch_size"]) == (2, 4, 8)
    assert [e["train_examples"] for e in result["epochs"]] == [18, 18]  # each training example once per epoch
    assert timing["train_examples"] == 36
    assert timing["steps"] == 2 * 3  # ceil(18 / 8) steps per epoch, on every process
    assert json.loads((out / "status.json").read_text())["state"] == "complete"

    # One process evaluates the saved weights: the same logits, so the same metrics (each dev example once).
    saved = load_finetuned(out / "model")
    split = glue.load_split("rte", "validation", glue_dir, 5, 3)
    data = encode_split(saved.tokenizer, split, 128)
    represent = EncoderRepresentation(saved.encoder, saved.spec.layers, saved.spec.token_method,
                                      include_special=saved.spec.include_special, frozen=True)
    logits = evaluate_logits(represent, saved.head, data, batch_size=2, device=torch.device("cpu"))
    assert len(length_grouped_batches(data.lengths, 2, seed=0, shuffle=False)) == 3
    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["idx"]) for r in rows] == [ex.idx for ex in split.examples]
    probabilities = torch.softmax(logits.double(), dim=-1)
    written = torch.tensor([[float(r["p_entailment"]), float(r["p_not_entailment"])] for r in rows],
                           dtype=torch.float64)
    torch.testing.assert_close(written, probabilities, rtol=0, atol=1e-6)
    predictions = logits.argmax(-1).tolist()
    assert [int(r["prediction"]) for r in rows] == predictions
    expected = glue.compute_metrics(glue.get_task("rte"), predictions, split.labels)
    assert result["final"]["validation"] == pytest.approx(expected)


def test_a_dev_set_smaller_than_one_batch_per_process_finishes_and_equals_one_process(tmp_path, tiny_checkpoint,
                                                                                      glue_dir) -> None:
    """One dev example in batches of 2: rank 1 has no dev batch at all. Frozen encoder (no encoder dropout), head
    dropout 0: with the same global batch (2 x 4 = 1 x 8) the gradient is the mean over the same examples, so the
    epochs' losses and metrics equal those of a single-process run with --batch-size 8 (the SGD loop: a solved probe
    has no batches)."""
    model = tiny_checkpoint("bert", 2)
    out = tmp_path / "run"
    same = ["--freeze", "encoder", "--fit", "sgd", "--dropout", "0", "--max-eval", "1", "--eval-batch-size", "2"]
    done = _torchrun([*_common(model, glue_dir), *same, "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    parallel = json.loads((out / "results.json").read_text())
    assert parallel["timing"]["global_batch_size"] == 8

    alone = run_finetune(FinetuneConfig(model=str(model), task="rte", data_dir=str(glue_dir), max_train=18,
                                        batch_size=8, epochs=2, seed=3, device="cpu", progress=False, log="off",
                                        freeze="encoder", fit="sgd", dropout=0.0, max_eval=1, eval_batch_size=2))
    assert alone.timing["world_size"] == 1 and alone.timing["global_batch_size"] == 8
    assert [e["train_examples"] for e in parallel["epochs"]] == [e["train_examples"] for e in alone.epochs]
    assert [e["train_loss"] for e in parallel["epochs"]] == pytest.approx([e["train_loss"] for e in alone.epochs],
                                                                          rel=1e-5)
    # where each epoch ended (its second half of batches, which the learning check reads): the same examples
    assert [e["late_train_loss"] for e in parallel["epochs"]] == pytest.approx(
        [e["late_train_loss"] for e in alone.epochs], rel=1e-5)
    assert parallel["final"] == alone.final
    assert parallel["timing"]["steps"] == alone.timing["steps"]


_FULL_DISK_ON_RANK_0 = '''
import errno, os
if os.environ.get("RANK") == "0":
    from bertscope.finetune import checkpoint

    def save(self, state):
        raise checkpoint.CheckpointKept(f"cannot write checkpoint {self.path} ({os.strerror(errno.ENOSPC)}); "
                                        "no checkpoint was written")

    checkpoint.Checkpointer.save = save
'''


def test_a_write_that_fails_on_rank_0_stops_every_process_in_one_line(tmp_path, tiny_checkpoint, glue_dir,
                                                                     monkeypatch) -> None:
    """Rank 0 alone writes; when its checkpoint write fails (a full disk) after epoch 1, rank 1 must not go on into
    epoch 2 and wait in a gradient all-reduce for the group's 30-minute timeout: both processes end with one line
    and exit 2, and the run is "failed" with no results.json."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_FULL_DISK_ON_RANK_0)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "run"
    frozen = ["--freeze", "encoder", "--fit", "sgd"]  # the SGD loop: it checkpoints every epoch
    done = _torchrun([*_common(tiny_checkpoint("bert", 2), glue_dir), *frozen, "--out", str(out)], tmp_path)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("bertscope finetune: error: ")]
    assert len(errors) == 2, done.stderr[-3000:]
    assert any("No space left on device" in line for line in errors), errors
    assert any("rank 0) failed to write the checkpoint" in line for line in errors), errors
    assert "bertscope/finetune" not in done.stderr  # no traceback through bertscope's code
    assert json.loads((out / "status.json").read_text())["state"] == "failed"
    assert not (out / "results.json").exists()
