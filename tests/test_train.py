"""The training loop's parts: batching order, padding, the position-wise top layer, and the swappable representation."""

from __future__ import annotations

import copy
import io
import math
import re
from types import SimpleNamespace

import pytest
import torch

from bertscope.core.errors import BertscopeError
from bertscope.core.options import parse_token
from bertscope.core.progress import log_mode
from bertscope.data import glue
from bertscope.finetune.batching import Batch, collate, encode_split, length_grouped_batches
from bertscope.finetune.freezing import apply_freezing
from bertscope.finetune.head import HeadSpec, SelectingHead
from bertscope.finetune.optim import OptimOptions, param_groups
from bertscope.finetune.progress import DivergenceWatch
from bertscope.finetune.representation import EncoderRepresentation
from bertscope.finetune.train import train_loop
from conftest import loop_options, tiny_model

WORDS = ["good", "bad", "fine", "awful", "great", "terrible", "nice", "poor", "lovely", "dull"]


def _split(n: int = 40, seed: int = 0) -> glue.GlueSplit:
    g = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(n):
        length = int(torch.randint(1, 12, (1,), generator=g))
        words = [WORDS[int(j)] for j in torch.randint(0, len(WORDS), (length,), generator=g)]
        label = int(sum(WORDS.index(w) % 2 == 0 for w in words) * 2 > length)
        examples.append(glue.GlueExample(texts=(" ".join(words),), label=label, idx=i))
    return glue.GlueSplit(task="sst2", split="train", examples=tuple(examples), source="synthetic", num_available=n)


def test_batches_cover_every_example_once_and_depend_only_on_seed_epoch_lengths() -> None:
    lengths = [int(x) for x in torch.randint(3, 60, (203,), generator=torch.Generator().manual_seed(0))]
    a = length_grouped_batches(lengths, 16, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(203))
    assert a == length_grouped_batches(list(lengths), 16, seed=1, epoch=1)
    assert a != length_grouped_batches(lengths, 16, seed=1, epoch=2)
    assert a != length_grouped_batches(lengths, 16, seed=2, epoch=1)
    torch.manual_seed(123)  # the global RNG plays no part
    assert a == length_grouped_batches(lengths, 16, seed=1, epoch=1)

    def padding(batches):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(a) < padding(length_grouped_batches(lengths, 16, seed=1, epoch=1, group_by_length=False)) / 3
    ordered = length_grouped_batches(lengths, 16, seed=0, shuffle=False)
    assert [lengths[i] for b in ordered for i in b] == sorted(lengths, reverse=True)


def test_collate_pads_dynamically(bert_tokenizer) -> None:
    data = encode_split(bert_tokenizer, _split(6), max_length=8)
    batch = collate(data, [0, 3, 5], regression=False)
    width = max(len(data.input_ids[i]) for i in (0, 3, 5))
    assert batch.input_ids.shape == (3, width) and batch.labels.tolist() == [data.labels[i] for i in (0, 3, 5)]
    for row, i in enumerate((0, 3, 5)):
        n = len(data.input_ids[i])
        assert batch.input_ids[row, :n].tolist() == data.input_ids[i]
        assert batch.attention_mask[row].tolist() == [1] * n + [0] * (width - n)
        assert batch.special_mask[row, 0] == 1 and batch.special_mask[row, n - 1] == 1  # [CLS] ... [SEP]
    assert batch.example_index.tolist() == [0, 3, 5]
    assert max(len(ids) for ids in data.input_ids) <= 8


def _batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (4, 10), generator=g)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 3:] = 0
    special = torch.zeros_like(ids)
    special[:, 0] = 1
    return Batch(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids), special_mask=special,
                 labels=None, example_index=torch.arange(4))


@pytest.mark.parametrize("name,token,layers", [("bert", "cls", (3,)), ("bert", "index:-1", (1, 3)),
                                               ("roberta", "index:2", (2,)), ("electra", "cls", (1, 3)),
                                               ("distilbert", "cls", (3,))])
def test_position_wise_top_layer_equals_the_whole_layer_with_gradients(name: str, token: str, layers) -> None:
    model = tiny_model(name, "base", num_layers=3)
    slow_model = copy.deepcopy(model)
    batch = _batch()
    fast = EncoderRepresentation(model, layers, parse_token(token))
    slow = EncoderRepresentation(slow_model, layers, parse_token(token), fast_top=False)
    a, b = fast(batch), slow(batch)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(a)
    (a * weights).sum().backward()
    (b * weights).sum().backward()
    for (n, p), (_, q) in zip(model.named_parameters(), slow_model.named_parameters()):
        if q.grad is None:
            assert p.grad is None or not p.grad.any(), n
        else:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=n)


def test_reading_layer_zero_and_one_work() -> None:
    model = tiny_model("bert", "base", num_layers=2)
    batch = _batch()
    full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                 output_hidden_states=True).hidden_states
    got = EncoderRepresentation(model, (0, 1), parse_token("cls"), frozen=True)(batch)
    torch.testing.assert_close(got, torch.stack([full[0][:, 0], full[1][:, 0]], dim=1), rtol=1e-5, atol=1e-5)


class _Cached:
    """A cached representation, as a studies fast path would build it: vectors looked up by example position."""

    def __init__(self, vectors: torch.Tensor) -> None:
        self.vectors = vectors

    def train(self, mode: bool = True):
        return self

    def __call__(self, batch: Batch) -> torch.Tensor:
        return self.vectors[batch.example_index]


def _run(represent, data, eval_data, seed: int = 5):
    spec = HeadSpec(num_labels=2, hidden_size=32, layers=(2,), dims=(1, 4, 9, 30), token="max-norm", dropout=0.2)
    head = SelectingHead(spec, seed=seed)
    options = loop_options(epochs=2, batch_size=8, lr=1e-3, head_lr=1e-2, weight_decay=0.01, warmup_ratio=0.1,
                           grad_clip=1.0, seed=seed, progress=False)
    history = train_loop(represent, head, data, {"validation": eval_data}, **options, device=torch.device("cpu"))
    return history, head


def test_cached_vectors_through_the_same_loop_equal_the_frozen_encoder_path(bert_tokenizer) -> None:
    model = tiny_model("bert", "base", num_layers=3).train()
    info = apply_freezing(model, "encoder", read_layers=(2,))
    before = copy.deepcopy(model.state_dict())
    data = encode_split(bert_tokenizer, _split(40, seed=0), 32)
    eval_data = encode_split(bert_tokenizer, _split(16, seed=1), 32)
    live = EncoderRepresentation(model, (2,), parse_token("max-norm"), frozen=info["encoder_fully_frozen"])
    torch.manual_seed(0)
    history_live, head_live = _run(live, data, eval_data)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])  # a frozen encoder is not changed
    with torch.no_grad():
        cache = {name: torch.cat([live(collate(d, [i], regression=False)) for i in range(len(d))])
                 for name, d in (("train", data), ("eval", eval_data))}

    class Switch(_Cached):
        def __call__(self, batch: Batch) -> torch.Tensor:
            source = cache["train"] if len(batch.input_ids[0]) and self.training else cache["eval"]
            return source[batch.example_index]

        def train(self, mode: bool = True):
            self.training = mode
            return self

    torch.manual_seed(999)  # a different global RNG state must not matter
    history_cached, head_cached = _run(Switch(cache["train"]), data, eval_data)
    for r_live, r_cached in zip(history_live.epochs, history_cached.epochs):
        assert r_live.train_loss == pytest.approx(r_cached.train_loss, rel=1e-5, abs=1e-6)
        assert r_live.eval == r_cached.eval
    for key, value in head_live.state_dict().items():
        torch.testing.assert_close(value, head_cached.state_dict()[key], rtol=1e-5, atol=1e-6)
    assert history_live.predictions == history_cached.predictions


def test_unfrozen_training_changes_the_encoder_and_learns_a_separable_task(bert_tokenizer) -> None:
    torch.manual_seed(0)
    model = tiny_model("bert", "base", num_layers=2)
    apply_freezing(model, "embeddings", read_layers=(2,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    data = encode_split(bert_tokenizer, _split(64, seed=0), 32)
    spec = HeadSpec(num_labels=2, hidden_size=32, layers=(2,), dims=tuple(range(32)), token="mean")
    head = SelectingHead(spec, seed=0)
    options = loop_options(epochs=4, batch_size=16, lr=3e-3, head_lr=3e-3, weight_decay=0.0, warmup_ratio=0.0,
                           grad_clip=1.0, seed=0, progress=False)
    history = train_loop(EncoderRepresentation(model, (2,), parse_token("mean")), head, data, {"validation": data},
                         **options, encoder_params=named, device=torch.device("cpu"))
    after = model.state_dict()
    assert torch.equal(after["embeddings.word_embeddings.weight"], before["embeddings.word_embeddings.weight"])
    assert not torch.equal(after["encoder.layer.1.output.dense.weight"], before["encoder.layer.1.output.dense.weight"])
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss
    assert history.steps == 4 * 4 and history.train_examples == 4 * 64


def _reference_training(model: torch.nn.Module, head: torch.nn.Module, data, options: SimpleNamespace,
                        layer: int) -> list[float]:
    """An independent plain-PyTorch loop: what train_loop must compute (the batch order is the only shared part).

    AdamW (unfused) with BERT's decay exemptions spelled out by name, the linear warmup/decay schedule written as
    a LambdaLR, gradient-norm clipping over every trained parameter, the [CLS] vector of ``layer`` read from the
    model's own ``hidden_states``, cross-entropy. Returns the per-step losses.
    """
    def exempt(name: str) -> bool:
        return name.endswith(".bias") or name == "bias" or "LayerNorm" in name

    encoder = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    heads = [(n, p) for n, p in head.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in params if exempt(n) == no_decay], "lr": lr,
               "weight_decay": 0.0 if no_decay else options.weight_decay}
              for params, lr in ((encoder, options.lr), (heads, options.head_lr)) for no_decay in (False, True)]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], betas=(0.9, 0.999), eps=1e-8, foreach=False)
    steps_per_epoch = len(length_grouped_batches(data.lengths, options.batch_size, seed=options.seed))
    total = steps_per_epoch * options.epochs
    warmup = -(-int(options.warmup_ratio * total * 1000) // 1000)  # ceil without floating noise for these values

    def factor(step: int) -> float:
        return step / max(1, warmup) if step < warmup else max(0.0, (total - step) / max(1, total - warmup))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    trained = [p for _, p in encoder] + [p for _, p in heads]
    losses = []
    model.train()
    head.train()
    for epoch in range(1, options.epochs + 1):
        for batch in length_grouped_batches(data.lengths, options.batch_size, seed=options.seed, epoch=epoch):
            width = max(len(data.input_ids[i]) for i in batch)
            ids = torch.tensor([data.input_ids[i] + [0] * (width - len(data.input_ids[i])) for i in batch])
            mask = torch.tensor([[1] * len(data.input_ids[i]) + [0] * (width - len(data.input_ids[i]))
                                 for i in batch])
            labels = torch.tensor([data.labels[i] for i in batch])
            states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            loss = torch.nn.functional.cross_entropy(head(states[layer][:, :1]), labels)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, options.grad_clip)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
    return losses


def test_train_loop_equals_an_independent_plain_pytorch_loop(bert_tokenizer, one_thread) -> None:
    """Same parameters after N steps as a hand-written loop: optimizer groups, weight-decay exemptions (the
    embeddings are frozen, so a frozen part must stay put), warm-up/decay schedule and clipping all matter here."""
    model = tiny_model("bert", "base", num_layers=2)
    for module in model.modules():  # no dropout: both loops must see the same forward pass
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    apply_freezing(model, "embeddings", read_layers=(2,))
    spec = HeadSpec(num_labels=2, hidden_size=32, layers=(2,), dims=tuple(range(32)), token="cls", dropout=0.0)
    head = SelectingHead(spec, seed=3)
    reference_model, reference_head = copy.deepcopy(model), copy.deepcopy(head)
    data = encode_split(bert_tokenizer, _split(40, seed=2), 32)
    options = SimpleNamespace(epochs=2, batch_size=8, lr=2e-3, head_lr=1e-2, weight_decay=0.3, warmup_ratio=0.25,
                              grad_clip=0.05, seed=4, progress=False)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    history = train_loop(EncoderRepresentation(model, (2,), parse_token("cls"), fast_top=False), head, data,
                         {"validation": data}, **loop_options(**vars(options)), encoder_params=named,
                         device=torch.device("cpu"))
    losses = _reference_training(reference_model, reference_head, data, options, layer=2)
    assert history.steps == len(losses) == 10
    mean_first = sum(losses[:5] * 8) / 40  # 5 full batches of 8 per epoch: the epoch mean is the batch mean
    assert history.epochs[0].train_loss == pytest.approx(mean_first, rel=1e-5)
    # where each epoch ended: its second half of batches (batches 3-5 of 5), read by the learning check
    for epoch, record in enumerate(history.epochs):
        late = losses[5 * epoch + 2:5 * epoch + 5]
        assert record.late_train_loss == pytest.approx(sum(late) / 3, rel=1e-5)
        assert record.ended_loss == record.late_train_loss != record.train_loss
    for (name, got), want in zip(model.state_dict().items(), reference_model.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
    for (name, got), want in zip(head.state_dict().items(), reference_head.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(model.state_dict()["encoder.layer.0.output.dense.weight"],
                           tiny_model("bert", "base", num_layers=2).state_dict()["encoder.layer.0.output.dense.weight"])


def test_param_groups_exempt_biases_and_norms_from_weight_decay() -> None:
    model = tiny_model("bert", "base", num_layers=1)
    head = SelectingHead(HeadSpec(num_labels=2, hidden_size=32, layers=(1,), dims=(0, 1)), seed=0)
    options = OptimOptions(epochs=1, lr=1e-3, head_lr=1e-2, weight_decay=0.5)
    groups = param_groups(list(model.named_parameters()), head, options)
    names = {id(p): n for n, p in [*model.named_parameters(), *(("head." + n, p) for n, p in head.named_parameters())]}
    for group in groups:
        for param in group["params"]:
            name = names[id(param)]
            no_decay = name.endswith("bias") or "LayerNorm" in name
            assert group["weight_decay"] == (0.0 if no_decay else 0.5), name
            assert group["lr"] == (1e-2 if name.startswith("head.") else 1e-3), name
    assert sum(len(g["params"]) for g in groups) == len(names)


# ------------------------------------------------------------------------------------------ divergence, logs


class _Poisoned(_Cached):
    """Cached vectors, except that training call ``bad`` (1-based) returns them times ``factor`` (NaN, or a huge
    number whose squared error overflows float32 to inf)."""

    def __init__(self, vectors: torch.Tensor, bad: int, factor: float) -> None:
        super().__init__(vectors)
        self.bad, self.factor, self.calls, self.training = bad, factor, 0, True

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def __call__(self, batch: Batch) -> torch.Tensor:
        vectors = self.vectors[batch.example_index]
        if self.training:
            self.calls += 1
            if self.calls == self.bad:
                return vectors * self.factor
        return vectors


class _Epochs:
    """A train_loop callback that notes which epochs were evaluated."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_step(self, step: int, loss: float, learning_rate: float) -> None:
        pass

    def on_epoch(self, record, step: int) -> None:
        self.epochs.append(record.epoch)


def _divergence_run(tokenizer, task: str, factor: float, log_every: int, callback: _Epochs | None = None,
                    on_divergence: str = "stop", bad: int = 7):
    """3 epochs of 5 steps on cached vectors; training step ``bad`` sees poisoned vectors."""
    split = _split(40, seed=0)
    if task == "stsb":  # a regression task: float labels
        examples = tuple(glue.GlueExample(texts=ex.texts, label=float(ex.label) * 5, idx=ex.idx)
                         for ex in split.examples)
        split = glue.GlueSplit(task="stsb", split="train", examples=examples, source="synthetic", num_available=40)
    data = encode_split(tokenizer, split, 32)
    vectors = torch.randn(40, 1, 32, generator=torch.Generator().manual_seed(0))
    num_labels = 1 if task == "stsb" else 2
    head = SelectingHead(HeadSpec(num_labels=num_labels, hidden_size=32, layers=(2,), dims=tuple(range(32))), seed=0)
    options = loop_options(epochs=3, batch_size=8, lr=1e-3, head_lr=1e-2, seed=0, log_every=log_every, log="off",
                           on_divergence=on_divergence)
    return train_loop(_Poisoned(vectors, bad, factor), head, data, {"validation": data}, **options,
                      device=torch.device("cpu"), callback=callback)


@pytest.mark.parametrize("task, factor, value", [("sst2", float("nan"), "nan"), ("stsb", 1e30, "inf")])
@pytest.mark.parametrize("log_every", [5, 100])  # caught at the next check (step 10), or at the end of epoch 2
def test_a_non_finite_loss_stops_training_naming_epoch_and_first_bad_step(bert_tokenizer, task, factor, value,
                                                                          log_every) -> None:
    callback = _Epochs()
    with pytest.raises(BertscopeError) as info:  # 5 steps per epoch: step 7 is the 2nd of epoch 2
        _divergence_run(bert_tokenizer, task, factor, log_every, callback)
    assert str(info.value) == (f"training diverged: loss is {value} at epoch 2, step 7 (lower --lr, or "
                               "--on-divergence continue)")
    assert callback.epochs == [1]  # the diverged epoch is not evaluated


def test_on_divergence_continue_finishes_with_one_warning(bert_tokenizer, capsys) -> None:
    callback = _Epochs()
    history = _divergence_run(bert_tokenizer, "sst2", float("nan"), 5, callback, on_divergence="continue")
    assert callback.epochs == [1, 2, 3] and history.steps == 15
    assert math.isfinite(history.epochs[0].train_loss)
    assert math.isnan(history.epochs[1].train_loss)  # NaN from step 7 on
    err = capsys.readouterr().err
    assert err.count("training diverged") == 1 and "epoch 2, step 7" in err and "continuing" in err


def test_an_epoch_loss_far_above_the_constant_predictors_stops_training() -> None:
    """From epoch 2: a finite mean loss over 10 times the larger of the constant predictor's and epoch 1's stops
    (or warns once under continue); epoch 1 and a loss at the bound pass."""
    watch = DivergenceWatch(True, torch.device("cpu"))
    watch.check_epoch_loss(1, 1e9, None, 0.69)  # epoch 1 has no reference of its own
    watch.check_epoch_loss(2, 6.5, 0.5, 0.69)  # under 10 times
    watch.check_epoch_loss(2, 40.0, 5.0, 0.69)  # a high first epoch (a regression head's start) raises the bar
    watch.check_epoch_loss(2, float("nan"), 0.7, 0.69)  # non-finite losses are check()'s
    with pytest.raises(BertscopeError) as info:
        watch.check_epoch_loss(3, 6.012e8, 0.7317, 0.6531)
    assert str(info.value) == ("training diverged: epoch 3's mean loss 6.012e+08 is over 10 times 0.7317 (the larger "
                               "of the constant predictor's loss and epoch 1's) (lower --lr, or --on-divergence "
                               "continue)")
    warn = DivergenceWatch(False, torch.device("cpu"))
    warn.check_epoch_loss(2, 1e3, 0.7, 0.69)
    warn.check_epoch_loss(3, 1e3, 0.7, 0.69)
    assert warn.warned


def test_an_exploding_but_finite_loss_stops_the_loop(bert_tokenizer) -> None:
    """Every training call from step 6 on sees its vectors times 1e3: the loss stays finite but epoch 2's mean is
    far above the constant predictor's, so the loop stops before evaluating epoch 2."""

    class Exploding(_Poisoned):
        def __call__(self, batch: Batch) -> torch.Tensor:
            vectors = self.vectors[batch.example_index]
            if self.training:
                self.calls += 1
                if self.calls >= self.bad:
                    return vectors * self.factor
            return vectors

    split = _split(40, seed=0)
    data = encode_split(bert_tokenizer, split, 32)
    vectors = torch.randn(40, 1, 32, generator=torch.Generator().manual_seed(0))
    head = SelectingHead(HeadSpec(num_labels=2, hidden_size=32, layers=(2,), dims=tuple(range(32))), seed=0)
    options = loop_options(epochs=3, batch_size=8, lr=1e-3, head_lr=1e-2, seed=0, log_every=1, log="off")
    callback = _Epochs()
    with pytest.raises(BertscopeError, match=r"^training diverged: epoch 2's mean loss .* is over 10 times"):
        train_loop(Exploding(vectors, 6, 1e3), head, data, {"validation": data}, **options,
                   device=torch.device("cpu"), callback=callback)
    assert callback.epochs == [1]


def test_a_finite_run_is_not_stopped(bert_tokenizer) -> None:
    history = _divergence_run(bert_tokenizer, "sst2", 1.0, 1)  # every step checked, none bad
    assert history.steps == 15 and all(math.isfinite(r.train_loss) for r in history.epochs)


def _logged_run(tokenizer, capsys, **options):
    data = encode_split(tokenizer, _split(40, seed=0), 32)
    vectors = torch.randn(40, 1, 32, generator=torch.Generator().manual_seed(0))
    head = SelectingHead(HeadSpec(num_labels=2, hidden_size=32, layers=(2,), dims=tuple(range(32))), seed=0)
    capsys.readouterr()
    train_loop(_Cached(vectors), head, data, {"validation": data},
               **loop_options(epochs=3, batch_size=8, lr=1e-3, head_lr=1e-2, seed=0, **options),
               device=torch.device("cpu"))
    return capsys.readouterr()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Closed(io.StringIO):
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


def test_log_mode_is_bars_on_a_terminal_and_plain_lines_elsewhere() -> None:
    assert log_mode("auto", _Terminal()) == "bar"
    assert log_mode("auto", io.StringIO()) == "plain" and log_mode("auto", _Closed()) == "plain"
    assert log_mode("auto", object()) == "plain"  # no isatty at all
    assert [log_mode(m, _Terminal()) for m in ("bar", "plain", "off")] == ["bar", "plain", "off"]


STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def test_plain_logs_are_timestamped_step_and_epoch_lines_without_carriage_returns(bert_tokenizer, capsys) -> None:
    captured = _logged_run(bert_tokenizer, capsys, log="auto", log_every=2, log_seconds=0.0)  # capsys: no TTY
    assert "\r" not in captured.out and "\r" not in captured.err
    lines = captured.out.splitlines()
    assert lines and all(STAMP.match(line) for line in lines)
    steps = [line for line in lines if " step " in line]
    # a line at step 1 and at every 2nd step of the 15
    assert [int(re.search(r" step (\d+)/15 ", s).group(1)) for s in steps] == [1, *range(2, 16, 2)]
    assert all(re.search(r"loss \d+\.\d{4} [\d.]+ ex/s eta \d+:\d\d:\d\d$", s) for s in steps)
    epochs = [line for line in lines if re.search(r" epoch \d/3: loss ", line)]
    assert len(epochs) == 3 and len(steps) + len(epochs) == len(lines)
    assert all("validation: accuracy=" in line for line in epochs)


def test_plain_step_lines_are_at_most_one_per_log_seconds(bert_tokenizer, capsys) -> None:
    lines = _logged_run(bert_tokenizer, capsys, log="plain", log_every=1, log_seconds=1e9).out.splitlines()
    assert sum(" step " in line for line in lines) == 1 and len(lines) == 1 + 3  # step 1, then the epoch lines


@pytest.mark.parametrize("log, stamped", [("plain", True), ("bar", False)])
def test_no_progress_keeps_one_line_per_epoch(bert_tokenizer, capsys, log, stamped) -> None:
    captured = _logged_run(bert_tokenizer, capsys, log=log, progress=False, log_seconds=0.0)
    lines = captured.out.splitlines()
    assert [int(re.search(r"epoch (\d)/3: loss ", line).group(1)) for line in lines] == [1, 2, 3]
    assert all(bool(STAMP.match(line)) == stamped for line in lines)
    assert "\r" not in captured.out and "\r" not in captured.err


def test_log_off_prints_nothing(bert_tokenizer, capsys) -> None:
    captured = _logged_run(bert_tokenizer, capsys, log="off", log_seconds=0.0)
    assert captured.out == "" and captured.err == ""
