"""Training objectives: cross-entropy with labels, or distillation from the original (dense) model.

Distillation needs no labels, so a user with only unlabeled calibration data can still prune. It
matches the teacher's logits (KL at a temperature), or, for encoders without logits, the mean-pooled
sentence embedding (attention-mask aware, as sentence-transformers pools) and/or the last hidden
states, with cosine and/or mean squared error. Outputs may be tensors or Hugging Face `ModelOutput`s.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..batch import call_model, logits_of
from ..errors import ConfigError


def split_batch(batch: Any) -> tuple[Any, torch.Tensor | None]:
    """(inputs, labels or None): a batch is `(inputs, labels)`, or inputs alone (a tensor or a dict)."""
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def need_logits(out: Any) -> torch.Tensor:
    logits = logits_of(out)
    if logits is None:
        raise ConfigError("the model returns no logits (e.g. a bare encoder), so there is nothing to classify "
                          "or to distill with targets: [logits]; use a task head (model.hf.task) or "
                          "objective.kind: distill with targets: [embedding]")
    return logits


def hidden_of(out: Any) -> torch.Tensor | None:
    """The last hidden states (batch, tokens, width) of an output, if it has them."""
    if isinstance(out, dict):
        if torch.is_tensor(out.get("last_hidden_state")):
            return out["last_hidden_state"]
        states = out.get("hidden_states")
        return states[-1] if isinstance(states, (tuple, list)) and states else None
    if torch.is_tensor(out) and out.dim() == 3:
        return out
    return None


def mask_of(inputs: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The attention mask of a token batch as (batch, tokens, 1) floats; all ones without one."""
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    if mask is None:
        return hidden.new_ones(hidden.shape[:2]).unsqueeze(-1)
    return mask[:, : hidden.shape[1]].unsqueeze(-1).to(hidden.dtype)


def mean_pool(hidden: torch.Tensor, inputs: Any) -> torch.Tensor:
    """Sentence embeddings: the mean of the hidden states over the tokens the attention mask keeps."""
    mask = mask_of(inputs, hidden)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)


def embedding_of(out: Any, inputs: Any) -> torch.Tensor | None:
    hidden = hidden_of(out)
    return mean_pool(hidden.float(), inputs) if hidden is not None else None


class Objective:
    """loss(model outputs, labels, inputs). Holds a frozen copy of the dense model when distilling."""

    def __init__(self, kind: str, *, teacher: nn.Module | None = None, temperature: float = 4.0,
                 distill_weight: float = 0.0, labeled: bool = True, targets: tuple[str, ...] = ("auto",),
                 loss: str = "cosine"):
        if kind == "cross_entropy" and not labeled:
            raise ConfigError("objective.kind cross_entropy needs labels but the data has none; "
                              "use objective.kind: distill")
        self.kind, self.temperature, self.targets, self.loss = kind, temperature, tuple(targets), loss
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

    def teacher_outputs(self, inputs: Any) -> Any:
        with torch.no_grad():
            return call_model(self.teacher, inputs)

    def __call__(self, outputs: Any, labels: torch.Tensor | None, inputs: Any, teacher: Any = None) -> torch.Tensor:
        loss = torch.zeros((), device=_device(outputs))
        if self.distill_weight < 1.0:
            loss = (1.0 - self.distill_weight) * F.cross_entropy(need_logits(outputs).float(), labels)
        if self.teacher is not None:
            target = teacher if teacher is not None else self.teacher_outputs(inputs)
            loss = loss + self.distill_weight * self.distill(outputs, target, inputs)
        return loss

    def distill(self, outputs: Any, target: Any, inputs: Any) -> torch.Tensor:
        terms = []
        for kind in self.targets:
            if kind == "auto":
                kind = "logits" if logits_of(outputs) is not None else "embedding"
            if kind == "logits":
                t = self.temperature
                terms.append(F.kl_div(F.log_softmax(need_logits(outputs).float() / t, dim=-1),
                                      F.log_softmax(need_logits(target).float() / t, dim=-1),
                                      reduction="batchmean", log_target=True) * t * t)
                continue
            student, teacher = hidden_of(outputs), hidden_of(target)
            if student is None or teacher is None:
                raise ConfigError(f"objective.targets {kind}: the model's output has no hidden states "
                                  "(last_hidden_state); load it with model.hf.task: AutoModel or distill logits")
            if kind == "embedding":
                terms.append(self._distance(mean_pool(student.float(), inputs), mean_pool(teacher.float(), inputs)))
            else:
                terms.append(self._distance(student.float(), teacher.float(), mask_of(inputs, student)))
        return torch.stack(terms).mean()

    def _distance(self, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Cosine distance and/or MSE along the last dim, averaged over rows (masked tokens left out)."""
        parts = []
        weights = mask.squeeze(-1) if mask is not None else torch.ones(a.shape[:-1], device=a.device)
        total = weights.sum().clamp_min(1.0)
        if self.loss in ("cosine", "both"):
            parts.append(((1 - F.cosine_similarity(a, b, dim=-1)) * weights).sum() / total)
        if self.loss in ("mse", "both"):
            parts.append(((a - b).pow(2).mean(dim=-1) * weights).sum() / total)
        return sum(parts)


def _device(outputs: Any) -> torch.device:
    from ..batch import tensors

    found = tensors(outputs)
    return found[0].device if found else torch.device("cpu")
