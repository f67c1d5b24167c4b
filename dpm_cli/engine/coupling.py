"""Enumerating torch-pruning's groups without its two slow paths (the cause of swin_t's 10 GB, >300 s).

1. `get_pruning_group` starts by recomputing every reshape/concat/split index mapping of the whole graph
   (`index_mapping.update_index_mapping`), whose channel inference recurses without memoisation: 2.5 s
   per group on swin_t. While groups are only enumerated nothing is pruned, so the mappings cannot
   change: we compute them once and freeze them for the enumeration.
2. Residual groups that pass through a window reshape (swin's `view(B, H/7, 7, W/7, 7, C)`) are read by
   torch-pruning as a flatten of the channel dim, so every channel index is multiplied into thousands
   and the group never finishes. Those groups pass through LayerNorm, which DPM skips unless
   prune_through_norm is set; a cheap walk of the same dependencies WITHOUT index lists finds the norm
   first, and the group is skipped without being built.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch.nn as nn
import torch_pruning as tp
from torch_pruning.dependency import index_mapping

CROSS_CHANNEL = (nn.LayerNorm, nn.GroupNorm)


@contextlib.contextmanager
def frozen_index_mapping(graph: tp.DependencyGraph) -> Iterator[None]:
    """torch-pruning recomputes all index mappings per group; do it once (nothing is pruned meanwhile)."""
    update = index_mapping.update_index_mapping
    update(graph)
    index_mapping.update_index_mapping = lambda _graph: None
    try:
        yield
    finally:
        index_mapping.update_index_mapping = update


def coupled_modules(graph: tp.DependencyGraph, root: nn.Module) -> list[nn.Module]:
    """Every module the group rooted at `root` reaches, following torch-pruning's own triggers but no
    index lists (so it may include a branch that an index mapping would cut, never fewer)."""
    pruner = graph.get_pruner_of_module(root)
    start = graph.module2node[root]
    order = [(start, pruner.prune_out_channels)]  # a list, so that reports do not depend on hashing
    seen, stack = set(order), list(order)
    while stack:
        node, fn = stack.pop()
        for dep in node.dependencies:
            if dep.is_triggered_by(fn) and (dep.target, dep.handler) not in seen:
                seen.add((dep.target, dep.handler))
                order.append((dep.target, dep.handler))
                stack.append((dep.target, dep.handler))
    return [node.module for node, _ in order]


def norm_in_group(graph: tp.DependencyGraph, root: nn.Module) -> nn.Module | None:
    return next((m for m in coupled_modules(graph, root) if isinstance(m, CROSS_CHANNEL)), None)


def iter_groups(graph: tp.DependencyGraph, ignored: list[nn.Module], root_types: tuple[type, ...],
                skip_norm_coupled: bool) -> Iterator[tuple[nn.Module, object | None, str]]:
    """torch-pruning's `get_all_groups`, yielding (root, group, "") or (root, None, why skipped)."""
    ignored_ids = {id(m) for m in ignored + list(graph.IGNORED_LAYERS_IN_TRACING)}
    visited: set[int] = set()
    norm_skipped: set[int] = set()
    with frozen_index_mapping(graph):
        for module in list(graph.module2node):
            if id(module) in ignored_ids or not isinstance(module, root_types) or id(module) in visited:
                continue
            pruner = graph.get_pruner_of_module(module)
            if pruner is None or pruner.get_out_channels(module) is None:
                continue
            norm = norm_in_group(graph, module) if skip_norm_coupled else None
            if norm is not None:
                if id(module) in norm_skipped:
                    continue  # already reported with the group it belongs to
                norm_skipped.update(id(m) for m in coupled_modules(graph, module))
                name = graph._module2name.get(norm, type(norm).__name__)
                yield module, None, (f"{name} ({type(norm).__name__}) normalises across channels; removing a "
                                     "zeroed channel would change its statistics (opt in with prune_through_norm)")
                continue
            group = graph.get_pruning_group(module, pruner.prune_out_channels,
                                            list(range(pruner.get_out_channels(module))))
            prunable = True
            for dep, _ in group:
                if graph.is_out_channel_pruning_fn(dep.handler):
                    visited.add(id(dep.target.module))
                    if id(dep.target.module) in ignored_ids:
                        prunable = False
            if prunable:
                yield module, group, ""
