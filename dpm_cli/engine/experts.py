"""Mixture-of-experts FFNs as structures: the intermediate units of all experts of one layer.

transformers (5.x) stores a layer's experts as stacked Parameters, not as Linear layers:
`gate_up_proj` [experts, 2 x width, hidden] (gate and up fused; or `up_proj` alone) and `down_proj`
[experts, hidden, width], transposed in some families (GPT-OSS: [experts, hidden, 2 x width] and
[experts, width, hidden], gate and up interleaved, with biases). Its `use_experts_implementation`
decorator records that layout on every instance (`has_gate`, `is_transposed`, `is_concatenated`,
`has_bias`); dpm reads those flags instead of keeping a table per family. torch-pruning builds no
group on such Parameters, so dpm does, like attention heads: one group per experts module, removed by
dpm itself with index_select.

The stack holds one width for every expert, so every expert must lose the same number of units. A
structure is therefore "unit j of every expert", and before the group is built each expert's units
are put in order of their weight magnitude (`align_experts`, which leaves the model's function
unchanged): unit j is then the j-th least important unit of each expert, and removing the lowest j
removes each expert's own weakest units instead of units that only share an index. A module is
aligned once (`dpm_experts_aligned`); a resumed run aligns the freshly loaded original the same way
before its checkpoint, saved in aligned order, is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .structures import GroupSlices, Unsupported, merge_slices

HISTORY_TAG = "dpm:experts"  # a pruning-history entry [HISTORY_TAG, module name, removed units] (artifacts)


@dataclass(frozen=True)
class ExpertLayout:
    """Where the intermediate units of a stacked-experts module live."""

    inputs: tuple[str, ...]  # gate_up_proj (or up_proj), and its bias: the units are rows along `in_dim`
    parts: int  # 2: gate and up fused in one parameter
    interleaved: bool  # parts of a unit adjacent (2u, 2u + 1) instead of (u, u + width)
    in_dim: int  # the unit axis of the input projection (1, or 2 when transposed)
    down_dim: int  # the unit axis of down_proj (2, or 1 when transposed)
    width: int  # units per expert

    def rows(self, units: list[int]) -> list[int]:
        """The rows of the input projection that belong to `units`, in the layout's own order (so that
        selecting them gives the same layout over fewer units)."""
        if self.interleaved:
            return [u * self.parts + p for u in units for p in range(self.parts)]
        return [u + p * self.width for p in range(self.parts) for u in units]


# Experts classes without transformers' layout flags, and the layout their forward uses. Llama 4:
# bmm(hidden, gate_up_proj [experts, hidden, 2 x units]) then chunk(2): transposed, gate and up in halves.
UNFLAGGED = {"Llama4TextExperts": {"is_transposed": True, "is_concatenated": True}}


def describe(name: str, module: nn.Module) -> ExpertLayout | None:
    """The layout of a stacked-experts module, None for any other module, Unsupported when it looks
    like one but its layout cannot be read."""
    params = module._parameters
    down = params.get("down_proj")
    gated = getattr(module, "has_gate", "gate_up_proj" in params)
    first = params.get("gate_up_proj" if gated else "up_proj")
    if not (isinstance(down, nn.Parameter) and isinstance(first, nn.Parameter) and down.dim() == 3 == first.dim()):
        return None
    flags = {k: getattr(module, k) for k in ("is_transposed", "is_concatenated") if hasattr(module, k)} or \
        UNFLAGGED.get(type(module).__name__)
    if not flags:
        raise Unsupported(f"{name} ({type(module).__name__}) stacks its experts' weights without transformers' "
                          "layout flags (is_transposed, is_concatenated), so dpm cannot tell which axis holds "
                          "the units")
    transposed = bool(flags["is_transposed"])
    parts = 2 if gated else 1
    in_dim, down_dim = (2, 1) if transposed else (1, 2)
    width = down.shape[down_dim]
    if first.shape[in_dim] != parts * width or first.shape[0] != down.shape[0]:
        raise Unsupported(f"{name}: {'gate_up_proj' if gated else 'up_proj'} {list(first.shape)} and down_proj "
                          f"{list(down.shape)} do not share {parts} x {width} units per expert")
    key = "gate_up_proj" if gated else "up_proj"
    inputs = (key,) + ((f"{key}_bias",) if isinstance(params.get(f"{key}_bias"), nn.Parameter) else ())
    return ExpertLayout(inputs, parts, not flags.get("is_concatenated", True), in_dim, down_dim, width)


def _unit_axis(layout: ExpertLayout, attr: str) -> int:
    if attr == "down_proj":
        return layout.down_dim
    return 1 if attr.endswith("_bias") else layout.in_dim


def _local(layout: ExpertLayout, attr: str, units: list[int]) -> list[int]:
    return units if attr == "down_proj" else layout.rows(units)


def _owner(layout: ExpertLayout, attr: str) -> torch.Tensor:
    """The unit of every index along `attr`'s unit axis."""
    if attr == "down_proj":
        return torch.arange(layout.width)
    rows = torch.arange(layout.parts * layout.width)
    return rows // layout.parts if layout.interleaved else rows % layout.width


@torch.no_grad()
def align_experts(module: nn.Module, layout: ExpertLayout) -> None:
    """Reorder every expert's units by their joint weight norm, ascending (the same function: the gate,
    up and down weights of a unit move together). Done once per module."""
    if getattr(module, "dpm_experts_aligned", False):
        return
    attrs = layout.inputs + ("down_proj",)
    score = torch.zeros(module.down_proj.shape[0], layout.width)
    for attr in attrs:
        param, dim = getattr(module, attr), _unit_axis(layout, attr)
        squares = param.detach().float().square()
        others = [d for d in range(1, squares.dim()) if d != dim]
        per_row = squares.sum(dim=others) if others else squares  # [experts, rows]
        score.index_add_(1, _owner(layout, attr), per_row.cpu())
    order = score.argsort(dim=1, stable=True)  # [experts, width]: new unit j = old unit order[e, j]
    for attr in attrs:
        param, dim = getattr(module, attr), _unit_axis(layout, attr)
        rows = torch.stack([torch.tensor(_local(layout, attr, o.tolist())) for o in order]).to(param.device)
        view = [param.shape[0]] + [1] * (param.dim() - 1)
        view[dim] = rows.shape[1]
        param.copy_(param.gather(dim, rows.view(view).expand(param.shape)))
    module.dpm_experts_aligned = True


class ExpertRemoval:
    """Physical removal of units from every expert of one module (called by compaction)."""

    def __init__(self, name: str, module: nn.Module, layout: ExpertLayout):
        self.name, self.module, self.layout = name, module, layout

    @torch.no_grad()
    def __call__(self, channels: list[int]) -> list[int]:
        lay, module = self.layout, self.module
        keep = [u for u in range(lay.width) if u not in set(channels)]
        for attr in lay.inputs + ("down_proj",):
            param = getattr(module, attr)
            index = torch.tensor(_local(lay, attr, keep), dtype=torch.long, device=param.device)
            setattr(module, attr, nn.Parameter(param.detach().index_select(_unit_axis(lay, attr), index),
                                               param.requires_grad))
        if hasattr(module, "intermediate_dim"):  # read by some experts implementations
            module.intermediate_dim = len(keep)
        return sorted(channels)


def expert_group(name: str, module: nn.Module, layout: ExpertLayout) -> GroupSlices:
    """One group per experts module: channel u is unit u of every expert (see the module docstring)."""
    raw = []
    for attr in layout.inputs + ("down_proj",):
        owner = _owner(layout, attr).tolist()
        raw.append((getattr(module, attr), f"{name}.{attr}", _unit_axis(layout, attr), list(range(len(owner))), owner))
    # transformers' grouped matmul (torch._grouped_mm) needs rows aligned to 16 bytes: units leave in blocks
    # that keep every width a multiple of that (4 units of float32, 8 of bfloat16)
    block = max(1, 16 // getattr(module, layout.inputs[0]).element_size())
    return GroupSlices(name=name, root=module, channels=layout.width, slices=merge_slices(raw), tp_group=None,
                       remove=ExpertRemoval(name, module, layout), macs_module=name, kind="experts", block=block)


def stacked_experts(model: nn.Module):
    """(name, module, layout, why refused) of every stacked-experts module: a layout, or the reason
    (`Unsupported`) a module that looks like one cannot be read."""
    for name, module in model.named_modules():
        try:
            layout = describe(name, module)
        except Unsupported as why:
            yield name, module, None, str(why)
            continue
        if layout is not None:
            yield name, module, layout, None


def find_expert_groups(model: nn.Module, ignored: list[nn.Module]) -> tuple[list[GroupSlices], dict[str, str]]:
    """An (aligned) group for every stacked-experts module outside the ignored ones, and the modules that
    look like experts but cannot be pruned, with the reason."""
    ignored_ids = {id(m) for m in ignored}
    groups, skipped = [], {}
    for name, module, layout, why in stacked_experts(model):
        if id(module) in ignored_ids:
            continue
        if why:
            skipped[name] = why
        elif layout.width >= 2:
            align_experts(module, layout)
            groups.append(expert_group(name, module, layout))
    return groups, skipped


def expert_parameters(model: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """Every parameter of every stacked-experts module (refused ones included, on torch-pruning's default
    axis), with its hidden axis: the one torch-pruning's graph may couple to the residual stream (a 2-D
    bias: its last)."""
    params = []
    for _, module, layout, _ in stacked_experts(model):
        for attr, p in module.named_parameters(recurse=False):
            unit = _unit_axis(layout, attr) if layout and attr in layout.inputs + ("down_proj",) else None
            params.append((p, 3 - unit if p.dim() == 3 and unit else p.dim() - 1))
    return params


def expert_axes(model: nn.Module) -> set[tuple[int, int]]:
    """(parameter id, dim) of every axis of every stacked-experts parameter: no torch-pruning group may
    touch them (it sees them as unwrapped parameters and would cut the wrong axis)."""
    return {(id(p), d) for p, _ in expert_parameters(model) for d in range(p.dim())}


def replay_experts(model: nn.Module, entry: list) -> None:
    """Apply one recorded expert-unit removal to a model rebuilt from its config."""
    _, name, units = entry
    module = model.get_submodule(name)
    layout = describe(name, module)
    if layout is None:
        raise Unsupported(f"{name} is not a stacked-experts module dpm can prune")
    ExpertRemoval(name, module, layout)(list(units))
