"""Re-estimating BatchNorm running statistics after channels reached zero.

When structures decay, the running mean/var that BatchNorm layers tracked are stale, and eval accuracy
can collapse although the train-mode network is fine (DPM_SPEC.md: 24% -> 93-96% after re-estimation).
The equivalence check cannot see this: the decayed and compact models share the stale statistics.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn as nn


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any], max_batches: int = 20,
                          forward: Callable[[nn.Module, Any], Any] | None = None) -> int:
    """Reset every BatchNorm's statistics and re-estimate them as a cumulative average over batches.

    `batches` yields model inputs (or (inputs, labels) pairs; the first element is used). Returns the
    number of batches used. The model's mode and each layer's momentum are restored afterwards.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        return 0
    saved = [(m, m.momentum) for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None = cumulative moving average: every batch weighs the same
    model.train()
    used = 0
    try:
        for batch in batches:
            if used >= max_batches:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            forward(model, inputs) if forward else model(inputs)
            used += 1
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train(was_training)
    return used
