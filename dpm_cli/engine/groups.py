"""Finding the prunable dependency groups of a model with torch-pruning's DependencyGraph."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch_pruning as tp

from ..errors import BudgetError, ConfigError, TraceError
from .heads import add_head_groups
from .structures import GroupSlices, Unsupported, merge_slices, slices_of_item
from .units import grouped_conv_units

ROOT_TYPES = (nn.Conv2d, nn.Conv1d, nn.Linear)


@dataclass
class GroupSet:
    """The dependency graph and the groups DPM may decay, plus the groups it skipped and why."""

    graph: tp.DependencyGraph
    groups: list[GroupSlices]
    skipped: dict[str, str] = field(default_factory=dict)  # group name -> reason
    ignored_modules: list[str] = field(default_factory=list)
    classifier: str | None = None

    def by_name(self) -> dict[str, GroupSlices]:
        return {g.name: g for g in self.groups}


def run_model(model: nn.Module, example_inputs: Any) -> Any:
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


def find_classifier(model: nn.Module, example_inputs: Any) -> str | None:
    """The last Linear/Conv executed whose output has the model output's shape: the classifier."""
    names = {m: n for n, m in model.named_modules()}
    order: list[tuple[str, tuple]] = []
    hooks = [m.register_forward_hook(lambda mod, _i, out: order.append((names[mod], tuple(out.shape))))
             for m in model.modules() if isinstance(m, ROOT_TYPES)]
    was_training = model.training
    model.eval()  # a train-mode forward would move BatchNorm running statistics
    try:
        with torch.no_grad():
            out = run_model(model, example_inputs)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    if not torch.is_tensor(out):
        return None
    for name, shape in reversed(order):
        if shape == tuple(out.shape):
            return name
    return None


def _match(patterns: list[str], model: nn.Module) -> tuple[list[nn.Module], list[str]]:
    modules, names = [], []
    for pattern in patterns:
        hits = [(n, m) for n, m in model.named_modules() if n and fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ConfigError(f"ignore pattern {pattern!r} matches no module; module names look like "
                              f"{', '.join(n for n, _ in list(model.named_modules())[1:4])}")
        for n, m in hits:
            modules.append(m)
            names.append(n)
    return modules, names


def build_graph(model: nn.Module, example_inputs: Any) -> tp.DependencyGraph:
    """Trace the model; torch-pruning leaves it in eval mode, so restore the caller's mode."""
    was_training = model.training
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    except Exception as err:
        raise TraceError(f"torch-pruning cannot trace the model on the example inputs "
                         f"({type(err).__name__}: {str(err).strip().splitlines()[0][:160] if str(err).strip() else ''}); "
                         "check the input shape and that forward() runs on it") from err
    finally:
        model.train(was_training)


def discover_groups(model: nn.Module, example_inputs: Any, ignore: list[str] | None = None,
                    ignore_classifier: bool = True) -> GroupSet:
    """List every group DPM can decay exactly, skipping ignored roots and unsupported members."""
    try:
        classifier = find_classifier(model, example_inputs) if ignore_classifier else None
    except Exception as err:
        raise TraceError(f"the model does not run on the example inputs ({type(err).__name__}: {err}); "
                         "check the input shape") from err
    ignored, ignored_names = _match(list(ignore or []), model)
    if classifier is not None:
        ignored.append(model.get_submodule(classifier))
        ignored_names.append(classifier)
    graph = build_graph(model, example_inputs)
    ignored_all = [sub for m in ignored for sub in m.modules()]
    groups, skipped = [], {}
    for tp_group in graph.get_all_groups(ignored_layers=ignored_all, root_module_types=ROOT_TYPES):
        root = tp_group[0].dep.target.module
        name = graph._module2name.get(root, f"<{type(root).__name__}>")
        try:
            groups.append(_to_slices(graph, tp_group, name, root))
        except Unsupported as why:
            skipped[name] = str(why)
    groups = add_head_groups(model, groups, skipped, ignored_all)  # attention is pruned by whole heads
    if not groups:
        reason = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:2]) or "every group is ignored"
        raise BudgetError(f"nothing left to prune: no decayable channel group ({reason}); "
                          "relax the ignore patterns or use a model with Conv/Linear layers")
    return GroupSet(graph, groups, skipped, ignored_names, classifier)


def _to_slices(graph: tp.DependencyGraph, tp_group, name: str, root: nn.Module) -> GroupSlices:
    raw = []
    for item in tp_group:
        dep, local = item.dep, list(item.idxs)
        module = dep.target.module
        mod_name = graph._module2name.get(module, type(module).__name__)
        is_out = graph.is_out_channel_pruning_fn(dep.handler)
        root_idxs = list(item.root_idxs) if item.root_idxs is not None else local
        raw.extend(slices_of_item(module, dep.handler, is_out, mod_name, local, root_idxs))
    channels = graph.get_out_channels(root)
    slices = merge_slices(raw)
    if not slices:
        raise Unsupported(f"{name}: the group has no parameters")
    return GroupSlices(name=name, root=root, channels=channels, slices=slices, tp_group=tp_group,
                       unit_of=grouped_conv_units(graph, tp_group, channels))
