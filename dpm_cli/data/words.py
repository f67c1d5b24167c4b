"""Labels per word, for token classification (named entities, parts of speech): a JSON line whose text
field is a list of words and whose label field is a list of labels, one per word, as Hugging Face
datasets hold them (`{"tokens": ["EU", "rejects", ...], "ner_tags": [3, 0, ...]}`).

Each word is tokenised to one or more pieces; its label goes to its first piece, and every other
position (later pieces, special tokens, padding) gets IGNORE, which cross-entropy and accuracy skip:
transformers' own token-classification recipe. Scores are then per labelled word, not per example
(labels.py).
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import InputError

IGNORE = -100  # torch's cross_entropy ignore_index, and transformers' label for unlabelled positions


def is_words(text: Any) -> bool:
    return isinstance(text, list)


def check_words(path: Any, number: int, words: Any, labels: Any) -> None:
    """A word-level record: a non-empty list of words, and (when labelled) one label per word."""
    if not words or not all(isinstance(w, str) and w.strip() for w in words):
        raise InputError(f"{path}:{number}: a list of words must hold non-empty strings only")
    if labels is not None and (not isinstance(labels, list) or len(labels) != len(words)):
        got = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise InputError(f"{path}:{number}: {len(words)} words but {got} labels; give one label per word")


def aligned_labels(encoding: Any, word_labels: list[list[int]]) -> torch.Tensor:
    """(examples, positions) labels: each word's label at its first piece, IGNORE elsewhere."""
    if not getattr(encoding, "is_fast", False):
        raise InputError("labels per word need a fast tokenizer (tokenizer.json), which maps pieces to words; "
                         "save the folder's tokenizer with a recent transformers")
    rows = []
    for i, labels in enumerate(word_labels):
        row, previous = [], None
        for word in encoding.word_ids(i):
            row.append(labels[word] if word is not None and word != previous else IGNORE)
            previous = word
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)
