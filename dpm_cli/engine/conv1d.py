"""transformers' `Conv1D` (GPT-2, OpenAI GPT, ...): a linear layer whose weight is stored transposed,
[in_features, out_features], and applied as `addmm(bias, x, weight)`.

torch-pruning 1.6.1 has no pruner for it: traced as an unknown module it is an op whose weight is an
"unwrapped parameter", so no group could be rooted at it and its out- and in-channels would not follow
each other. It is registered here as a customized pruner (`customized_pruners`, torch-pruning's own
extension point: `DependencyGraph.build_dependency(customized_pruners=...)`), which removes weight
columns for output channels and rows for input channels, the bias with the outputs, and keeps the
module's `nf`/`nx` (read by its forward) in step. transformers is imported lazily by dpm, so the class
is looked up among the modules already imported: a model holding a Conv1D has imported it.
"""
from __future__ import annotations

import sys
from typing import Sequence

import torch.nn as nn
from torch_pruning.pruner import function as tpf


def conv1d_class() -> type | None:
    """transformers' Conv1D class when transformers is imported, else None."""
    return getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)


def is_conv1d(module: object) -> bool:
    cls = conv1d_class()
    return cls is not None and isinstance(module, cls)


def out_axis(module: nn.Module, attr: str = "weight") -> int:
    """The dim of `module.attr` that indexes output channels (1 for a Conv1D's weight, else 0)."""
    return 1 if attr == "weight" and is_conv1d(module) else 0


def in_axis(module: nn.Module) -> int:
    """The dim of `module.weight` that indexes input channels (0 for a Conv1D, 1 for nn.Linear)."""
    return 0 if is_conv1d(module) else 1


class Conv1DPruner(tpf.BasePruningFunc):
    """torch-pruning layer pruner for transformers' Conv1D (weight [in, out])."""

    TARGET_MODULES = None  # the class is known only at run time (`conv1d_class`)

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.weight.shape[1])) - set(idxs))
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 1)
        if layer.bias is not None:
            layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
        layer.nf = len(keep)
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.weight.shape[0])) - set(idxs))
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
        if hasattr(layer, "nx"):
            layer.nx = len(keep)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.weight.shape[1]

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.weight.shape[0]


CONV1D_PRUNER = Conv1DPruner()  # one instance: torch-pruning tells handlers apart by bound method


def customized_pruners() -> dict[type, tpf.BasePruningFunc]:
    """`customized_pruners` for torch-pruning's build_dependency: Conv1D's, when transformers is loaded."""
    cls = conv1d_class()
    return {cls: CONV1D_PRUNER} if cls is not None else {}


def root_types(base: tuple[type, ...]) -> tuple[type, ...]:
    """`base` plus Conv1D when transformers is loaded: the layers that may root a channel group."""
    cls = conv1d_class()
    return base + (cls,) if cls is not None else base
