"""Loss and accuracy against labels, in every form text data gives them (data/text.py): a class per
example, a class per position (labels per word, IGNORE where unlabelled: data/words.py), a score per
example (a head with one output: squared error, as transformers treats num_labels 1), or several classes
per example (multi-hot rows: binary cross-entropy per class, as for multi_label_classification).
Training (`class_loss`), evaluation and `dpm check` (`class_counts`) and `dpm plan` share them; they live
beside the data that defines the forms (the report package, imported by the engine, cannot import training).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .words import IGNORE


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


def label_problem(out: torch.Tensor, labels: torch.Tensor) -> str | None:
    """Why `out` cannot be scored against `labels` as class logits (per example, or per word: (batch,
    tokens, classes) against (batch, tokens)), or None."""
    per_word = out.dim() == 3 and labels.dim() == 2
    if (out.dim() != 2 and not per_word) or out.shape[0] != labels.shape[0]:
        return (f"accuracy and loss gates need logits shaped (batch, classes); the model returned "
                f"{tuple(out.shape)}; use --min-cosine for models without class outputs")
    if is_regression(out, labels):
        return None  # a score per example: compared by squared error
    if is_multi_label(out, labels):  # several classes per example
        return None if labels.shape[1] <= out.shape[1] else (
            f"the data has {labels.shape[1]} classes but the model outputs {out.shape[1]} logits; "
            "evaluate on data made for this model")
    if labels.is_floating_point():
        return (f"the data's labels are numbers, not class indices, but the model outputs {out.shape[-1]} "
                "logits; give class indices, or a model with one output (num_labels 1)")
    if labels.numel() and int(labels.max()) >= out.shape[-1]:
        return (f"the data has class {int(labels.max())} but the model outputs {out.shape[-1]} logits; "
                "evaluate on data made for this model")
    return None


def scorable(logits: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether `labels` can score `logits` at all. Text labelled for another task (a classification
    dataset used as a language model's calibration text) cannot, and is distilled on without them."""
    return label_problem(logits, labels) is None


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
