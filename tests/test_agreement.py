"""The pure agreement metrics against scipy/numpy: KL, top-1 agreement, cosine; sums independent of batching and
chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import rel_entr, softmax

from bertscope.lens import agreement
from bertscope.models import families
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


# --- agreement with the final layer (the lens) ------------------------------------------------


def test_final_agreement_by_hand() -> None:
    top1 = torch.tensor([[1, 2, 3, 4],    # equals the last row at positions 0, 2, 3
                         [1, 5, 0, 0],    # at positions 0, 1
                         [9, 9, 9, 9],    # nowhere
                         [1, 5, 3, 4]])   # the final layer itself
    assert agreement.final_agreement(top1).tolist() == [0.75, 0.5, 0.0, 1.0]
    assert agreement.agrees_with_final(top1[1], top1[-1]).tolist() == [True, True, False, False]
    assert agreement.final_agreement(torch.tensor([[7, 8]])).tolist() == [1.0]
    assert np.isnan(agreement.final_agreement(torch.zeros(3, 0, dtype=torch.long)).numpy()).all()
    with pytest.raises(ValueError):
        agreement.final_agreement(torch.tensor([1, 2]))
    with pytest.raises(ValueError):
        agreement.agrees_with_final(torch.tensor([1, 2]), torch.tensor([1, 2, 3]))


def test_final_agreement_of_a_random_bert_against_its_own_masked_lm_outputs(bert_tokenizer) -> None:
    """Reference: the Hugging Face model's own head module (``model.cls``) on each hidden state and its own logits at
    the last layer; the lens path (families.mlm_head_parts + lens.head_top1) must give the same top-1 ids."""
    from bertscope.lens.metrics import head_top1

    model = tiny_model("bert", num_layers=4)
    enc = bert_tokenizer(["The cat sat on the mat.", "Rivers flow to the sea, slowly."], padding=True,
                         return_tensors="pt", return_special_tokens_mask=True)
    keep = enc["attention_mask"].bool() & ~enc["special_tokens_mask"].bool()
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True)
        hf = [model.cls(h)[keep].argmax(-1) for h in out.hidden_states[:-1]] + [out.logits[keep].argmax(-1)]
        head = families.mlm_head_parts(model)
        depth = len(out.hidden_states) - 1
        ours = [head_top1(head, h[keep], is_last_layer=layer == depth, chunk_size=3)
                for layer, h in enumerate(out.hidden_states)]
    for layer, (a, b) in enumerate(zip(hf, ours)):
        assert torch.equal(a, b), layer
    reference = [float((a.numpy() == hf[-1].numpy()).mean()) for a in hf]
    np.testing.assert_allclose(agreement.final_agreement(torch.stack(ours)).numpy(), reference)
    assert reference[-1] == 1.0 and min(reference) < 1.0  # a random model's layers disagree somewhere
