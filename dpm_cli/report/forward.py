"""A model's forward pass on an example input, its failure said in one line with what to change."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn

from ..batch import call_model, describe
from ..errors import DpmError, InputError


def run_forward(model: nn.Module, inputs: Any) -> Any:
    """model(*inputs) or model(**inputs), with a failing forward turned into one clear line."""
    with clear_forward_errors(inputs, model):
        return call_model(model, inputs)


@contextmanager
def clear_forward_errors(inputs: Any, model: nn.Module | None = None) -> Iterator[None]:
    """Turn an error raised by a model's forward pass into one InputError line."""
    try:
        yield
    except DpmError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as err:
        shapes = describe(inputs)
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise InputError(f"the model's forward pass failed on input {shapes}: {first}; "
                         f"{forward_hint(inputs, model)}") from err


def max_positions(config: Any) -> int | None:
    """A model config's (object or config.json dict) max_position_embeddings: the longest token input its
    position table holds, when it states a positive integer."""
    value = config.get("max_position_embeddings") if isinstance(config, dict) else getattr(
        config, "max_position_embeddings", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def forward_hint(inputs: Any, model: nn.Module | None) -> str:
    """What to change: the image shape, or the number of tokens (said with the model's position count when
    the tokens are more than its position table holds, the usual cause)."""
    if not isinstance(inputs, dict):
        return "check --input-shape (batch first, e.g. 1,3,32,32)"
    positions = max_positions(getattr(model, "config", None))
    ids = inputs.get("input_ids")
    tokens = ids.shape[-1] if torch.is_tensor(ids) and ids.dim() == 2 else None
    if positions is not None and tokens is not None and tokens > positions:
        return (f"{tokens} tokens are more than the model's {positions} positions (max_position_embeddings): "
                f"use at most {positions} (model.seq_len, or batch,tokens in --input-shape)")
    return "check the number of tokens (model.seq_len, or batch,tokens in --input-shape)"
