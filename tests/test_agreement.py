"""The pure agreement metrics against scipy/numpy: KL, top-1 agreement, cosine; sums independent of batching and
chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import rel_entr, softmax

from bertscope import agreement, families
from conftest import tiny_model


def test_metrics_match_scipy_and_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 50, generator=g), torch.randn(7, 50, generator=g)
    b[0] = a[0] * 2  # same arg-max, different distribution
    kl = agreement.kl_divergence(a, b).numpy()
    want = rel_entr(softmax(a.double().numpy(), axis=1), softmax(b.double().numpy(), axis=1)).sum(axis=1)
    np.testing.assert_allclose(kl, want, rtol=1e-4, atol=1e-6)
    assert agreement.kl_divergence(a, a).abs().max() < 1e-6
    np.testing.assert_array_equal(agreement.top1_agreement(a, b).numpy(), a.numpy().argmax(1) == b.numpy().argmax(1))
    assert bool(agreement.top1_agreement(a, b)[0])
    x, y = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    cos = (x.numpy() * y.numpy()).sum(1) / np.linalg.norm(x.numpy(), axis=1) / np.linalg.norm(y.numpy(), axis=1)
    np.testing.assert_allclose(agreement.cosine_similarity(x, y).numpy(), cos, rtol=1e-5)


def test_agreement_sums_do_not_depend_on_batching() -> None:
    g = torch.Generator().manual_seed(1)
    agree, kl, cos = torch.rand(20, generator=g) > 0.3, torch.rand(20, generator=g), torch.rand(20, generator=g)
    whole, parts = agreement.AgreementSums(), agreement.AgreementSums()
    whole.add(agree, kl, cos)
    parts.add(agree[:7], kl[:7], cos[:7])
    parts.add(agree[7:], kl[7:], cos[7:])
    assert whole.result().positions == parts.result().positions == 20
    for field in ("top1_agreement", "mean_kl", "mean_cosine"):
        assert getattr(parts.result(), field) == pytest.approx(getattr(whole.result(), field))
    assert whole.result().top1_agreement == pytest.approx(float(agree.float().mean()))
    assert np.isnan(agreement.AgreementSums().result().mean_kl)


def test_chunked_agreement_equals_unchunked() -> None:
    model = tiny_model("bert")
    head = families.mlm_head_parts(model)
    g = torch.Generator().manual_seed(2)
    ha, hb = torch.randn(9, 32, generator=g), torch.randn(9, 32, generator=g)
    small = agreement.agreement_stats(head, ha, head, hb, chunk=2)
    big = agreement.agreement_stats(head, ha, head, hb, chunk=1000)
    for s, b in zip(small, big):
        torch.testing.assert_close(s, b)
