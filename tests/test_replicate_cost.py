"""`replicate`'s cost: the GPU-hours estimate is the hand count of the protocol's runs, the run count is the sweep
dry-run's, every done run gets a compute fraction in [0, 1] whose total is the run-time-weighted aggregate, and the
sweep's executors reach replicate: a local Ray instance gives the same claims as the local run."""

from __future__ import annotations

import json

import pytest

from bertscope import api
from bertscope.core.errors import BertscopeError
from bertscope.models.flops import EncoderShape, encoder_forward_flops
from bertscope.replicate.cost import model_shape


def _forward(shape: EncoderShape, length: int = 16, layers: int | None = None) -> int:
    return encoder_forward_flops(shape, [length], layers)


def test_estimate_of_the_test_budget_is_the_hand_count_and_lists_the_dry_run_s_runs(tiny_checkpoint, tmp_path):
    model = str(tiny_checkpoint("bert", num_layers=2))
    result = api.replicate(paper="paper2", budget="test", model=model, out=str(tmp_path / "out"), dry_run=True,
                           progress=False, gpu_tflops=50, gpu_utilisation=0.5)
    estimate = result.estimate
    assert estimate is not None and estimate.runs == len(result.sweep.plan) and not estimate.uncounted
    shape = model_shape(model)
    forward = _forward(shape)
    # the test budget: 8 training examples x 1 epoch (3 forwards each) and 8 dev examples per head, 2 seeds
    head = 1 * 8 * 3 * forward + 8 * forward
    # layers: a head on hidden state h runs the encoder up to h (h = 0: the embeddings only, no encoder layer)
    layers = sum(1 * 8 * 3 * _forward(shape, layers=h) + 8 * _forward(shape, layers=h)
                 for h in range(1, shape.layers + 1))
    per_seed = (2 * head  # tokens: cls, mean
                + 2 * head  # dims: all + one random subset of K=2
                + layers  # layers: hidden states 0..L
                + (8 + 8) * forward  # frozen: one forward of train and dev
                + 2 * head)  # cross: rte then mrpc
    assert estimate.flops == 2 * per_seed
    assert estimate.gpu_hours == pytest.approx(2 * per_seed / (50e12 * 0.5) / 3600)
    assert f"{estimate.runs} runs" in estimate.line() and "50 TFLOP/s" in estimate.line()


def test_deepened_runs_are_counted_with_their_added_layer(tiny_checkpoint, tmp_path):
    model = str(tiny_checkpoint("bert", num_layers=2))
    result = api.replicate(paper="paper1", budget="test", model=model, out=str(tmp_path / "out"), dry_run=True,
                           progress=False)
    assert result.estimate is not None and not result.estimate.uncounted
    assert result.estimate.runs == len(result.sweep.plan)
    original, deeper = model_shape(model), EncoderShape(3, model_shape(model).hidden, model_shape(model).intermediate)
    ft = 8 * 3 * _forward(original) + 8 * _forward(original)
    ft_deep = 8 * 3 * _forward(deeper) + 8 * _forward(deeper)
    lens = 4 * _forward(original)  # reconstruct: 4 measured sentences
    per_seed = (lens + 4 * _forward(deeper)  # reconstruct of the original and the deepened model
                + 2 * (1 + original.layers) * lens  # layer-scan: duplicate and remove, original + one per layer
                + (4 + 16) * _forward(original)  # tuned lens: measured + training sentences
                + ft + ft_deep)
    assert result.estimate.flops == 2 * per_seed


def test_estimate_options_are_checked():
    with pytest.raises(BertscopeError, match="gpu-tflops"):
        api.ReplicateConfig(paper="paper2", gpu_tflops=0)
    with pytest.raises(BertscopeError, match="gpu-utilisation"):
        api.ReplicateConfig(paper="paper2", gpu_utilisation=1.5)
    with pytest.raises(BertscopeError, match="--address needs --executor ray"):
        api.ReplicateConfig(paper="paper2", address="auto")


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """The runs' caches in a temporary folder, set before the module's Ray instance starts (its workers inherit it)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("BERTSCOPE_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()


def test_compute_fractions_of_every_run_and_in_total(cache_env, tiny_checkpoint, glue_dir, tmp_path, one_thread):
    model = str(tiny_checkpoint("bert", num_layers=2))
    options = {"paper": "paper2", "budget": "test", "model": model, "data_dir": str(glue_dir), "progress": False}
    local = api.replicate(**options, out=str(tmp_path / "local"))
    assert local.sweep.executed["failed"] == 0
    payload = json.loads((tmp_path / "local" / "claims.json").read_text())
    done = [r for r in payload["runs"] if r["status"] == "done"]
    assert done and all(0 <= r["compute_fraction"] <= 1 and r["model_flops"] > 0 for r in done)
    compute = payload["compute"]
    peak = compute["peak_flops"]
    assert peak == max(compute["peak"]["best"].values()) > 0 and compute["peak"]["threads"] >= 1
    for r in done:
        assert r["compute_fraction"] == pytest.approx(r["model_flops"] / (peak * r["duration"]))
    weighted = sum(r["compute_fraction"] * r["duration"] for r in done) / sum(r["duration"] for r in done)
    assert compute["fraction"] == pytest.approx(weighted)
    assert compute["fraction"] == pytest.approx(sum(r["model_flops"] for r in done)
                                                / (peak * sum(r["duration"] for r in done)))
    assert payload["estimate"]["runs"] == len(payload["runs"])
    markdown = (tmp_path / "local" / "claims.md").read_text()
    assert f"model compute {compute['fraction']:.1%} of the runs' wall time" in markdown
    assert local.compute == compute and "model compute" in str(local.render().renderables[1])


@pytest.mark.slow  # about two minutes: a local Ray instance runs the whole tiny protocol again
def test_ray_gives_the_local_claims(cache_env, local_ray, tiny_checkpoint, glue_dir, tmp_path, one_thread):
    model = str(tiny_checkpoint("bert", num_layers=2))
    options = {"paper": "paper2", "budget": "test", "model": model, "data_dir": str(glue_dir), "progress": False}
    local = api.replicate(**options, out=str(tmp_path / "local"))
    ray = api.replicate(**options, out=str(tmp_path / "ray"), executor="ray")
    assert ray.sweep.executed == local.sweep.executed
    assert "--executor ray" in json.loads((tmp_path / "ray" / "claims.json").read_text())["command"]
    assert [c.verdict for c in ray.claims] == [c.verdict for c in local.claims]
    for a, b in zip(ray.claims, local.claims, strict=True):
        assert a.statement == b.statement
        assert a.difference.to_dict() == pytest.approx(b.difference.to_dict(), nan_ok=True)


def test_real_lengths_count_the_tokens_a_run_reads_not_its_max_length(tiny_checkpoint, glue_dir):
    from transformers import AutoTokenizer

    from bertscope.data.glue import load_split
    from bertscope.replicate.cost import RealLengths, run_flops

    model = str(tiny_checkpoint("bert", num_layers=2))
    lengths = RealLengths(model, 32, str(glue_dir))
    examples = load_split("rte", "validation", str(glue_dir), max_examples=2000, seed=0).examples
    tokenizer = AutoTokenizer.from_pretrained(model)
    expected = [len(tokenizer(*ex.texts, truncation=True, max_length=32)["input_ids"]) for ex in examples]
    assert lengths("rte", 1) == pytest.approx(sum(expected) / len(expected)) and lengths("rte", 1) <= 32
    shape = model_shape(model)
    options = {"task": "rte", "max_train": 8, "max_eval": 8, "epochs": 1, "max_length": 32}
    real = run_flops("finetune", options, shape, lengths)
    assert real == 8 * 3 * _forward(shape, round(lengths("rte", 0))) + 8 * _forward(shape, round(lengths("rte", 1)))
    assert real <= run_flops("finetune", options, shape)  # the estimate's --max-length count is an upper bound
