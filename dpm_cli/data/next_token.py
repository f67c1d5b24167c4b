"""Next-token labels: how a language model is scored on plain text, without labels of its own.

Position t of a text is labelled with the token at t + 1 when both are real tokens (padding and the
last position get IGNORE), which is the cross-entropy transformers computes for a causal LM's `labels`
and what perplexity (exp of the mean loss per token) is reported from. Scored through labels.py's
per-position form, as labels per word are, so `dpm check`'s accuracy and loss gates work on a decoder
with the text it was pruned on: next-token top-1 and the mean cross-entropy per token.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
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


def is_language_model(recipe: Any | None, given: list[str | Path]) -> bool:
    """Whether the model generates text token by token (a causal LM, or a vision-language model read on
    text), from its folder's config.json and the recipe's model.hf.task: known before any model loads."""
    from ..hf import is_hf_folder
    from ..hf.tasks import AUTO, loads_as

    hf = getattr(getattr(recipe, "model", None), "hf", None)
    named = getattr(hf, "path", None)
    folder = next((f for f in (named, *given) if f is not None and is_hf_folder(f)), None)
    if folder is None:
        return False
    return loads_as(folder, getattr(hf, "task", AUTO) if named is not None else AUTO, LANGUAGE_MODEL_TASKS)


def relabels(dataset: Any, labeled: bool) -> bool:
    """Whether `dataset` is token texts a language model is scored on by their next tokens: unlabelled,
    or labelled per example (which a logit per token cannot score); labels per position are kept."""
    from .text import TokenDataset

    if not isinstance(dataset, TokenDataset) or "input_ids" not in dataset.encoded:
        return False
    return not (labeled and torch.is_tensor(dataset.labels) and dataset.labels.dim() == 2)


def with_next_token_labels(dataset: Any) -> Any:
    """The token texts of `dataset` (a TokenDataset), labelled with their next tokens."""
    from .text import TokenDataset

    encoded = dataset.encoded
    return TokenDataset(encoded, next_token_labels(encoded["input_ids"], encoded.get("attention_mask")))


def described(description: str, labeled: bool) -> str:
    """A data description ("..., unlabeled") saying how its texts are now labelled."""
    if not labeled and "unlabeled" in description:
        return description.replace("unlabeled", DESCRIPTION, 1)
    return f"{description}, {DESCRIPTION}" + (" in place of its labels" if labeled else "")


def labelled_by_next_tokens(bundle: Any) -> tuple[Any, bool]:
    """(a text DataBundle whose examples are labelled with their next tokens, whether labels it had were
    replaced); a bundle that is not token texts to relabel (`relabels`) is returned as it was."""
    if not (relabels(bundle.train, bundle.labeled) and relabels(bundle.val, bundle.labeled)):
        return bundle, False
    relabelled = dataclasses.replace(bundle, train=with_next_token_labels(bundle.train),
                                     val=with_next_token_labels(bundle.val), labeled=True, num_classes=None, next_token=True,
                                     description=described(bundle.description, bundle.labeled))
    return relabelled, bundle.labeled
