"""Projected MACs, parameters and channels of the model once a set of structures is removed.

The budget is always against the ORIGINAL model, and MACs follow the project's one convention, that
of `dpm report` (`dpm_cli.report.count_model`): multiply-accumulates of conv, linear, matmul and
attention; norms, activations and bias adds count zero. Removing channels shrinks a conv's or linear's
weight along its out and/or in dims, and its MACs are proportional to the weight's size, so each
layer's MACs scale exactly with the kept fraction of its weight. MACs outside conv/linear layers
(attention matmuls) count as unchanged, except for a group of attention heads (`macs_module`): the
matmuls of its attention module scale with the number of heads, so each head carries 1/H of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn as nn

from ..report.counting import count_model
from .structures import GroupSlices

Key = tuple[int, int]  # (group index, structure): a channel, or a unit of channels (GroupSlices.unit_of)


@dataclass
class Totals:
    macs: float
    params: float
    channels: int


class CostModel:
    """Incremental projection of the model's cost under a growing set of removed structures."""

    def __init__(self, model: nn.Module, example_inputs: Any, groups: list[GroupSlices], *,
                 count_head_channels: bool = True):
        """`count_head_channels=False`: the channels budget counts only the structures that are not
        attention heads (when DPMConfig.head_ratio fixes the heads, the budget is about the rest)."""
        count = count_model(model, example_inputs)
        per_sample = 1.0 / _batch_size(example_inputs)
        counted = [count_head_channels or g.kind != "heads" for g in groups]
        self.original = Totals(count.macs * per_sample, float(count.params),
                               sum(g.channels for g, c in zip(groups, counted) if c))
        self._param_size: dict[int, torch.Size] = {}
        # MACs of each conv/linear, keyed by its weight; everything else (attention matmuls, ...) is fixed
        self._param_macs: dict[int, float] = {}
        for row in count.layers:
            weight = getattr(model.get_submodule(row.name), "weight", None) if row.name else None
            if isinstance(weight, nn.Parameter) and row.macs:
                self._param_macs[id(weight)] = row.macs * per_sample
        row_macs = {row.name: row.macs * per_sample for row in count.layers}
        # per (group, structure): the (param id, dim, count) entries that removing it takes away
        self._touches: list[list[list[tuple[int, int, int]]]] = []
        self._sizes: list[list[int]] = []  # channels per structure
        self._extra: list[float] = []  # MACs outside conv/linear weights that one structure carries
        for g, counts_channels in zip(groups, counted):
            unit_of = g.unit_index()
            per_unit: list[list[tuple[int, int, int]]] = [[] for _ in range(g.n_units)]
            for s, counts in g.removal_counts():
                self._param_size[id(s.param)] = s.param.shape
                counts = torch.zeros(g.n_units, dtype=torch.long).index_add_(0, unit_of, counts)
                for u in torch.nonzero(counts).flatten().tolist():
                    per_unit[u].append((id(s.param), s.dim, int(counts[u])))
            self._touches.append(per_unit)
            sizes = torch.bincount(unit_of, minlength=g.n_units)
            self._sizes.append((sizes if counts_channels else torch.zeros_like(sizes)).tolist())
            self._extra.append(sum(row_macs.get(n, 0.0) for n in g.macs_modules) / g.n_units)
        self._unit_costs: dict[str, list[float]] = {}
        self.reset()

    def reset(self) -> None:
        self._removed: dict[tuple[int, int], int] = {}
        self._frac: dict[int, float] = {}  # kept fraction of each weight
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
        self.remove_many((key,), sign)

    def unit_costs(self, kind: str) -> list[float]:
        """Per group, what removing one of its structures from the full model saves, as a fraction of
        the original model in `kind` units (structures of one group cost the same, up to concat maps)."""
        if kind not in self._unit_costs:
            state = self.copy_state()
            costs = []
            for gi in range(len(self._touches)):
                self.reset()
                self.remove((gi, 0))
                costs.append(1.0 - self.kept(kind))
            self.restore_state(state)
            self._unit_costs[kind] = costs
        return self._unit_costs[kind]

    def remove_many(self, keys: Iterable[Key], sign: int = 1) -> None:
        """`remove` for many structures at once: each weight's kept fraction is recomputed once."""
        touched: set[int] = set()
        count = 0
        extra = 0.0
        for group, unit in keys:
            for pid, dim, n in self._touches[group][unit]:
                self._removed[(pid, dim)] = self._removed.get((pid, dim), 0) + sign * n
                touched.add(pid)
            count += sign * self._sizes[group][unit]
            extra += sign * self._extra[group]
        self.macs -= extra
        for pid in touched:
            old, new = self._frac.get(pid, 1.0), self._kept_fraction(pid)
            self._frac[pid] = new
            self.params += (new - old) * float(torch.Size(self._param_size[pid]).numel())
            self.macs += (new - old) * self._param_macs.get(pid, 0.0)
        self.channels -= count

    def kept(self, kind: str) -> float:
        """The fraction of the original model kept, in the budget's unit."""
        if kind == "macs":
            return self.macs / self.original.macs if self.original.macs else 1.0
        if kind == "params":
            return self.params / self.original.params
        # no channel structure at all (every group is a head, and heads do not count as channels)
        return self.channels / self.original.channels if self.original.channels else 1.0


def _batch_size(example_inputs: Any) -> int:
    first = example_inputs
    while isinstance(first, (tuple, list)):
        first = first[0]
    if isinstance(first, dict):
        first = next(iter(first.values()))
    return int(first.shape[0]) if torch.is_tensor(first) and first.dim() > 0 else 1


def count_macs_params(model: nn.Module, example_inputs: Any) -> tuple[float, float]:
    """Measured MACs per sample and parameters (zeroed weights count as live: measure after compaction)."""
    count = count_model(model, example_inputs)
    return count.macs / _batch_size(example_inputs), float(count.params)
