"""Physical removal of zeroed structures with torch-pruning, and the equivalence check.

A structure that is exactly zero contributes exactly zero: every consumer's input slice of that channel
is zero. So the compact model must compute what the decayed model computes; we measure the largest
difference over every output field on the example inputs in eval mode and refuse (EquivalenceError)
above the tolerance. Compaction is a transaction: when anything fails (torch-pruning, the forward pass,
an output shape, the equivalence check), the model is put back exactly as it was.

This module knows nothing about the pruner: the caller describes the job as a `CompactionPlan`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import CompactionError, DpmError, EquivalenceError
from .conv1d import is_conv1d
from .cost import count_macs_params
from .experts import HISTORY_TAG as EXPERTS_TAG
from .heads import head_history
from .outputs import compare_outputs, snapshot_outputs
from .transaction import Transaction
from .tp_fixes import tolerant_concat_widths


@dataclass
class Removal:
    """Remove `channels` (root numbering) of the dependency group rooted at `root`."""

    group: str
    root: nn.Module
    channels: list[int]
    # Removal when torch-pruning cannot do it (attention heads: returns the query heads it removed;
    # stacked experts: the units it removed)
    remove: Callable[[list[int]], Any] | None = None
    kind: str = "channels"  # GroupSlices.kind


@dataclass
class CompactionPlan:
    """Everything compaction needs. `exact` False (groups through LayerNorm/GroupNorm) measures the
    drift and reports it instead of refusing above `tolerance`."""

    model: nn.Module
    example_inputs: Any
    graph: Any  # torch_pruning.DependencyGraph of `model`
    removals: list[Removal]
    macs_before: float
    params_before: float
    tolerance: float = 1e-4
    exact: bool = True


@dataclass
class LayerWidth:
    name: str
    kind: str
    in_before: int
    out_before: int
    in_after: int
    out_after: int


@dataclass
class CompactionResult:
    model: nn.Module
    widths: list[LayerWidth]
    max_rel_error: float
    macs_before: float
    macs_after: float
    params_before: float
    params_after: float
    history: list = field(default_factory=list)  # torch-pruning pruning history, for the artifact
    errors: dict[str, float] = field(default_factory=dict)  # relative error of every output field
    exact: bool = True  # False: removal through normalisation layers, max_rel_error is the drift
    # attention module name -> its query heads removed (numbered as before this compaction); the module
    # holds its new counts (num_heads / num_attention_heads, ...), `pruned_heads` (original numbers,
    # cumulative over runs: Hugging Face's convention) and `dpm_head_ids` (original numbers kept)
    pruned_heads: dict[str, list[int]] = field(default_factory=dict)

    @property
    def macs_kept(self) -> float:
        return self.macs_after / self.macs_before

    @property
    def params_kept(self) -> float:
        return self.params_after / self.params_before


def layer_widths(model: nn.Module) -> dict[str, tuple[str, int, int]]:
    """(type, in, out) widths of every conv, linear and batch-norm layer."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out[name] = (type(m).__name__, m.in_channels, m.out_channels)
        elif isinstance(m, nn.Linear):
            out[name] = (type(m).__name__, m.in_features, m.out_features)
        elif is_conv1d(m):  # transformers' Conv1D (GPT-2): weight [in, out]
            out[name] = (type(m).__name__, *m.weight.shape)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            out[name] = (type(m).__name__, m.num_features, m.num_features)
    return out


def remove_structures(plan: CompactionPlan) -> tuple[dict[str, list[int]], list[list]]:
    """Prune every group of the plan; a torch-pruning failure names its group. Returns the heads
    removed, and the history entries of the expert units removed."""
    graph, pruned_heads, experts = plan.graph, {}, []
    for removal in plan.removals:
        if not removal.channels:
            continue
        try:
            if removal.remove is not None:  # heads (the adapter re-books them), stacked experts
                removed = removal.remove(removal.channels)
                if removal.kind == "experts":
                    experts.append([EXPERTS_TAG, removal.group, removed])
                elif isinstance(removed, dict):  # heads across layers: every member, and a shared table
                    pruned_heads.update(removed)
                else:
                    pruned_heads[removal.group] = removed
                continue
            handler = graph.get_pruner_of_module(removal.root).prune_out_channels
            with tolerant_concat_widths():
                graph.get_pruning_group(removal.root, handler, removal.channels).prune()
        except Exception as err:
            failure = CompactionError(f"torch-pruning failed to remove {len(removal.channels)} channels of group "
                                      f"{removal.group} ({type(err).__name__}: {_first_line(err)})")
            failure.group = removal.group  # type: ignore[attr-defined]  # the preflight names it
            raise failure from err
    return pruned_heads, experts


@torch.no_grad()
def compact_plan(plan: CompactionPlan, *, check: bool = True, measure: bool = True) -> CompactionResult:
    """Remove the plan's structures from `plan.model` IN PLACE and verify the function is unchanged.

    check=False skips only the tolerance (shapes are always checked); measure=False skips counting
    MACs afterwards (the preflight needs no numbers)."""
    model, inputs = plan.model, plan.example_inputs
    before = layer_widths(model)
    reference = snapshot_outputs(model, inputs)
    start = len(plan.graph.pruning_history())
    try:
        with Transaction(model, plan.graph):
            pruned_heads, expert_history = remove_structures(plan)
            try:
                compact_out = snapshot_outputs(model, inputs)
            except Exception as err:
                raise CompactionError(f"the compact model no longer runs on the example inputs "
                                      f"({type(err).__name__}: {_first_line(err)})") from err
            comparison = compare_outputs(reference, compact_out)
            if check and plan.exact and comparison.max_rel_error > plan.tolerance:
                worst = max(comparison.errors, key=comparison.errors.get)
                raise EquivalenceError(f"the compact model differs from the decayed model by "
                                       f"{comparison.max_rel_error:.2e} (relative, in {worst}), above "
                                       f"{plan.tolerance:g}; refusing to use it")
            macs_after, params_after = (count_macs_params(model, inputs) if measure
                                        else (float("nan"), float("nan")))
    except DpmError as err:
        restored = type(err)(f"{err}; the model was left as it was before compact()")
        restored.group = getattr(err, "group", None)  # type: ignore[attr-defined]
        raise restored from err
    after = layer_widths(model)
    widths = [LayerWidth(n, kind, i0, o0, *after.get(n, (kind, 0, 0))[1:]) for n, (kind, i0, o0) in before.items()]
    return CompactionResult(model, widths, comparison.max_rel_error, plan.macs_before, macs_after,
                            plan.params_before, params_after,
                            [list(h) for h in plan.graph.pruning_history()[start:]] + head_history(pruned_heads) + expert_history,
                            comparison.errors, plan.exact, pruned_heads)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else ""
