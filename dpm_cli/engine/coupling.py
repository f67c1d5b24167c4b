"""Enumerating torch-pruning's groups without its slow paths (swin_t: 10 GB, >300 s; GQA attention: never finished).

1. `get_pruning_group` starts by recomputing every reshape/concat/split index mapping of the whole graph
   (`index_mapping.update_index_mapping`), whose channel inference recurses without memoisation: 2.5 s
   per group on swin_t. While groups are only enumerated nothing is pruned, so the mappings cannot
   change: we compute them once and freeze them for the enumeration.
2. Residual groups that pass through a window reshape (swin's `view(B, H/7, 7, W/7, 7, C)`) are read by
   torch-pruning as a flatten of the channel dim, so every channel index is multiplied into thousands
   and the group never finishes. Those groups pass through LayerNorm, which DPM skips unless
   prune_through_norm is set; a cheap walk of the same dependencies WITHOUT index lists finds the norm
   first, and the group is skipped without being built. RMSNorm (torch's, or a model's own class such
   as transformers' `LlamaRMSNorm`) counts as such a norm: torch-pruning 1.6.1 has no pruner for it, so
   its weight is an "unwrapped parameter" node, found through the parameter's owner.
3. Attention q/k/v projections do not root a group at all (`skip_root`, see `heads.HeadClaims`).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch.nn as nn
import torch_pruning as tp
from torch_pruning.dependency import index_mapping

CROSS_CHANNEL = (nn.LayerNorm, nn.GroupNorm)


def is_rms_norm(module: nn.Module) -> bool:
    """torch's nn.RMSNorm or a model's own RMSNorm class (LlamaRMSNorm, Qwen2RMSNorm, ...)."""
    return isinstance(module, getattr(nn, "RMSNorm", ())) or type(module).__name__.endswith("RMSNorm")


def rms_norm_params(model: nn.Module) -> dict[int, tuple[str, nn.Module]]:
    """id(weight) -> (name, module) of every RMSNorm's own parameters (unwrapped in torch-pruning)."""
    return {id(p): (name, m) for name, m in model.named_modules() if is_rms_norm(m)
            for p in m.parameters(recurse=False)}


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
    return [module for module, _ in coupled_items(graph, root)]


def coupled_items(graph: tp.DependencyGraph, root: nn.Module) -> list[tuple[nn.Module, Callable]]:
    """(module, pruning function) of everything `coupled_modules` reaches. Unlike torch-pruning's
    `get_pruning_group` this always ends: each (node, function) is visited once, where index lists that
    shift on every lap of a cycle (grouped-query attention, Longformer's chunked attention) never repeat."""
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
    return [(node.module, fn) for node, fn in order]


def norm_in_group(graph: tp.DependencyGraph, root: nn.Module,
                  rms: dict[int, tuple[str, nn.Module]] | None = None) -> tuple[str, str] | None:
    """(name, class name) of the first cross-channel norm the group rooted at `root` reaches, or None."""
    rms = rms_norm_params(graph.model) if rms is None else rms
    for m in coupled_modules(graph, root):
        if isinstance(m, CROSS_CHANNEL):
            return graph._module2name.get(m, type(m).__name__), type(m).__name__
        if isinstance(m, nn.Parameter) and id(m) in rms:
            name, owner = rms[id(m)]
            return name, type(owner).__name__
    return None


def iter_groups(graph: tp.DependencyGraph, ignored: list[nn.Module], root_types: tuple[type, ...],
                skip_norm_coupled: bool, skip_root: Callable[[str, nn.Module], str | None] | None = None,
                ) -> Iterator[tuple[nn.Module, object | None, str]]:
    """torch-pruning's `get_all_groups`, yielding (root, group, "") or (root, None, why skipped).
    skip_root(name, module): why a module may not root a group (not built at all), or None."""
    ignored_ids = {id(m) for m in ignored + list(graph.IGNORED_LAYERS_IN_TRACING)}
    visited: set[int] = set()
    norm_skipped: set[int] = set()
    rms = rms_norm_params(graph.model) if skip_norm_coupled else {}
    with frozen_index_mapping(graph):
        for module in list(graph.module2node):
            if id(module) in ignored_ids or not isinstance(module, root_types) or id(module) in visited:
                continue
            pruner = graph.get_pruner_of_module(module)
            if pruner is None or pruner.get_out_channels(module) is None:
                continue
            why = skip_root(graph._module2name.get(module, type(module).__name__), module) if skip_root else None
            if why:
                yield module, None, why
                continue
            norm = norm_in_group(graph, module, rms) if skip_norm_coupled else None
            if norm is not None:
                if id(module) in norm_skipped:
                    continue  # already reported with the group it belongs to
                norm_skipped.update(id(m) for m in coupled_modules(graph, module))
                name, kind = norm
                opt_in = "dpm has no rule to prune through RMSNorm" if kind.endswith("RMSNorm") else \
                    "opt in with prune_through_norm"
                yield module, None, (f"{name} ({kind}) normalises across channels; removing a "
                                     f"zeroed channel would change its statistics ({opt_in})")
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
