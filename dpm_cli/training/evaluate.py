"""Evaluation: top-1 accuracy and cross-entropy for labelled classification, and the objective's loss."""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .objective import Objective, split_batch


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Any], objective: Objective, device: torch.device,
             autocast: Any = None) -> dict[str, float]:
    """{"loss": mean objective loss, "top1": accuracy in % and "ce": mean cross-entropy (labelled data
    only; unlike "loss" it leaves out any distillation term, so runs with different objectives compare),
    "samples": n}."""
    was_training = model.training
    model.eval()
    total_loss, total_ce, correct, seen, labelled = 0.0, 0.0, 0, 0, 0
    try:
        for batch in loader:
            inputs, labels = split_batch(batch)
            inputs = inputs.to(device)
            labels = labels.to(device) if labels is not None else None
            with autocast() if autocast else _null():
                logits = model(inputs)
            n = inputs.shape[0]
            if labels is not None or objective.teacher is not None:
                total_loss += float(objective(logits, labels, inputs)) * n
            if labels is not None:
                correct += int((logits.argmax(dim=-1) == labels).sum())
                total_ce += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
                labelled += n
            seen += n
    finally:
        model.train(was_training)
    out = {"loss": total_loss / max(seen, 1), "samples": float(seen)}
    if labelled:
        out["top1"] = 100.0 * correct / labelled
        out["ce"] = total_ce / labelled
    return out


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
