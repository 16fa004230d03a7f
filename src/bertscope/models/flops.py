"""Model FLOPs of a BERT-family encoder, counted from its configuration and the real (unpadded) token counts.

Why: a speed-up over a baseline says nothing about how far both are from the hardware. Dividing the *model* FLOPs
(the matrix multiplications the model needs for the real tokens, padding excluded) by the wall time gives the
achieved FLOP/s, and its fraction of the machine's measured GEMM peak is the MFU (model FLOPs utilisation).

The count, per sequence of ``n`` real tokens, per layer, hidden size ``h``, feed-forward width ``f``::

    dense:      2 * n * (4 * h * h + 2 * h * f)     # Q, K, V, output projections; FFN up and down
    attention:  2 * 2 * n * n * h                   # Q @ K^T and probabilities @ V, every head together

A forward pass is the sum over layers and sequences; a training step is ``3 x`` the forward (backward = 2 x forward).
Embeddings, layer norms, softmax, GELU and biases are left out (a few per cent at BERT shapes); a head is counted
separately with :func:`linear_flops` (``2 * tokens * in * out``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["EncoderShape", "encoder_forward_flops", "layer_forward_flops", "linear_flops", "training_flops"]


@dataclass(frozen=True)
class EncoderShape:
    """What the count needs from a model configuration."""

    layers: int
    hidden: int
    intermediate: int

    @classmethod
    def from_config(cls, config: Any) -> EncoderShape:
        """From a Hugging Face config (BERT names; DistilBERT's ``n_layers``/``dim``/``hidden_dim`` too)."""
        layers = getattr(config, "num_hidden_layers", None) or config.n_layers
        hidden = getattr(config, "hidden_size", None) or config.dim
        intermediate = getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim", 4 * hidden)
        return cls(int(layers), int(hidden), int(intermediate))


def layer_forward_flops(hidden: int, intermediate: int, lengths: Iterable[int]) -> int:
    """Forward FLOPs of one encoder layer over sequences of the given real lengths."""
    dense_per_token = 2 * (4 * hidden * hidden + 2 * hidden * intermediate)
    return sum(dense_per_token * n + 4 * n * n * hidden for n in lengths)


def encoder_forward_flops(shape: EncoderShape, lengths: Iterable[int], layers: int | None = None) -> int:
    """Forward FLOPs of ``layers`` (default: all) encoder layers over sequences of the given real lengths."""
    depth = shape.layers if layers is None else layers
    return depth * layer_forward_flops(shape.hidden, shape.intermediate, list(lengths))


def training_flops(forward: int) -> int:
    """A training step (forward + backward through the same matmuls) costs three forwards."""
    return 3 * forward


def linear_flops(tokens: int, fan_in: int, fan_out: int) -> int:
    """One dense layer (a head's matmul) applied to ``tokens`` vectors."""
    return 2 * tokens * fan_in * fan_out
