"""Finding the prunable dependency groups of a model with torch-pruning's DependencyGraph."""
from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch_pruning as tp

from ..errors import BudgetError, ConfigError, DpmError, TraceError
from .conv1d import customized_pruners, root_types
from .coupling import iter_groups, rms_norm_params
from .deadline import Deadline, Progress
from .kv_cache import cache_off
from .tp_fixes import quiet_unwrapped, tolerant_concat_widths
from .outputs import OutputCapture, protected_roots, run_model  # noqa: F401  (run_model: old import path)
from .experts import expert_axes, expert_parameters, find_expert_groups
from .heads import HeadClaims, adapter_for, add_head_groups
from .structures import GroupSlices, Unsupported, merge_slices, slices_of_item
from .units import channel_units, split_period

ROOT_TYPES = (nn.Conv2d, nn.Conv1d, nn.Linear)


@dataclass
class GroupSet:
    """The dependency graph and the groups DPM may decay, plus the groups it skipped and why."""

    graph: tp.DependencyGraph
    groups: list[GroupSlices]
    skipped: dict[str, str] = field(default_factory=dict)  # group name -> reason
    ignored_modules: list[str] = field(default_factory=list)
    classifier: str | None = None  # the layer computing the first output directly, if any
    protected: dict[str, str] = field(default_factory=dict)  # layers feeding an output -> why

    def by_name(self) -> dict[str, GroupSlices]:
        return {g.name: g for g in self.groups}


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


def tuple_linears(model: nn.Module) -> list[nn.Module]:
    """nn.Linear subclasses with a forward of their own (mixture-of-experts routers: Llama 4's returns
    (scores, logits)). torch-pruning 1.6.1 reads `outputs.shape` of every Linear it hooks before it
    unpacks a tuple, so such a module fails the trace; where it did, the trace is run again with these
    left out of its hooks, and the router is traced as the ops it runs (it is kept whole anyway in a
    transformers model: only FFN units and heads are pruned)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear) and type(m).forward is not nn.Linear.forward]


def _trace(model: nn.Module, example_inputs: Any, capture: OutputCapture | None, unwrapped: list,
           untraced: list[nn.Module]) -> tp.DependencyGraph:
    with quiet_unwrapped():
        return tp.DependencyGraph().build_dependency(
            model, example_inputs=example_inputs, forward_fn=run_model, output_transform=capture,
            unwrapped_parameters=unwrapped, customized_pruners=customized_pruners(), ignored_layers=untraced)


def build_graph(model: nn.Module, example_inputs: Any, deadline: Deadline | None = None,
                capture: OutputCapture | None = None) -> tp.DependencyGraph:
    """Trace the model; torch-pruning leaves it in eval mode, so restore the caller's mode."""
    was_training = model.training
    hooks = {m: (set(m._forward_hooks), set(m._forward_pre_hooks)) for m in model.modules()}
    try:
        if deadline is not None:
            deadline.status = "tracing the model"
        # Our own forward: torch-pruning's default tries model(*inputs) first, which on a 1-sample batch
        # runs convolutions on the unbatched sample and reports output shapes without the batch dim.
        # RMSNorm weights are parameters torch-pruning 1.6.1 has no pruner for: naming them with the dim
        # it would pick anyway (0) only silences its "Unwrapped parameters detected" warning.
        norms = {id(m): m for _, m in rms_norm_params(model).values()}
        rms = [(p, 0) for m in norms.values() for p in m.parameters(recurse=False) if p.dim() == 1]
        # Stacked experts likewise, on their hidden axis (torch-pruning's default, the last, is the units'
        # axis when they are transposed): dpm prunes them itself, never through a torch-pruning group.
        rms += expert_parameters(model)
        with cache_off(model):  # a decoder's key/value cache: nothing to prune, and untraceable
            try:
                return _trace(model, example_inputs, capture, rms, [])
            except AttributeError as err:  # see tuple_linears: retried only where the trace failed that way
                if "'tuple' object has no attribute 'shape'" not in str(err) or not tuple_linears(model):
                    raise
                _remove_new_hooks(hooks)
                return _trace(model, example_inputs, capture, rms, tuple_linears(model))
    except DpmError:
        _remove_new_hooks(hooks)  # interrupted mid-trace: torch-pruning's hooks are still registered
        raise
    except Exception as err:
        _remove_new_hooks(hooks)
        raise TraceError(f"torch-pruning cannot trace the model on the example inputs "
                         f"({type(err).__name__}: {str(err).strip().splitlines()[0][:160] if str(err).strip() else ''}); "
                         "check the input shape and that forward() runs on it") from err
    finally:
        model.train(was_training)


def _remove_new_hooks(before: dict[nn.Module, tuple[set, set]]) -> None:
    for module, (forward, pre) in before.items():
        for key in set(module._forward_hooks) - forward:
            del module._forward_hooks[key]
        for key in set(module._forward_pre_hooks) - pre:
            del module._forward_pre_hooks[key]


@contextmanager
def _as_trace_error(deadline: Deadline) -> Iterator[None]:
    """torch-pruning failing while it maps channels through the graph (an index mapping it cannot
    build, e.g. HunYuan v4's split rotary) is one line, like a failed trace, not a traceback."""
    try:
        yield
    except DpmError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise TraceError(f"torch-pruning failed while {deadline.status} ({type(err).__name__}: {first}), so dpm "
                         "cannot find this model's channel groups; a module named there can be set aside with "
                         "pruning.ignore") from err


@contextmanager
def _attention_that_runs(model: nn.Module) -> Iterator[set[nn.Module]]:
    """The attention modules (those a head adapter recognises) that run while the block executes."""
    ran: set[nn.Module] = set()
    hooks = [m.register_forward_hook(lambda module, args, out: ran.add(module))
             for m in model.modules() if adapter_for(m)]
    try:
        yield ran
    finally:
        for hook in hooks:
            hook.remove()


def _reached_only(ran: set[nn.Module], groups: list[GroupSlices], skipped: dict[str, str]) -> list[GroupSlices]:
    """Without the head groups of attention the example inputs never ran (a multimodal model's vision
    tower given text): nothing would rank, train or count them, so they are kept whole."""
    kept = []
    for g in groups:
        if g.kind == "heads" and g.root not in ran:
            skipped[g.name] = "its attention does not run on the example inputs (e.g. a vision tower given text): kept whole"
            continue
        kept.append(g)
    return kept


def discover_groups(model: nn.Module, example_inputs: Any, ignore: list[str] | None = None,
                    ignore_classifier: bool = True, *, timeout_s: float | None = None,
                    progress: Progress | None = None, through_norm: bool = False) -> GroupSet:
    """List every group DPM can decay exactly, skipping ignored roots, the layers that feed the
    model's outputs, and unsupported members. Stops after `timeout_s` seconds of graph building."""
    ignored, ignored_names = _match(list(ignore or []), model)
    capture = OutputCapture()
    hint = ("; or ignore the slow part with pruning.ignore (e.g. a whole stage: 'features.5*'); "
            "see docs/COVERAGE.md")
    with Deadline(timeout_s, "building torch-pruning's dependency graph", progress, hint=hint) as deadline, \
            tolerant_concat_widths(), _as_trace_error(deadline):
        with _attention_that_runs(model) as ran:
            graph = build_graph(model, example_inputs, deadline, capture)
        deadline.status = "finding the layers that feed the outputs"
        roots = root_types(ROOT_TYPES)  # + transformers' Conv1D (GPT-2) when loaded
        protected = protected_roots(graph, capture.tensors, roots) if ignore_classifier else {}
        ignored_all = [sub for m in ignored for sub in m.modules()] + list(protected)
        # Attention is pruned by whole heads. Only the user's ignore list keeps a module's heads: an
        # output-protected projection (its out-channels feed an output) keeps its input side prunable.
        user_ignored = [sub for m in ignored for sub in m.modules()]
        claims = HeadClaims(model, user_ignored)  # first: q/k/v never root a torch-pruning group
        claims.axes |= expert_axes(model)  # stacked experts: dpm's own groups below, never torch-pruning's
        groups, skipped = [], {}
        for root, tp_group, why in iter_groups(graph, ignored_all, roots, skip_norm_coupled=not through_norm,
                                               skip_root=claims.skip_root):
            name = graph._module2name.get(root, f"<{type(root).__name__}>")
            deadline.status = f"{len(groups) + len(skipped)} groups so far, at {name}"
            if tp_group is None:
                skipped[name] = why
                continue
            try:
                groups.append(_to_slices(graph, tp_group, name, root, through_norm))
            except Unsupported as why:
                skipped[name] = str(why)
        deadline.status = "adding attention heads"
        groups = _reached_only(ran, add_head_groups(model, groups, skipped, user_ignored, claims), skipped)
        deadline.status = "adding mixture-of-experts units"
        experts, refused = find_expert_groups(model, user_ignored)
        groups += experts
        skipped.update(refused)
    names = {m: n for n, m in model.named_modules()}
    for module, why in protected.items():
        skipped.setdefault(names.get(module, type(module).__name__), f"protected: {why}")
    if not groups:
        reason = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:2]) or "every group is ignored"
        raise BudgetError(f"nothing left to prune: no decayable channel group ({reason}); "
                          "relax the ignore patterns or use a model with Conv/Linear layers")
    classifier = _output_layer(graph, capture, names) if ignore_classifier else None
    return GroupSet(graph, groups, skipped, ignored_names, classifier, {names.get(m, "?"): w for m, w in protected.items()})


def _output_layer(graph: tp.DependencyGraph, capture: OutputCapture, names: dict[nn.Module, str]) -> str | None:
    """The Conv/Linear that computes the first output directly, if there is one (shown as the classifier)."""
    if not capture.tensors:
        return None
    for node in graph.module2node.values():
        if node.grad_fn is capture.tensors[0].grad_fn and isinstance(node.module, root_types(ROOT_TYPES)):
            return names.get(node.module)
    return None


def _to_slices(graph: tp.DependencyGraph, tp_group, name: str, root: nn.Module,
               through_norm: bool = False) -> GroupSlices:
    raw = []
    for item in tp_group:
        dep, local = item.dep, list(item.idxs)
        module = dep.target.module
        mod_name = graph._module2name.get(module, type(module).__name__)
        is_out = graph.is_out_channel_pruning_fn(dep.handler)
        root_idxs = list(item.root_idxs) if item.root_idxs is not None else local
        raw.extend(slices_of_item(module, dep.handler, is_out, mod_name, local, root_idxs, through_norm))
    channels = graph.get_out_channels(root)
    slices = merge_slices(raw)
    if not slices:
        raise Unsupported(f"{name}: the group has no parameters")
    period = split_period(graph, root, tp_group, channels)  # a fused gate/up projection: one row per part
    return GroupSlices(name=name, root=root, channels=channels, slices=slices, tp_group=tp_group,
                       unit_of=channel_units(graph, tp_group, channels, period))
