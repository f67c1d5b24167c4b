"""What the quality gates measure: a model and its baseline on the same data, in one pass.

Per batch both models run on the same inputs, so their numbers are paired exactly:
- top-1 accuracy (%) and mean cross-entropy, when the data has labels and the outputs are logits
  shaped (batch, classes);
- cosine similarity of each sample's flattened output to the baseline's, averaged over samples (a model
  with one output per sample, a score, is compared on the vector of its scores over the samples); for
  label-free models (embeddings, features) this says how much of the function the compact one kept.
  A token model whose output has hidden states but no logits (a Hugging Face encoder) is compared on
  its sentence embedding (pooled as its sentence-transformers folder says), as `dpm prune` reports its val cosine.
Inputs may be tensors or dicts of them (token batches), passed as keyword arguments.
Evaluation is in eval mode under torch.inference_mode; the models are left as they were.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.labels import class_counts, label_problem

from ..batch import batch_size, call_model, describe, move
from ..errors import InputError
from ..pooling import pooling_of


@dataclass
class Scores:
    top1: float | None  # % (labelled data only)
    loss: float | None  # mean cross-entropy (labelled data only)


@dataclass
class Quality:
    data: str  # what was evaluated: source and part
    samples: int
    labeled: bool
    model: Scores
    baseline: Scores | None = None
    cosine: float | None = None  # mean per-sample cosine of model vs baseline outputs

    @property
    def accuracy_drop(self) -> float | None:
        """Top-1 points lost against the baseline (negative: the model is better)."""
        if self.baseline is None or self.model.top1 is None or self.baseline.top1 is None:
            return None
        return self.baseline.top1 - self.model.top1

    @property
    def loss_increase(self) -> float | None:
        if self.baseline is None or self.model.loss is None or self.baseline.loss is None:
            return None
        return self.model.loss - self.baseline.loss


class _Tally:
    def __init__(self) -> None:
        self.correct, self.ce, self.counted = 0, 0.0, 0

    def add(self, out: torch.Tensor, labels: torch.Tensor) -> None:
        """Per example, or per labelled word (token classification: one label per word's first piece)."""
        right, ce, counted = class_counts(out, labels)
        self.correct = None if right is None else self.correct + right  # None: scores (regression)
        self.ce, self.counted = self.ce + ce, self.counted + counted

    def scores(self, n: int) -> Scores:
        """Top-1 (%) and mean cross-entropy; for scores, no top-1 and the mean squared error as the loss."""
        top1 = None if self.correct is None else 100.0 * self.correct / max(self.counted, 1)
        return Scores(top1, self.ce / max(self.counted, 1))


def primary_output(out: Any) -> torch.Tensor:
    """The tensor a model's output stands for: itself, the first of a tuple, or a dict's embedding."""
    if torch.is_tensor(out):
        return out
    if isinstance(out, dict) or hasattr(out, "keys"):
        for key in ("sentence_embedding", "logits", "pooler_output", "last_hidden_state"):
            if key in out and torch.is_tensor(out[key]):
                return out[key]
        out = list(out.values())
    if isinstance(out, (list, tuple)) and out and torch.is_tensor(out[0]):
        return out[0]
    raise InputError(f"the model returned {type(out).__name__}; dpm check compares tensors (or a tuple/dict "
                     "whose first entry is one)")


@torch.inference_mode()
def measure_quality(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    baseline: nn.Module | None = None,
    labels_needed: bool = False,
    description: str = "",
    device: torch.device | str = "cpu",
    progress: Any = None,
) -> Quality:
    """Evaluate `model` (and `baseline`) on `batches` of `x` or `(x, y)`. `progress(n)` is called with
    the number of samples after each batch."""
    models = [m for m in (model, baseline) if m is not None]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    tallies = [_Tally() for _ in models]
    pooling = pooling_of(baseline, model)  # one pooling for both: the baseline folder's, as the pruned one copies it
    cosine, seen, labeled, scorable = 0.0, 0, None, True
    scores: list[tuple[torch.Tensor, torch.Tensor]] = []  # single-output models: (model, baseline) per batch
    try:
        for batch in batches:
            x, y = (batch[0], batch[1] if len(batch) > 1 else None) if isinstance(batch, (list, tuple)) else (batch, None)
            x = move(x, device)
            outs, logits = zip(*(_run(m, x, pooling) for m in models))
            labeled = y is not None if labeled is None else labeled and y is not None
            if labeled and scorable:  # accuracy and loss whenever there are labels and logits
                y = y.to(device)
                problem = next((p for p in map(lambda o: label_problem(o, y), outs) if p), None)
                if not all(logits):  # an encoder's sentence embedding is no score per class
                    problem = (f"the model outputs a sentence embedding ({outs[0].shape[-1]} values), not class "
                               "logits: labels cannot score it; load a task head (model.hf.task) or gate on "
                               "--min-cosine")
                if problem and labels_needed:
                    raise InputError(problem)
                scorable = problem is None
                for tally, out in zip(tallies, outs) if scorable else ():
                    tally.add(out, y)
            if baseline is not None:
                a, b = (_unpadded(o, x).flatten(1).float() for o in outs[:2])
                if a.shape != b.shape:
                    raise InputError(f"the model's outputs {tuple(outs[0].shape)} and the baseline's "
                                     f"{tuple(outs[1].shape)} differ in shape; they cannot be compared")
                if a.shape[1] == 1:  # a score per sample: its cosine would be the sign; compare across samples
                    scores.append((a[:, 0].cpu(), b[:, 0].cpu()))
                else:
                    cosine += float(F.cosine_similarity(a, b, dim=1).sum())
            seen += batch_size(x)
            if progress is not None:
                progress(seen)
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
    if seen == 0:
        raise InputError(f"{description or 'the data'}: no samples to evaluate on")
    scored = bool(labeled and scorable)
    if scores:
        mine, theirs = (torch.cat(part) for part in zip(*scores))
        cosine = float(F.cosine_similarity(mine, theirs, dim=0)) * seen
    results = [t.scores(seen) if scored else Scores(None, None) for t in tallies]
    return Quality(description, seen, bool(labeled), results[0], results[1] if baseline is not None else None,
                   cosine / seen if baseline is not None else None)


def _run(model: nn.Module, x: Any, pooling: tuple[str, ...]) -> tuple[torch.Tensor, bool]:
    """What the model is compared on, and whether that is logits (labels can score it)."""
    try:
        return _compared(call_model(model, x), x, pooling)
    except InputError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise InputError(f"the model does not run on the evaluation data ({describe(x)}: "
                         f"{type(err).__name__}: {first}); check --data or the recipe's data") from err


def _compared(out: Any, inputs: Any, pooling: tuple[str, ...]) -> tuple[torch.Tensor, bool]:
    """The output two models are compared on: a token model's sentence embedding (pooled as its
    sentence-transformers folder says, else the attention-mask aware mean) when its output has hidden
    states and neither logits nor a sentence embedding, else `primary_output`; and whether it is logits.
    An embedding scored as logits gave an encoder a top-1 "accuracy" over its 384 dimensions."""
    if hasattr(out, "keys") and "logits" not in out:
        if "sentence_embedding" in out:
            return primary_output(out), False
        from ..training.objective import embedding_of

        embedding = embedding_of(out, inputs, pooling)
        if embedding is not None:
            return embedding, False
    return primary_output(out), True


def _unpadded(out: torch.Tensor, inputs: Any) -> torch.Tensor:
    """Per-token outputs (batch, tokens, ...) with the padded positions zeroed, so that they count in
    neither the dot product nor the norms of the cosine (a decoder's logits at its padding)."""
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    if not torch.is_tensor(mask) or mask.dim() != 2 or out.dim() < 3 or tuple(out.shape[:2]) != tuple(mask.shape):
        return out
    return out * mask.to(out.dtype).reshape(*mask.shape, *([1] * (out.dim() - 2)))
