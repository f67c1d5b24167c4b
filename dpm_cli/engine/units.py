"""Multi-channel structures (units) of a group: channels that decay, are selected and removed together.

A grouped convolution (1 < groups < channels) stays valid only if every one of its conv groups keeps
the same number of channels. torch-pruning's own grouped-conv handling (`MetaPruner` with
`in/out_channel_groups`: importance averaged over `imp.view(groups, -1)`, the same in-group positions
removed from every conv group; `ConvPruner.prune_in_channels` then keeps `keep_idxs[:n // groups]`)
removes channel k of every conv group at once. We build the same structures: channels whose index
inside their conv group is the same form one unit. A group touching several grouped convs gets the
coarsest partition that satisfies all of them (union-find), so no removal can break any of them.

A projection split in equal parts that are combined again (a fused gate/up projection) is the other
kind: row c of every part is one unit (`split_period`), merged into the same partition.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch_pruning.pruner import function as tpf

from .activation import head_importance
from .structures import Unsupported


def is_grouped_conv(module: nn.Module, handler) -> bool:
    """A grouped convolution that is not depthwise (torch-pruning handles depthwise as its own kind)."""
    pruner = getattr(handler, "__self__", None)
    return (isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1
            and isinstance(pruner, tpf.ConvPruner) and not isinstance(pruner, tpf.DepthwiseConvPruner))


def split_period(graph, root: nn.Module, tp_group, channels: int) -> int | None:
    """p when torch-pruning couples channel c of the root with c + p, c + 2p, ... (a fused projection
    split into equal parts that are combined again: Phi-3's `gate, up = gate_up_proj(x).chunk(2)`, then
    `act(gate) * up`), else None. Removing channel c removes them all, so they form one unit.

    torch-pruning keeps one root index per member index, so such a group shows as a member with fewer
    indices than the root has channels (the down projection's I columns for 2I root rows); only then
    is the root's channel 0 probed on its own, to read which of its rows go with it."""
    if all(len(item.idxs) == channels for item in tp_group):
        return None
    own = next(item.dep for item in tp_group if item.dep.target.module is root)
    probe = graph.get_pruning_group(root, own.handler, [0])
    rows = sorted({int(i) for item in probe if item.dep.target.module is root for i in item.idxs})
    if len(rows) < 2:
        return None
    period = rows[1]
    if channels % period or rows != list(range(0, channels, period)):
        raise Unsupported(f"removing channel 0 of {type(root).__name__} also removes its channels {rows[1:5]}, "
                          "a coupling dpm has no structure for")
    return period


def channel_units(graph, tp_group, channels: int, period: int | None = None) -> torch.Tensor | None:
    """unit_of per channel of the group, or None when neither a grouped conv nor a split of the root
    into `period`-sized parts (`split_period`) constrains it."""
    parent = list(range(channels))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    constrained = period is not None
    for c in range(period or channels, channels):
        parent[c] = c % period
    for item in tp_group:
        module, handler = item.dep.target.module, item.dep.handler
        if not is_grouped_conv(module, handler):
            continue
        constrained = True
        is_out = graph.is_out_channel_pruning_fn(handler)
        width = (module.out_channels if is_out else module.in_channels) // module.groups
        local = list(item.idxs)
        root = list(item.root_idxs) if item.root_idxs is not None else local
        first: dict[int, int] = {}
        for li, ri in zip(local, root):
            a, b = find(ri), find(first.setdefault(li % width, ri))
            if a != b:
                parent[max(a, b)] = min(a, b)
    if not constrained:
        return None
    return compress([find(c) for c in range(channels)])


def compress(labels: list[int]) -> torch.Tensor:
    """Labels renumbered 0..U-1 in order of first appearance."""
    ids: dict[int, int] = {}
    return torch.tensor([ids.setdefault(x, len(ids)) for x in labels], dtype=torch.long)


def unit_sizes(unit_of: torch.Tensor | None, channels: int) -> torch.Tensor:
    if unit_of is None:
        return torch.ones(channels, dtype=torch.long)
    return torch.bincount(unit_of)


def unit_scores(channel_scores: torch.Tensor, unit_of: torch.Tensor | None) -> torch.Tensor:
    """A structure's importance: the mean of its channels' (torch-pruning's reduction for grouped
    channels and heads); +inf if any channel is +inf (the criterion has no opinion)."""
    if unit_of is None:
        return channel_scores
    n = int(unit_of.max()) + 1
    total = torch.zeros(n, dtype=channel_scores.dtype).index_add_(0, unit_of, channel_scores)
    return total / torch.bincount(unit_of, minlength=n).to(channel_scores.dtype)


@torch.no_grad()
def own_importance(group, criterion: str, activations: dict | None = None) -> torch.Tensor | None:
    """Per-channel importance of a group that has no torch-pruning Group (attention heads: their
    slices span parameters such as nn.MultiheadAttention's in_proj_weight that torch-pruning's
    importance classes cannot read). Same quantities as torch-pruning's: group L2 magnitude
    (GroupMagnitudeImportance, mean-normalised) and first-order Taylor |w * g|; activation: the
    output projection's ||W[:, j]|| * rms(x_j) (activation.py); None = no opinion."""
    if criterion == "activation":
        return head_importance(group, activations or {})
    if criterion == "random":
        return torch.rand(group.channels)
    if criterion in ("magnitude", "lamp"):
        imp = group.norms().square()
    elif criterion == "taylor":
        imp = torch.zeros(group.channels)
        for s in group.slices:
            if s.param.grad is None:
                continue
            prod = (s.param.detach() * s.param.grad).abs().float()
            dims = [d for d in range(prod.dim()) if d != s.dim]
            per_index = prod.sum(dim=dims) if dims else prod
            imp.index_add_(0, s.root.cpu(), per_index.index_select(0, s.local).cpu())
    else:  # bn_scale: heads have no BatchNorm
        return None
    return imp / imp.mean().clamp_min(1e-12)
