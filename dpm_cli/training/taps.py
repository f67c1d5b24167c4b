"""Layer taps: the output of every transformer block, captured for layer-wise distillation.

transformers 5's own `output_hidden_states=True` leaves output-capturing hooks (local functions) on the
model, which then cannot be pickled; these hooks are dpm's, live only for one forward pass and are
removed even when it fails.
"""
from __future__ import annotations

import contextlib
from functools import partial
from typing import Any, Iterator

import torch
import torch.nn as nn

from ..errors import ConfigError


def find_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's transformer blocks: the longest list of same-class modules (its length equals
    `config.num_hidden_layers` when the model has a config), e.g. BERT's `encoder.layer`, Llama's `layers`."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    depth = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0
             and len({type(child) for child in m}) == 1 and (depth is None or len(m) == depth)]
    if not lists:
        raise ConfigError("objective.targets layers: the model has no list of transformer blocks (an "
                          "nn.ModuleList of one block class) to match layer by layer; use targets: [hidden]")
    return list(max(lists, key=len))


def _store(captured: list[torch.Tensor | None], index: int, module: nn.Module, args: Any, output: Any) -> None:
    hidden = output[0] if isinstance(output, (tuple, list)) else output
    captured[index] = hidden if torch.is_tensor(hidden) else None


@contextlib.contextmanager
def tap_blocks(model: nn.Module) -> Iterator[list[torch.Tensor | None]]:
    """Within the block, every forward pass of `model` fills the yielded list with each block's output."""
    blocks = find_blocks(model)
    captured: list[torch.Tensor | None] = [None] * len(blocks)
    handles = [block.register_forward_hook(partial(_store, captured, i)) for i, block in enumerate(blocks)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
