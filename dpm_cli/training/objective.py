"""Training objectives: cross-entropy with labels, or distillation from the original (dense) model.

Distillation needs no labels, so a user with only unlabeled calibration data can still prune.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


class Objective:
    """loss(model outputs, labels, inputs). Holds a frozen copy of the dense model when distilling."""

    def __init__(self, kind: str, *, teacher: nn.Module | None = None, temperature: float = 4.0,
                 distill_weight: float = 0.0, labeled: bool = True):
        if kind == "cross_entropy" and not labeled:
            raise ConfigError("objective.kind cross_entropy needs labels but the data has none; "
                              "use objective.kind: distill")
        self.kind, self.temperature = kind, temperature
        self.distill_weight = 1.0 if kind == "distill" else distill_weight
        self.teacher = None
        if self.distill_weight > 0:
            if teacher is None:
                raise ConfigError("distillation needs the original model as teacher")
            self.teacher = copy.deepcopy(teacher).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)

    def to(self, device: torch.device) -> "Objective":
        if self.teacher is not None:
            self.teacher.to(device)
        return self

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor | None, inputs: torch.Tensor) -> torch.Tensor:
        loss = logits.new_zeros(())
        if self.distill_weight < 1.0:
            loss = (1.0 - self.distill_weight) * F.cross_entropy(logits.float(), labels)
        if self.teacher is not None:
            with torch.no_grad():
                target = self.teacher(inputs).float()
            t = self.temperature
            kd = F.kl_div(F.log_softmax(logits.float() / t, dim=-1), F.log_softmax(target / t, dim=-1),
                          reduction="batchmean", log_target=True) * t * t
            loss = loss + self.distill_weight * kd
        return loss
