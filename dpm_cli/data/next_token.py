"""Next-token labels: how a language model is scored on plain text, without labels of its own.

Position t of a text is labelled with the token at t + 1 when both are real tokens (padding and the
last position get IGNORE), which is the cross-entropy transformers computes for a causal LM's `labels`
and what perplexity (exp of the mean loss per token) is reported from. Scored through labels.py's
per-position form, as labels per word are, so `dpm check`'s accuracy and loss gates work on a decoder
with the text it was pruned on: next-token top-1 and the mean cross-entropy per token.
"""
from __future__ import annotations

import torch

from .words import IGNORE

DESCRIPTION = "labelled with their next tokens (loss: mean cross-entropy per token; perplexity = exp(loss))"


def next_token_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(texts, tokens) labels: the next token where it and the current one are real, else IGNORE."""
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    labels = torch.full_like(input_ids, IGNORE)
    both = real[:, :-1] & real[:, 1:]
    labels[:, :-1] = torch.where(both, input_ids[:, 1:], torch.full_like(input_ids[:, 1:], IGNORE))
    return labels
