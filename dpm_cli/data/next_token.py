"""Next-token labels: how a language model is scored on plain text, without labels of its own.

Position t of a text is labelled with the token at t + 1 when both are real tokens (padding and the
last position get IGNORE), which is the cross-entropy transformers computes for a causal LM's `labels`
and what perplexity (exp of the mean loss per token) is reported from. Scored through labels.py's
per-position form, as labels per word are, so `dpm check`'s accuracy and loss gates work on a decoder
with the text it was pruned on: next-token top-1 and the mean cross-entropy per token.
"""
from __future__ import annotations

import dataclasses
from typing import Any

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


LANGUAGE_MODEL_TASKS = ("AutoModelForCausalLM", "AutoModelForImageTextToText")  # logits for every next token


def labelled_by_next_tokens(bundle: Any) -> tuple[Any, bool]:
    """(a text DataBundle whose examples are labelled with their next tokens, whether labels it had were
    replaced). Labels per example, which a logit per token cannot score, are replaced; labels per position
    are kept, and a bundle that holds no token texts is returned as it was."""
    from .text import TokenDataset

    parts = (bundle.train, bundle.val)
    if not all(isinstance(p, TokenDataset) and "input_ids" in p.encoded for p in parts):
        return bundle, False
    if bundle.labeled and torch.is_tensor(bundle.train.labels) and bundle.train.labels.dim() == 2:
        return bundle, False  # a label per position already

    def relabel(part: Any) -> Any:
        encoded = part.encoded
        return TokenDataset(encoded, next_token_labels(encoded["input_ids"], encoded.get("attention_mask")))

    described = (bundle.description.replace("unlabeled", DESCRIPTION, 1) if not bundle.labeled else
                 f"{bundle.description}, {DESCRIPTION} in place of its labels")
    return dataclasses.replace(bundle, train=relabel(bundle.train), val=relabel(bundle.val), labeled=True,
                               num_classes=None, description=described), bundle.labeled
