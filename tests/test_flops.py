"""The model-FLOP count against a count by hand for a tiny configuration."""

from __future__ import annotations

from types import SimpleNamespace

from bertscope.models.flops import EncoderShape, encoder_forward_flops, linear_flops, training_flops


def test_hand_count_tiny_config() -> None:
    # h=2, f=4, 2 layers, sequences of 1 and 3 real tokens.
    # Per token per layer: Q,K,V,O: 4 matmuls of [1x2]@[2x2] = 4 * 2*2*2 = 32; FFN 2*2*4 (up) + 2*4*2 (down) = 32
    # -> 64 per token; attention per sequence: QK^T 2*n*n*h + PV 2*n*n*h = 4*n*n*2 = 8*n*n.
    per_layer = 64 * (1 + 3) + 8 * (1 * 1 + 3 * 3)
    shape = EncoderShape(layers=2, hidden=2, intermediate=4)
    assert encoder_forward_flops(shape, [1, 3]) == 2 * per_layer == 672
    assert encoder_forward_flops(shape, [1, 3], layers=1) == per_layer
    assert training_flops(672) == 3 * 672


def test_padding_is_not_counted_and_order_does_not_matter() -> None:
    shape = EncoderShape(layers=3, hidden=8, intermediate=32)
    assert encoder_forward_flops(shape, [5, 2, 7]) == encoder_forward_flops(shape, [7, 5, 2])
    assert encoder_forward_flops(shape, [5, 2]) < encoder_forward_flops(shape, [5, 5])


def test_from_config_bert_and_distilbert_names() -> None:
    bert = SimpleNamespace(num_hidden_layers=12, hidden_size=768, intermediate_size=3072)
    distil = SimpleNamespace(n_layers=6, dim=768, hidden_dim=3072)
    assert EncoderShape.from_config(bert) == EncoderShape(12, 768, 3072)
    assert EncoderShape.from_config(distil) == EncoderShape(6, 768, 3072)
    assert linear_flops(10, 768, 2) == 2 * 10 * 768 * 2


def _tiny_bert(attention: str):  # type: ignore[no-untyped-def]
    import transformers

    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                     intermediate_size=64, vocab_size=100)
    return transformers.BertModel._from_config(config, attn_implementation=attention, add_pooling_layer=False)


def test_forward_and_training_counts_equal_torchs_flop_counter() -> None:
    """An independent count: torch's FlopCounterMode over the Hugging Face model itself (eager attention, whose
    matrix products it sees), one unpadded sequence at a time; the backward of every matrix product is 2x its
    forward, hence training = 3x forward."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = _tiny_bert("eager").eval()
    shape = EncoderShape.from_config(model.config)
    for n in (1, 5, 9):
        ids = torch.randint(5, 100, (1, n), generator=torch.Generator().manual_seed(n))
        with FlopCounterMode(display=False) as counted, torch.no_grad():
            model(input_ids=ids)
        assert counted.get_total_flops() == encoder_forward_flops(shape, [n])
        with FlopCounterMode(display=False) as counted:
            model(input_ids=ids).last_hidden_state.sum().backward()
        assert counted.get_total_flops() == training_flops(encoder_forward_flops(shape, [n]))
