"""Evaluation: top-1 accuracy and cross-entropy for labelled classification, the objective's loss, and
for encoders the cosine of the sentence embedding to the original model's."""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..batch import batch_size, logits_of, move
from ..data.labels import class_counts, scorable
from .objective import Objective, embedding_of, split_batch


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Any], objective: Objective, device: torch.device,
             autocast: Any = None, is_teacher: bool = False) -> dict[str, float]:
    """{"loss": mean objective loss, "top1": accuracy in % and "ce": mean cross-entropy (labelled data
    only; unlike "loss" it leaves out any distillation term, so runs with different objectives compare),
    "cosine": mean cosine between the model's and the original model's sentence embeddings (when
    distilling a model with hidden states), "samples": n}. `is_teacher`: `model` is the objective's
    teacher (the original, before pruning), whose outputs are then not computed twice."""
    was_training = model.training
    model.eval()
    total_loss, total_ce, total_cos, correct, seen, labelled, embedded = 0.0, 0.0, 0.0, 0, 0, 0, 0
    try:
        for batch in loader:
            inputs, labels = split_batch(batch)
            inputs = move(inputs, device)
            labels = labels.to(device) if labels is not None else None
            with autocast() if autocast else _null():
                forward = objective.forward(model, inputs)
            outputs, n = forward.outputs, batch_size(inputs)
            target = None if objective.teacher is None else forward if is_teacher else objective.teacher_outputs(inputs)
            if labels is not None or target is not None:
                total_loss += float(objective(forward, labels, inputs, teacher=target)) * n
            # per example, or per labelled word; a score (regression) has no top-1. Distilling on text
            # labelled for something else (an encoder: no logits; a language model: a logit per token),
            # its labels are not used: scoring them failed the run
            logits = logits_of(outputs) if labels is not None else None
            if logits is not None and (objective.kind == "cross_entropy" or scorable(logits, labels)):
                right, ce, counted = class_counts(logits, labels)
                if right is not None:
                    correct, total_ce, labelled = correct + right, total_ce + ce, labelled + counted
            if target is not None:
                mine, theirs = (embedding_of(o, inputs, objective.pooling) for o in (outputs, target.outputs))
                if mine is not None and theirs is not None:
                    total_cos += float(F.cosine_similarity(mine, theirs, dim=-1).sum())
                    embedded += n
            seen += n
    finally:
        model.train(was_training)
    out = {"loss": total_loss / max(seen, 1), "samples": float(seen)}
    if labelled:
        out["top1"] = 100.0 * correct / labelled
        out["ce"] = total_ce / labelled
    if embedded:
        out["cosine"] = total_cos / embedded
    return out


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
