"""Undo for in-place surgery on a model: compaction and the preflight either finish or leave no trace.

torch-pruning edits modules in place: it replaces Parameters and buffers with sliced copies and
rewrites attributes (out_channels, num_features, ...). A `ModelSnapshot` remembers every module's
attribute dicts and the values of every parameter and buffer, so `restore()` puts back the same
objects with the same values: references the caller holds (an optimizer's parameter list, a
submodule) stay valid.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


class ModelSnapshot:
    """A restorable copy of a model's module structure, attributes, parameters and buffers."""

    def __init__(self, model: nn.Module):
        # The class too: head pruning turns nn.MultiheadAttention into dpm's PrunedMultiheadAttention.
        self._modules: list[tuple[nn.Module, type, dict[str, Any], dict, dict, dict]] = [
            (m, type(m), dict(m.__dict__), dict(m._parameters), dict(m._buffers), dict(m._modules))
            for m in model.modules()]
        tensors: dict[int, torch.Tensor] = {}
        for m in model.modules():
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is not None:
                    tensors.setdefault(id(t), t)
        # Values too: zeroing for the preflight (and any in-place edit) must be undone as well.
        self._values = [(t, t.detach().clone()) for t in tensors.values()]

    @torch.no_grad()
    def restore(self) -> None:
        for module, cls, attrs, params, buffers, children in self._modules:
            if type(module) is not cls:
                module.__class__ = cls
            module.__dict__.clear()
            module.__dict__.update(attrs)
            for live, saved in ((module._parameters, params), (module._buffers, buffers),
                                (module._modules, children)):
                live.clear()
                live.update(saved)
        for tensor, value in self._values:
            if tensor.shape == value.shape:
                tensor.copy_(value)
            else:  # resized in place (Tensor.data = ...): give it back its own storage
                tensor.data = value


class GraphSnapshot:
    """torch-pruning's graph keeps its own references: the pruning history, and for unwrapped
    parameters (ViT's class token, position embedding) the Parameter -> node and name maps."""

    def __init__(self, graph: Any):
        self.graph = graph
        self.history = len(graph.pruning_history())
        self.module2node = dict(graph.module2node)
        self.param_to_name = dict(getattr(graph, "_param_to_name", {}))
        self.node_modules = [(node, node.module) for node in graph.module2node.values()]
        # Its pseudo-modules for concat/split/... are not in the model, and their pruners edit lists
        # in place (concat_sizes, split_sizes): copy those values.
        model_modules = set(graph.model.modules()) if getattr(graph, "model", None) is not None else set()
        self.pseudo = [(m, {k: _copy_value(v) for k, v in m.__dict__.items()})
                       for m in graph.module2node if isinstance(m, nn.Module) and m not in model_modules]

    def restore(self) -> None:
        g = self.graph
        del g._pruning_history[self.history:]
        g.module2node.clear()
        g.module2node.update(self.module2node)
        if hasattr(g, "_param_to_name"):
            g._param_to_name.clear()
            g._param_to_name.update(self.param_to_name)
        for node, module in self.node_modules:
            node.module = module
        for module, attrs in self.pseudo:
            module.__dict__.clear()
            module.__dict__.update({k: _copy_value(v) for k, v in attrs.items()})


def _copy_value(value: Any) -> Any:
    return type(value)(value) if isinstance(value, (list, dict)) else value


class Transaction:
    """`with Transaction(model, graph):` restores both when the block raises."""

    def __init__(self, model: nn.Module, graph: Any = None):
        self.model_snapshot = ModelSnapshot(model)
        self.graph_snapshot = GraphSnapshot(graph) if graph is not None else None

    def rollback(self) -> None:
        self.model_snapshot.restore()
        if self.graph_snapshot is not None:
            self.graph_snapshot.restore()

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, kind: Any, *_: Any) -> bool:
        if kind is not None:
            self.rollback()
        return False
