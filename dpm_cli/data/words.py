"""Labels per word, for token classification (named entities, parts of speech): a JSON line whose text
field is a list of words and whose label field is a list of labels, one per word, as Hugging Face
datasets hold them (`{"tokens": ["EU", "rejects", ...], "ner_tags": [3, 0, ...]}`).

Each word is tokenised to one or more pieces; its label goes to its first piece, and every other
position (later pieces, special tokens, padding) gets IGNORE, which cross-entropy and accuracy skip:
transformers' own token-classification recipe. Scores are then per labelled word, not per example.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

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


def is_regression(logits: torch.Tensor, labels: torch.Tensor) -> bool:
    """One output per example and a number per example: a score to fit (STS similarity, a reranker's
    relevance), as transformers treats num_labels 1, not a class."""
    return logits.dim() == 2 and logits.shape[-1] == 1 and labels.dim() == 1


def is_multi_label(logits: torch.Tensor, labels: torch.Tensor) -> bool:
    """Several classes per example: multi-hot rows (batch, classes), each class decided by its sigmoid."""
    return logits.dim() == 2 and labels.dim() == 2 and labels.is_floating_point()


def _multi_hot(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The rows widened with zeros to the model's classes (a class no example has)."""
    return F.pad(labels.float(), (0, logits.shape[-1] - labels.shape[-1])) if labels.shape[-1] < logits.shape[-1] else labels.float()


def class_counts(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int | None, float, int]:
    """(correct, summed cross-entropy, labels counted) of logits against class labels: one per example
    ((batch, classes) and (batch,)) or one per position ((batch, tokens, classes) and (batch, tokens),
    IGNORE skipped). A score (`is_regression`): (None, summed squared error, examples). Several classes
    per example (`is_multi_label`): class decisions right, summed binary cross-entropy, decisions."""
    if is_regression(logits, labels):
        return None, float(F.mse_loss(logits[:, 0].float(), labels.float(), reduction="sum")), len(labels)
    if is_multi_label(logits, labels):  # each class decision counts: accuracy per (example, class)
        target = _multi_hot(logits, labels)
        correct = int(((logits > 0) == (target > 0.5)).sum())
        bce = float(F.binary_cross_entropy_with_logits(logits.float(), target, reduction="sum"))
        return correct, bce, target.numel()
    logits, labels = _flat(logits, labels)
    kept = labels != IGNORE
    correct = int(((logits.argmax(dim=-1) == labels) & kept).sum())
    ce = float(F.cross_entropy(logits.float(), labels, reduction="sum", ignore_index=IGNORE))
    return correct, ce, int(kept.sum())


def class_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labels counted (per example, or per labelled position); a score's
    mean squared error."""
    if is_regression(logits, labels):
        return F.mse_loss(logits[:, 0].float(), labels.float())
    if is_multi_label(logits, labels):
        return F.binary_cross_entropy_with_logits(logits.float(), _multi_hot(logits, labels))
    logits, labels = _flat(logits, labels)
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE)


def _flat(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.dim() == 3 and labels.dim() == 2:
        positions = min(logits.shape[1], labels.shape[1])
        return logits[:, :positions].flatten(0, 1), labels[:, :positions].flatten()
    return logits, labels
