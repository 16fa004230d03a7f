"""The lens's metric functions against plain reference computations (log-softmax, argsort, Python loops)."""

from __future__ import annotations

import math

import pytest
import torch

from bertscope.data.labels import METRIC_NAMES
from bertscope.lens.metrics import (
    LENS_METRICS,
    LayerMetrics,
    MetricSums,
    decode_tokens,
    head_token_stats,
    head_token_stats_top1,
    head_top1,
    lens_metric,
    metric_label,
    sentence_exact,
    token_stats,
)
from bertscope.models.families import HeadParts


def _reference(logits: torch.Tensor, targets: torch.Tensor) -> tuple[list[int], list[float]]:
    """0-based position of each target in a descending sort, and -log softmax, computed the obvious way."""
    ranks, nlls = [], []
    for row, target in zip(logits.double(), targets.tolist()):
        order = torch.argsort(row, descending=True).tolist()
        ranks.append(order.index(target))
        nlls.append(-float(torch.log_softmax(row, dim=0)[target]))
    return ranks, nlls


def test_token_stats_match_sort_and_log_softmax() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 300, generator=g) * 3
    targets = torch.randint(0, 300, (40,), generator=g)
    targets[:5] = logits[:5].argmax(-1)  # some top-1 hits
    rank, nll = token_stats(logits, targets)
    ref_rank, ref_nll = _reference(logits, targets)
    assert rank.tolist() == ref_rank
    torch.testing.assert_close(nll.double(), torch.tensor(ref_nll, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    assert (rank[:5] == 0).all()


def test_token_stats_upcasts_half_precision() -> None:
    # Distinct small integers are exact in bfloat16, so no ties make the rank ambiguous.
    g = torch.Generator().manual_seed(0)
    logits = torch.stack([torch.randperm(50, generator=g) for _ in range(6)]).to(torch.bfloat16) / 4
    targets = torch.arange(6)
    rank, nll = token_stats(logits, targets)
    assert nll.dtype == torch.float32
    ref_rank, _ = _reference(logits.float(), targets)
    assert rank.tolist() == ref_rank


def _head(hidden: int = 8, vocab: int = 97, transform: bool = True) -> HeadParts:
    g = torch.Generator().manual_seed(1)
    dense = torch.nn.Linear(hidden, hidden)
    with torch.no_grad():
        dense.weight.copy_(torch.randn(hidden, hidden, generator=g))
    return HeadParts(transform=(lambda h: torch.tanh(dense(h))) if transform else None,
                     weight=torch.randn(vocab, hidden, generator=g), bias=torch.randn(vocab, generator=g))


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_head_token_stats_is_independent_of_chunking(chunk: int) -> None:
    head = _head()
    hidden = torch.randn(50, 8)
    targets = torch.randint(0, 97, (50,))
    with torch.no_grad():
        full_logits = head.logits(hidden, is_last_layer=True)
        rank, nll = head_token_stats(head, hidden, targets, is_last_layer=True, chunk_size=chunk)
    ref_rank, ref_nll = _reference(full_logits, targets)
    assert rank.tolist() == ref_rank
    torch.testing.assert_close(nll.double(), torch.tensor(ref_nll, dtype=torch.float64), rtol=1e-5, atol=1e-5)


def test_head_token_stats_applies_pre_norm_except_on_the_last_layer() -> None:
    base = _head(transform=False)
    head = HeadParts(transform=None, weight=base.weight, bias=base.bias, pre_norm=lambda h: 2.0 * h + 1.0)
    hidden = torch.randn(5, 8)
    targets = torch.randint(0, 97, (5,))
    _, nll_last = head_token_stats(head, hidden, targets, is_last_layer=True)
    _, nll_mid = head_token_stats(head, hidden, targets, is_last_layer=False)
    _, ref_last = _reference(hidden @ base.weight.T + base.bias, targets)
    _, ref_mid = _reference((2.0 * hidden + 1.0) @ base.weight.T + base.bias, targets)
    torch.testing.assert_close(nll_last.double(), torch.tensor(ref_last, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nll_mid.double(), torch.tensor(ref_mid, dtype=torch.float64), rtol=1e-5, atol=1e-5)


def test_head_token_stats_handles_no_positions() -> None:
    rank, nll = head_token_stats(_head(), torch.zeros(0, 8), torch.zeros(0, dtype=torch.long), is_last_layer=True)
    assert rank.numel() == 0 and nll.numel() == 0


def test_sentence_exact_counts_sentences_whose_tokens_are_all_right() -> None:
    correct = torch.tensor([True, True, False, True, True, True, False])
    sentence = torch.tensor([0, 0, 1, 1, 3, 3, 4])
    # sentence 2 has no counted token: left out; 0 and 3 fully right; 1 and 4 not.
    exact, present = sentence_exact(correct, sentence, 5)
    by_sentence: dict[int, list[bool]] = {}
    for c, s in zip(correct.tolist(), sentence.tolist()):
        by_sentence.setdefault(s, []).append(c)
    assert present == len(by_sentence)
    assert exact == sum(all(v) for v in by_sentence.values())


def test_metric_sums_are_the_same_in_one_batch_or_many() -> None:
    g = torch.Generator().manual_seed(3)
    rank = torch.randint(0, 12, (200,), generator=g)
    nll = torch.rand(200, generator=g) * 5
    sentence = torch.sort(torch.randint(0, 20, (200,), generator=g)).values
    whole = LayerMetrics.from_tokens(rank, nll, sentence, 20)
    sums = MetricSums()
    for first, last in ((0, 6), (7, 7), (8, 19)):  # batches of whole sentences, renumbered from 0 in each batch
        keep = (sentence >= first) & (sentence <= last)
        sums.add(rank[keep], nll[keep], sentence[keep] - first, last - first + 1)
    split = sums.result()
    assert split.tokens == whole.tokens == 200
    assert split.top1 == whole.top1 and split.top5 == whole.top5 and split.exact == whole.exact
    assert math.isclose(split.nll, whole.nll, rel_tol=1e-12)
    assert math.isclose(whole.mean_rank, float((rank + 1).double().mean()), rel_tol=1e-12)
    assert whole.top1 == float((rank == 0).double().mean())
    assert whole.top5 == float((rank < 5).double().mean())


def test_empty_metrics_are_nan_not_an_error() -> None:
    m = MetricSums().result()
    assert m.tokens == 0 and math.isnan(m.top1) and math.isnan(m.exact)


def test_token_stats_in_place_variant_agrees() -> None:
    logits = torch.randn(30, 200)
    targets = torch.randint(0, 200, (30,))
    rank, nll = token_stats(logits.clone(), targets)
    rank_ip, nll_ip = token_stats(logits.clone(), targets, overwrite=True)
    assert torch.equal(rank, rank_ip)
    torch.testing.assert_close(nll, nll_ip)


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_top1_comes_from_the_same_logits_as_rank_and_nll(chunk: int) -> None:
    head = _head()
    g = torch.Generator().manual_seed(3)
    hidden, targets = torch.randn(30, 8, generator=g), torch.randint(0, 97, (30,), generator=g)
    full = head.logits(hidden, is_last_layer=False)
    rank, nll, top1 = head_token_stats_top1(head, hidden, targets, is_last_layer=False, chunk_size=chunk)
    plain_rank, plain_nll = head_token_stats(head, hidden, targets, is_last_layer=False, chunk_size=chunk)
    assert top1.tolist() == full.argmax(-1).tolist()
    assert head_top1(head, hidden, is_last_layer=False, chunk_size=chunk).tolist() == top1.tolist()
    assert rank.tolist() == plain_rank.tolist()
    torch.testing.assert_close(nll, plain_nll)
    assert ((rank == 0) == (top1 == targets)).all()  # rank 0 exactly where the input token is the top-1
    assert head_top1(head, torch.zeros(0, 8), is_last_layer=True).shape == (0,)


def test_decode_tokens_matches_softmax() -> None:
    head = _head()
    g = torch.Generator().manual_seed(4)
    hidden, targets = torch.randn(9, 8, generator=g), torch.randint(0, 97, (9,), generator=g)
    top1, prob = decode_tokens(head, hidden, targets, is_last_layer=True)
    logits = head.logits(hidden, is_last_layer=True).double()
    reference = torch.softmax(logits, -1)[torch.arange(9), targets]
    torch.testing.assert_close(prob.double(), reference, rtol=1e-5, atol=1e-7)
    assert top1.tolist() == logits.argmax(-1).tolist()


def test_final_agreement_sums() -> None:
    sums = MetricSums()
    assert math.isnan(sums.result().final_agreement)
    sums.add_final_agreement(torch.tensor([True, False, True]))
    sums.add_final_agreement(torch.tensor([False]))
    assert sums.result().final_agreement == 0.5


def test_each_lens_metric_is_declared_once_and_read_from_its_declaration() -> None:
    """The sums, the records, the labels and the formats all come from LENS_METRICS; the data floor's label table
    holds no lens metric (a second, drifting copy)."""
    names = [m.name for m in LENS_METRICS]
    assert len(names) == len(set(names))
    g = torch.Generator().manual_seed(5)
    rank, nll = torch.randint(0, 9, (30,), generator=g), torch.rand(30, generator=g)
    sums = MetricSums()
    sums.add(rank, nll, torch.arange(30) // 3, 10)
    sums.add_final_agreement(rank < 4)
    result = sums.result()
    assert list(result.values) == names and list(result.to_dict()) == ["tokens", "sentences", *names]
    assert result.final_agreement == float((rank < 4).double().mean())
    assert list(LayerMetrics.names()) == [m.name for m in LENS_METRICS if m.accumulation != "final agreement"]
    for m in LENS_METRICS:
        assert m.name not in METRIC_NAMES, f"{m.name}: its label belongs to its declaration"
        assert metric_label(m.name) == m.label and metric_label(f"layer3.{m.name}") == f"{m.label} (layer3)"
        assert lens_metric(m.name) is m and m.format(float("nan")) == "-"
    assert lens_metric("top1").format(0.25) == "25.0%" and lens_metric("nll").format(1.23456) == "1.235"
    assert metric_label("top1_agreement") == "top-1 agreement with the original"  # the data floor's names still
