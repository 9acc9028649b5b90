"""Errors of the model layer."""

from __future__ import annotations


class ModelNotFoundError(LookupError):
    """No weights for a model name anywhere the resolver may look; the message says how to provide them."""
