"""The model's outputs: which structures feed them, and what compaction must keep unchanged.

A structure whose removal would change the shape of an output (the classes of a classifier, the
hidden size a wrapped transformer returns, the channels of a 1x1-conv classifier head) is never
pruned. Instead of guessing the classifier from shapes, we follow torch-pruning's dependency graph
back from every tensor the model returns: pruning the output's channel dimension triggers a group,
and every layer whose out-channels are in that group is protected.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning import utils as tp_utils

from ..batch import call_model as run_model  # noqa: F401  (the engine's name for it)
from ..batch import seeded_call
from ..batch import output_fields  # noqa: F401  (re-exported: engine callers use it from here)
from ..errors import EquivalenceError
from .coupling import coupled_items


class OutputCapture:
    """An `output_transform` for torch-pruning's trace that remembers the tensors the model returned."""

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] = []

    def __call__(self, out: Any) -> Any:
        self.tensors = list(output_fields(out).values())
        # torch-pruning walks back from each tensor; non-tensor leaves (None, ints) would break it.
        return self.tensors


def protected_roots(graph: tp.DependencyGraph, outputs: list[torch.Tensor],
                    root_types: tuple[type, ...]) -> dict[nn.Module, str]:
    """Layers whose out-channels would change an output's shape, with the reason (the output)."""
    protected: dict[nn.Module, str] = {}
    by_grad_fn = {n.grad_fn: n for n in graph.module2node.values() if n.grad_fn is not None}
    for index, tensor in enumerate(outputs):
        node = by_grad_fn.get(tensor.grad_fn)
        if node is None or tensor.dim() == 0:
            continue  # not computed from parameters (or a scalar): nothing to protect
        if graph.get_pruner_of_module(node.module) is None:
            continue
        why = f"feeds model output {index} of shape {list(tensor.shape)}"
        # Every layer whose out-channels are coupled to the output's, without index lists: never fewer
        # than torch-pruning's group, and it ends where that group loops (Longformer, LED: 'finding the
        # layers that feed the outputs' ran into the graph timeout).
        for module, handler in coupled_items(graph, node.module):
            if isinstance(module, root_types) and graph.is_out_channel_pruning_fn(handler):
                protected.setdefault(module, why)
    return protected


@dataclass
class OutputComparison:
    max_rel_error: float
    errors: dict[str, float]  # per output field


def snapshot_outputs(model: nn.Module, example_inputs: Any) -> dict[str, torch.Tensor]:
    """Every output field of an eval-mode forward from a fixed random state, as float copies (the caller's
    mode and random state are restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = seeded_call(model, example_inputs)  # a forward drawing random numbers compares too
    finally:
        model.train(was_training)
    return {k: v.detach().float().clone() for k, v in output_fields(out).items()}


def compare_outputs(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> OutputComparison:
    """Relative error of every field; a changed set of fields or shape raises EquivalenceError."""
    if list(reference) != list(other):
        raise EquivalenceError(f"compaction changed the model's outputs: fields {list(reference)} became "
                               f"{list(other)}")
    for key, ref in reference.items():
        if ref.shape != other[key].shape:
            raise EquivalenceError(f"compaction changed the shape of {key} from {list(ref.shape)} to "
                                   f"{list(other[key].shape)}: a pruned structure feeds the model's output; "
                                   "keep pruning.ignore_classifier on, or add the layer that produces it to pruning.ignore")
    errors = {key: relative_error(ref, other[key]) for key, ref in reference.items()}
    return OutputComparison(max(errors.values(), default=0.0), errors)


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Largest absolute difference, relative to the largest magnitude of the reference output."""
    if reference.numel() == 0:
        return 0.0
    scale = reference.abs().max().clamp_min(1e-12)
    return float((reference - other).abs().max() / scale)
