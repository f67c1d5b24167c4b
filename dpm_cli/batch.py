"""Model inputs of any kind: a tensor, a tuple of tensors, or a dict passed as keyword arguments.

Token models take `input_ids` (int64) with an `attention_mask`, so nothing here assumes float
inputs or a single tensor. Dicts are keyword arguments (`model(**inputs)`), tuples positional.
Outputs may be a tensor, a tuple, or a dict / Hugging Face `ModelOutput`.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


def call_model(model: nn.Module, inputs: Any) -> Any:
    """model(**inputs) for a dict, model(*inputs) for a tuple or list, else model(inputs)."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def seeded_call(model: nn.Module, inputs: Any, seed: int = 0) -> Any:
    """`call_model` from a fixed random state, restored afterwards. A forward that draws random numbers in
    eval mode (ViT-MAE masks random patches) then gives the same outputs on every call, so two models
    can be compared, and the caller's random stream (training, a resumed run) is left as it was."""
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return call_model(model, inputs)


def move(inputs: Any, device: torch.device | str) -> Any:
    """`inputs` with every tensor moved to `device` (structure and dtypes kept)."""
    if torch.is_tensor(inputs):
        return inputs.to(device)
    if isinstance(inputs, dict):
        return {k: move(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(move(v, device) for v in inputs)
    return inputs


def tensors(inputs: Any) -> list[torch.Tensor]:
    """Every tensor in `inputs`, in order."""
    if torch.is_tensor(inputs):
        return [inputs]
    if isinstance(inputs, dict):
        return [t for v in inputs.values() for t in tensors(v)]
    if isinstance(inputs, (tuple, list)):
        return [t for v in inputs for t in tensors(v)]
    return []


def batch_size(inputs: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor (1 for a scalar or no tensor)."""
    found = tensors(inputs)
    return int(found[0].shape[0]) if found and found[0].dim() > 0 else 1


def first_rows(inputs: Any, n: int) -> Any:
    """The first `n` samples of a batch, same structure."""
    if torch.is_tensor(inputs):
        return inputs[:n]
    if isinstance(inputs, dict):
        return {k: first_rows(v, n) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(first_rows(v, n) for v in inputs)
    return inputs


def describe(inputs: Any) -> str:
    """'input_ids 1x128 int64, attention_mask 1x128 int64' or '1x3x32x32 float32', for messages."""
    def one(t: torch.Tensor) -> str:
        return "x".join(map(str, t.shape)) + f" {str(t.dtype).replace('torch.', '')}"
    if isinstance(inputs, dict):
        return ", ".join(f"{k} {one(v)}" for k, v in inputs.items() if torch.is_tensor(v))
    return ", ".join(one(t) for t in tensors(inputs))


def output_fields(out: Any, prefix: str = "output") -> dict[str, torch.Tensor]:
    """Every tensor in a (nested) tuple/list/dict/ModelOutput, keyed by where it sits: 'output' for a
    tensor, 'output[1]' in a tuple, 'output.logits' in a dict or ModelOutput; other leaves are skipped."""
    if torch.is_tensor(out):
        return {prefix: out}
    fields: dict[str, torch.Tensor] = {}
    if isinstance(out, dict):  # ModelOutput is an OrderedDict
        for key, value in out.items():
            fields.update(output_fields(value, f"{prefix}.{key}"))
    elif isinstance(out, (tuple, list)):
        for i, value in enumerate(out):
            fields.update(output_fields(value, f"{prefix}[{i}]"))
    return fields


def logits_of(out: Any) -> torch.Tensor | None:
    """The logits of an output: the tensor itself, a `logits` field, or None (e.g. a bare encoder)."""
    if torch.is_tensor(out):
        return out
    if isinstance(out, dict):
        value = out.get("logits")
        return value if torch.is_tensor(value) else None
    if isinstance(out, (tuple, list)) and out and torch.is_tensor(out[0]):
        return out[0]
    return None


def logit_fields(out: Any) -> list[torch.Tensor]:
    """What distilling on logits matches: `logits_of`, else a span head's start and end logits (question
    answering: a distribution over the positions each), else nothing."""
    logits = logits_of(out)
    if logits is not None:
        return [logits]
    if isinstance(out, dict) and all(torch.is_tensor(out.get(k)) for k in ("start_logits", "end_logits")):
        return [out["start_logits"], out["end_logits"]]
    return []
