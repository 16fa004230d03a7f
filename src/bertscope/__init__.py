"""bertscope: look inside BERT-family encoders (layers, token vectors, hidden dimensions) and exploit what you find."""

from __future__ import annotations

__version__ = "0.2.0"

from bertscope import api

__all__ = ["__version__", "api"]
