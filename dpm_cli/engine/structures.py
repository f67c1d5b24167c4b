"""Prunable groups as per-channel parameter slices.

A torch-pruning `Group` lists every (module, handler, indices) that must shrink together. DPM needs to
read and rescale, for each channel of a group, the joint vector of all coupled slices. `GroupSlices`
turns a group into (parameter, dim, local indices, root channel) tables once, so that the training
hot path is a handful of tensor ops per parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning.pruner import function as tpf

from .conv1d import Conv1DPruner

# Pruners whose handlers touch no parameters (element-wise ops, reshape, concat, split, ...).
_PARAMETER_FREE = (tp.ops.DummyPruner,)
# Layers that normalise ACROSS channels: a zeroed channel still changes their statistics, so removing
# it would change the function. Groups that pass through them are not decayable.
_CROSS_CHANNEL = (nn.LayerNorm, nn.GroupNorm)


@dataclass
class Slice:
    """The entries of `param` along `dim` at `local` belong to the group's channels `root`."""

    param: nn.Parameter
    name: str
    dim: int
    local: torch.Tensor  # long, indices along `dim`
    root: torch.Tensor  # long, the group channel of each local index


@dataclass
class GroupSlices:
    """One prunable dependency group: its root module, channel count and parameter slices."""

    name: str  # the root module's qualified name: stable across graph rebuilds
    root: nn.Module
    channels: int
    slices: list[Slice]
    tp_group: object = field(repr=False)  # the full-index torch-pruning Group, for importance (None: heads)
    # Structures (units): unit_of[c] is the structure of channel c; None = one structure per channel.
    # A structure decays, is selected and removed as one (grouped-conv blocks, attention heads).
    unit_of: torch.Tensor | None = field(default=None, repr=False)
    # Physical removal of a list of channels when torch-pruning cannot do it (attention heads).
    remove: Callable[[list[int]], object] | None = field(default=None, repr=False)
    # a module whose counted MACs scale with the number of structures (several: heads across layers)
    macs_module: str | tuple[str, ...] | None = None
    kind: str = "channels"  # "heads": an attention module's heads (DPMConfig.head_ratio applies)
    # one-channel structures leave in multiples of this (with DPMConfig.round_to: their lcm). Stacked
    # experts: transformers' grouped-matmul kernels need 16-byte-aligned rows, so units go 16 bytes at a time
    block: int = 1

    @property
    def macs_modules(self) -> tuple[str, ...]:
        """The modules named by `macs_module` (none, one, or one per layer of a head group across layers)."""
        m = self.macs_module
        return (m,) if isinstance(m, str) and m else tuple(m or ())

    @property
    def n_units(self) -> int:
        return self.channels if self.unit_of is None else int(self.unit_of.max()) + 1

    def unit_index(self) -> torch.Tensor:
        """unit_of, or the identity when every channel is its own structure."""
        return torch.arange(self.channels) if self.unit_of is None else self.unit_of

    def channels_of(self, units: list[int]) -> list[int]:
        """The channels of the given structures, sorted."""
        if self.unit_of is None:
            return sorted(units)
        wanted = torch.zeros(self.n_units, dtype=torch.bool)
        wanted[torch.tensor(units, dtype=torch.long)] = True
        return torch.nonzero(wanted[self.unit_of]).flatten().tolist()

    def norms(self) -> torch.Tensor:
        """Joint L2 norm of each channel's slices (checks and reports; the per-step path is FlatLayout)."""
        total = torch.zeros(self.channels, dtype=torch.float32, device=self.slices[0].param.device)
        for s in self.slices:
            squares = s.param.detach().float().square()
            dims = [d for d in range(squares.dim()) if d != s.dim]
            per_index = squares.sum(dim=dims) if dims else squares
            total.index_add_(0, s.root.to(total.device), per_index.index_select(0, s.local.to(total.device)))
        return total.sqrt()

    def removal_counts(self) -> list[tuple[Slice, torch.Tensor]]:
        """For each slice, how many of its local indices each channel owns (flatten maps 1 -> HW)."""
        return [(s, torch.bincount(s.root, minlength=self.channels)) for s in self.slices]


class Unsupported(Exception):
    """A group member DPM cannot decay exactly; the message says which and why."""


def slices_of_item(module: nn.Module, handler, is_out: bool, name: str, local: list[int],
                   root: list[int], through_norm: bool = False) -> list[tuple[nn.Parameter, str, int, list[int], list[int]]]:
    """Which parameter entries one group item covers, as (param, name, dim, local, root).

    through_norm: decay LayerNorm / GroupNorm(1, C) affine slices too (opt-in: not exact, see
    `norm_coupled_slices`)."""
    pruner = getattr(handler, "__self__", None)
    if isinstance(pruner, _PARAMETER_FREE):
        return []
    out: list[tuple[nn.Parameter, str, int, list[int], list[int]]] = []
    if isinstance(module, _CROSS_CHANNEL):
        if not through_norm:
            raise Unsupported(f"{name} ({type(module).__name__}) normalises across channels; removing a zeroed "
                              "channel would change its statistics (opt in with prune_through_norm)")
        return norm_coupled_slices(module, name, local, root)

    def add(attr: str, dim: int) -> None:
        p = getattr(module, attr, None)
        if isinstance(p, nn.Parameter):
            out.append((p, f"{name}.{attr}", dim, local, root))

    if isinstance(pruner, tpf.DepthwiseConvPruner):
        add("weight", 0), add("bias", 0)
    elif isinstance(pruner, tpf.ConvPruner):
        transposed = getattr(module, "transposed", False)
        if module.groups > 1 and transposed:
            raise Unsupported(f"{name} is a grouped transposed convolution (groups={module.groups}); "
                              "dpm has no exact decay rule for it")
        if is_out:
            add("weight", 1 if transposed else 0), add("bias", 0)
        elif module.groups > 1:
            # Input channel l of a grouped conv is weight[:, l % (in/groups)] of its own conv group's
            # rows: the structures of `units.channel_units` take position l % (in/groups) out of
            # EVERY conv group at once, which is the whole column weight[:, l % (in/groups)].
            width = module.in_channels // module.groups
            out.append((module.weight, f"{name}.weight", 1, [i % width for i in local], root))
        else:
            add("weight", 0 if transposed else 1)
    elif isinstance(pruner, tpf.LinearPruner):
        if is_out:
            add("weight", 0), add("bias", 0)
        else:
            add("weight", 1)
    elif isinstance(pruner, Conv1DPruner):  # transformers' Conv1D: weight [in, out]
        if is_out:
            add("weight", 1), add("bias", 0)
        else:
            add("weight", 0)
    elif isinstance(pruner, tpf.BatchnormPruner):
        add("weight", 0), add("bias", 0)
    else:
        raise Unsupported(f"{name} ({type(module).__name__}) has no exact per-channel decay rule in dpm")
    return out


def merge_slices(raw: list[tuple[nn.Parameter, str, int, list[int], list[int]]]) -> list[Slice]:
    """One Slice per (parameter, dim); an index listed twice (depthwise in/out) counts once."""
    merged: dict[tuple[int, int], tuple[nn.Parameter, str, int, dict[int, int]]] = {}
    for param, name, dim, local, root in raw:
        key = (id(param), dim)
        entry = merged.setdefault(key, (param, name, dim, {}))
        for li, ri in zip(local, root):
            entry[3].setdefault(li, ri)
    slices = []
    for param, name, dim, mapping in merged.values():
        local = torch.tensor(list(mapping.keys()), dtype=torch.long, device=param.device)
        root = torch.tensor(list(mapping.values()), dtype=torch.long, device=param.device)
        slices.append(Slice(param, name, dim, local, root))
    return slices


def norm_coupled_slices(module: nn.Module, name: str, local: list[int],
                        root: list[int]) -> list[tuple[nn.Parameter, str, int, list[int], list[int]]]:
    """The affine slices of a LayerNorm / GroupNorm(1, C) channel. Decaying them zeroes the channel's
    output, but its input still enters the mean and variance, so removing it changes the statistics
    of the kept channels: the drift is measured after compaction, never assumed zero."""
    if isinstance(module, nn.GroupNorm) and module.num_groups != 1:
        raise Unsupported(f"{name} is a GroupNorm with {module.num_groups} groups; torch-pruning keeps "
                          "num_groups, so its channels cannot be removed one by one")
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
        raise Unsupported(f"{name} normalises over {len(module.normalized_shape)} dims; only the last can shrink")
    out = []
    for attr in ("weight", "bias"):
        p = getattr(module, attr, None)
        if isinstance(p, nn.Parameter):
            out.append((p, f"{name}.{attr}", 0, local, root))
    return out
