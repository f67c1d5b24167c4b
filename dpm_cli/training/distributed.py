"""The seam for data-parallel training. A single process is a world of size one.

`DistContext` answers: which rank am I, is this the main rank (the one that writes files and draws
progress), how do I average a metric across ranks, and how do I reach the bare model inside a
DistributedDataParallel wrapper.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return value
        out = value.detach().clone().float()
        torch.distributed.all_reduce(out)
        return out / self.world_size

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel around the model in a multi-process run; the model itself otherwise."""
        if not self.enabled:
            return model
        return nn.parallel.DistributedDataParallel(model)

    @staticmethod
    def unwrap(model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


SINGLE = DistContext()
