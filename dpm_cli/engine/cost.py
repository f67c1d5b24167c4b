"""Projected MACs, parameters and channels of the model once a set of structures is removed.

The budget is always against the ORIGINAL model. MACs per leaf module come once from torch-pruning's
op counter (`tp.utils.count_ops_and_params`, layer-wise). Removing channels shrinks a module's weight
along its out and/or in dims; a conv's or linear's MACs are proportional to its weight's size (and a
BatchNorm's to its channels), so each module's MACs scale with the kept fraction of its weight. Modules
without a weight (activations, pooling) are counted as unchanged: a small overestimate (< 1% on the
reference nets), which keeps the projection on the safe side of the budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch_pruning as tp

from .structures import GroupSlices

Key = tuple[int, int]  # (group index, channel)


@dataclass
class Totals:
    macs: float
    params: float
    channels: int


class CostModel:
    """Incremental projection of the model's cost under a growing set of removed structures."""

    def __init__(self, model: nn.Module, example_inputs: Any, groups: list[GroupSlices]):
        was_training = model.training
        macs, params, layer_macs, _ = tp.utils.count_ops_and_params(model, example_inputs, layer_wise=True)
        model.train(was_training)  # the counter switches a copy to eval, but be safe
        self.original = Totals(float(macs), float(params), sum(g.channels for g in groups))
        self._param_size: dict[int, torch.Size] = {}
        self._param_macs: dict[int, float] = {}
        leaves = [m for m in model.modules() if next(m.children(), None) is None]
        # Layer-wise counts are summed over the example batch while the total is per sample.
        leaf_sum = sum(float(layer_macs.get(m) or 0.0) for m in leaves)
        per_sample = float(macs) / leaf_sum if leaf_sum else 0.0
        weight_macs = 0.0
        for module in leaves:
            weight = getattr(module, "weight", None)
            if isinstance(weight, nn.Parameter):
                self._param_macs[id(weight)] = float(layer_macs.get(module) or 0.0) * per_sample
                weight_macs += self._param_macs[id(weight)]
        self._fixed_macs = self.original.macs - weight_macs
        # per (group, channel): the (param id, dim, count) entries that removing it takes away
        self._touches: list[list[list[tuple[int, int, int]]]] = []
        for g in groups:
            per_channel: list[list[tuple[int, int, int]]] = [[] for _ in range(g.channels)]
            for s, counts in g.removal_counts():
                self._param_size[id(s.param)] = s.param.shape
                for c in torch.nonzero(counts).flatten().tolist():
                    per_channel[c].append((id(s.param), s.dim, int(counts[c])))
            self._touches.append(per_channel)
        self.reset()

    def reset(self) -> None:
        self._removed: dict[tuple[int, int], int] = {}
        self._frac: dict[int, float] = {}
        self.macs = self.original.macs
        self.params = self.original.params
        self.channels = self.original.channels

    def copy_state(self) -> tuple:
        return dict(self._removed), dict(self._frac), self.macs, self.params, self.channels

    def restore_state(self, state: tuple) -> None:
        removed, frac, self.macs, self.params, self.channels = state
        self._removed, self._frac = dict(removed), dict(frac)

    def _kept_fraction(self, pid: int) -> float:
        size = self._param_size[pid]
        frac = 1.0
        for dim, n in enumerate(size):
            frac *= 1.0 - self._removed.get((pid, dim), 0) / n
        return frac

    def remove(self, key: Key, sign: int = 1) -> None:
        """Account for removing (sign=1) or restoring (sign=-1) one structure."""
        group, channel = key
        touched = set()
        for pid, dim, count in self._touches[group][channel]:
            self._removed[(pid, dim)] = self._removed.get((pid, dim), 0) + sign * count
            touched.add(pid)
        for pid in touched:
            old = self._frac.get(pid, 1.0)
            new = self._kept_fraction(pid)
            self._frac[pid] = new
            numel = float(torch.Size(self._param_size[pid]).numel())
            self.params += (new - old) * numel
            self.macs += (new - old) * self._param_macs.get(pid, 0.0)
        self.channels -= sign

    def kept(self, kind: str) -> float:
        """The fraction of the original model kept, in the budget's unit."""
        if kind == "macs":
            return self.macs / self.original.macs if self.original.macs else 1.0
        if kind == "params":
            return self.params / self.original.params
        return self.channels / self.original.channels


def count_macs_params(model: nn.Module, example_inputs: Any) -> tuple[float, float]:
    """Measured MACs and parameters (zeroed weights count as live: measure after compaction)."""
    was_training = model.training
    macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    model.train(was_training)
    return float(macs), float(params)
