"""Training objectives: cross-entropy with labels, or distillation from the original (dense) model.

Distillation needs no labels, so a user with only unlabeled calibration data can still prune. It
matches the teacher's logits (KL at a temperature), or, for encoders without logits, the sentence
embedding (pooled as the folder's sentence-transformers pipeline pools, `pooling.py`; else the
attention-mask aware mean), the last hidden states
and/or every transformer block's output (`layers`), with cosine and/or mean squared error. Outputs may be tensors or Hugging Face `ModelOutput`s.
"""
from __future__ import annotations

import copy
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.labels import class_loss
from ..batch import call_model, logit_fields, logits_of
from ..errors import ConfigError
from ..pooling import MEAN, pool, pooling_of
from .taps import find_blocks, tap_blocks


class Forward(NamedTuple):
    """A model's outputs and, when distilling on `layers`, every block's output of that forward pass."""
    outputs: Any
    layers: list[torch.Tensor | None] | None = None


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
    """The last hidden states (batch, tokens, width) of an output, if it has them. A convolutional
    network's feature map (batch, channels, height, width: ResNet, ConvNeXt) counts its positions as
    tokens, (batch, height x width, channels), so its embedding is the global average pool."""
    hidden = None
    if isinstance(out, dict):
        states = out.get("hidden_states")
        hidden = out.get("last_hidden_state") if torch.is_tensor(out.get("last_hidden_state")) else \
            states[-1] if isinstance(states, (tuple, list)) and states else None
    elif torch.is_tensor(out) and out.dim() == 3:
        hidden = out
    if torch.is_tensor(hidden) and hidden.dim() == 4:
        return hidden.flatten(2).transpose(1, 2)
    return hidden


def mask_of(inputs: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The attention mask of a token batch as (batch, tokens, 1) floats; all ones without one."""
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    if mask is None:
        return hidden.new_ones(hidden.shape[:2]).unsqueeze(-1)
    return mask[:, : hidden.shape[1]].unsqueeze(-1).to(hidden.dtype)


def mean_pool(hidden: torch.Tensor, inputs: Any) -> torch.Tensor:
    """Sentence embeddings: the mean of the hidden states over the tokens the attention mask keeps."""
    return pool(hidden, inputs, MEAN)


def embedding_of(out: Any, inputs: Any, pooling: tuple[str, ...] = MEAN) -> torch.Tensor | None:
    """The sentence embedding of a token model's output, pooled as its sentence-transformers folder says
    (`pooling_of(model)`; the attention-mask aware mean without one)."""
    hidden = hidden_of(out)
    return pool(hidden.float(), inputs, pooling) if hidden is not None else None


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
        self.wants_layers = self.teacher is not None and "layers" in self.targets
        self.pooling = pooling_of(teacher)  # the embedding target: as the model's own pipeline pools
        # classes decided one by one (a sigmoid each, not a softmax over them): a softmax KL cannot see a
        # shift of every logit, which changes every decision, so their logits are matched directly
        self.independent = getattr(getattr(teacher, "config", None), "problem_type", None) == "multi_label_classification"
        if self.wants_layers:
            find_blocks(self.teacher)  # refused here, before training, when there are no blocks

    def to(self, device: torch.device) -> "Objective":
        if self.teacher is not None:
            self.teacher.to(device)
        return self

    def forward(self, model: nn.Module, inputs: Any) -> Forward:
        """Call the model; with the `layers` target also capture every block's output."""
        if not self.wants_layers:
            return Forward(call_model(model, inputs))
        with tap_blocks(model) as layers:
            outputs = call_model(model, inputs)
        return Forward(outputs, layers)

    def teacher_outputs(self, inputs: Any) -> Forward:
        with torch.no_grad():
            return self.forward(self.teacher, inputs)

    def __call__(self, outputs: Any, labels: torch.Tensor | None, inputs: Any,
                 teacher: Forward | None = None) -> torch.Tensor:
        """The loss of `outputs` (a Forward, or a model's plain outputs when not distilling on layers)."""
        student = outputs if isinstance(outputs, Forward) else Forward(outputs)
        loss = torch.zeros((), device=_device(student.outputs))
        if self.distill_weight < 1.0:
            loss = (1.0 - self.distill_weight) * class_loss(need_logits(student.outputs), labels)
        if self.teacher is not None:
            target = teacher if teacher is not None else self.teacher_outputs(inputs)
            loss = loss + self.distill_weight * self.distill(student, target, inputs)
        return loss

    def distill(self, student: Forward, target: Forward, inputs: Any) -> torch.Tensor:
        terms = []
        outputs = student.outputs
        for kind in self.targets:
            if kind == "layers":
                terms.append(self._layers(student, target, inputs))
                continue
            if kind == "auto":
                kind = "logits" if logit_fields(outputs) else "embedding"
            if kind == "logits":
                mine, theirs = logit_fields(outputs) or [need_logits(outputs)], logit_fields(target.outputs)
                terms.append(torch.stack([self._logit_kl(a, b, inputs) for a, b in zip(mine, theirs)]).mean())
                continue
            mine, theirs = hidden_of(outputs), hidden_of(target.outputs)
            if mine is None or theirs is None:
                raise ConfigError(f"objective.targets {kind}: the model's output has no hidden states "
                                  "(last_hidden_state); load it with model.hf.task: AutoModel or distill logits")
            if kind == "embedding":
                terms.append(self._distance(pool(mine.float(), inputs, self.pooling),
                                            pool(theirs.float(), inputs, self.pooling)))
            else:
                terms.append(self._distance(mine.float(), theirs.float(), mask_of(inputs, mine)))
        return torch.stack(terms).mean()

    def _logit_kl(self, student: torch.Tensor, teacher: torch.Tensor, inputs: Any) -> torch.Tensor:
        """KL(teacher || student) at the temperature, scaled by T². Per-token logits (batch, tokens, classes)
        are averaged over the tokens the attention mask keeps: padding is not distilled. A single output
        (a regression head: a cross-encoder's relevance score) has no distribution, so its KL is always 0:
        it is matched by squared error instead, and so are a multi-label head's logits (`independent`)."""
        t = self.temperature
        if student.shape[-1] == 1 or self.independent:
            error = (student.float() - teacher.float()).pow(2).mean(dim=-1)
            if error.dim() == 1:
                return error.mean()
            weights = mask_of(inputs, error).float()[..., 0]
            return (error * weights).sum() / weights.sum().clamp_min(1.0)
        kl = F.kl_div(F.log_softmax(student.float() / t, dim=-1), F.log_softmax(teacher.float() / t, dim=-1),
                      reduction="none", log_target=True).sum(dim=-1) * t * t
        if kl.dim() == 1:
            return kl.mean()
        weights = mask_of(inputs, kl).float()[..., 0]
        return (kl * weights).sum() / weights.sum().clamp_min(1.0)

    def _layers(self, student: Forward, target: Forward, inputs: Any) -> torch.Tensor:
        """The mean over blocks of the token-wise distance between each block's outputs."""
        if student.layers is None or target.layers is None:
            raise ConfigError("objective.targets layers: the outputs were computed without layer taps; "
                              "call the model through Objective.forward")
        pairs = list(zip(student.layers, target.layers))
        if not pairs or any(a is None or b is None or a.shape != b.shape for a, b in pairs):
            raise ConfigError("objective.targets layers: a transformer block returned no hidden-state tensor "
                              "of the teacher's shape; use targets: [hidden]")
        return torch.stack([self._distance(a.float(), b.float(), mask_of(inputs, a)) for a, b in pairs]).mean()

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
