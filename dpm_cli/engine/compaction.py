"""Physical removal of the zeroed structures with torch-pruning, and the equivalence check.

A structure that is exactly zero contributes exactly zero: every consumer's input slice of that channel
is zero. So the compact model must compute what the decayed model computes; we measure the largest
difference on the example inputs in eval mode and refuse (EquivalenceError) above the tolerance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ..errors import BudgetError, DpmError, EquivalenceError
from .cost import count_macs_params
from .groups import run_model
from .heads import head_history
from .state import DECAYING, PRUNED

if TYPE_CHECKING:
    from .pruner import DecayPruner


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
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            out[name] = (type(m).__name__, m.num_features, m.num_features)
    return out


def _outputs(model: nn.Module, example_inputs: Any) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = run_model(model, example_inputs)
    finally:
        model.train(was_training)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return out.detach().float().clone()


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Largest absolute difference, relative to the largest magnitude of the reference output."""
    if reference.shape != other.shape:
        return float("inf")
    scale = reference.abs().max().clamp_min(1e-12)
    return float((reference - other).abs().max() / scale)


def _check_ready(pruner: "DecayPruner") -> None:
    decaying = sum(int(st.mask(DECAYING).sum()) for st in pruner.states)
    if decaying:
        raise DpmError(f"{decaying} structures are still decaying (step {pruner.steps_done}, the decay phase "
                       f"ends at step {pruner.decay_phase_end}); train until then before compacting")
    progress = pruner.progress()
    kept = {"macs": progress.macs_kept, "params": progress.params_kept}.get(pruner.config.budget_kind)
    if kept is not None and pruner.round == len(pruner.selection_steps) - 1 and kept > pruner.config.budget + 1e-6:
        raise BudgetError(f"the zeroed structures keep {kept:.4f} of the {pruner.config.budget_kind}, "
                          f"above the budget {pruner.config.budget:g}")
    norms_by_name = {g.name: g for g in pruner.groups}
    for name, channels in pruner.pruned_channels().items():
        residual = float(norms_by_name[name].norms()[channels].max())
        if residual != 0.0:
            raise DpmError(f"group {name}: a pruned structure has norm {residual:g}, not exactly zero; "
                           "was pruner.step() called after every optimizer.step()?")


@torch.no_grad()
def compact(pruner: "DecayPruner", *, check: bool = True) -> CompactionResult:
    """Remove every pruned structure from `pruner.model` IN PLACE and verify the function is unchanged."""
    _check_ready(pruner)
    model, inputs = pruner.model, pruner.example_inputs
    before = layer_widths(model)
    macs_before, params_before = pruner.cost.original.macs, pruner.cost.original.params
    reference = _outputs(model, inputs)
    graph = pruner.graph
    start = len(graph.pruning_history())
    pruned_heads: dict[str, list[int]] = {}
    for g, st in zip(pruner.groups, pruner.states):
        channels = g.channels_of(torch.nonzero(st.status == PRUNED).flatten().tolist())
        if channels and g.remove is not None:  # attention heads: the adapter removes and re-books them
            pruned_heads[g.name] = g.remove(channels)
        elif channels:
            handler = graph.get_pruner_of_module(g.root).prune_out_channels
            group = graph.get_pruning_group(g.root, handler, channels)
            group.prune()
    compact_out = _outputs(model, inputs)
    error = relative_error(reference, compact_out)
    macs_after, params_after = count_macs_params(model, inputs)
    after = layer_widths(model)
    widths = [LayerWidth(n, kind, i0, o0, *after.get(n, (kind, 0, 0))[1:]) for n, (kind, i0, o0) in before.items()]
    result = CompactionResult(model, widths, error, macs_before, macs_after, params_before, params_after,
                              [list(h) for h in graph.pruning_history()[start:]] + head_history(pruned_heads),
                              pruned_heads)
    if check and error > pruner.config.max_equivalence_error:
        raise EquivalenceError(f"the compact model differs from the decayed model by {error:.2e} (relative), "
                               f"above {pruner.config.max_equivalence_error:g}; refusing to use it")
    return result
