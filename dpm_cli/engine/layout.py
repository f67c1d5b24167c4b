"""All prunable groups as one flat channel vector: the per-step hot path in a few tensor ops.

Every optimizer step DPM reads the joint norm of each decaying channel and rescales it. Done group
by group that is ~10 small ops per parameter slice, and on CPU the dispatch overhead of those ops
alone costs several percent of a ResNet-56 training step. `FlatLayout` numbers every channel of every
group once (group gi's channel c is `offsets[gi] + c`) and every (parameter, dim) the groups touch
once (an "axis"), so that a step is one elementwise op and one reduction per axis, then a single
gather/scatter that maps axis entries to channels for all groups at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn as nn

from ..errors import ConfigError
from .structures import GroupSlices


@dataclass
class Axis:
    """Entries of `param` along `dim`; `offset` is where they start in the flat axis vector."""

    param: nn.Parameter
    dim: int
    offset: int

    @property
    def length(self) -> int:
        return self.param.shape[self.dim]

    def reduce_dims(self) -> tuple[int, ...]:
        return tuple(d for d in range(self.param.dim()) if d != self.dim)

    def reduction_plan(self) -> list[tuple[int, ...]]:
        """`reduce_dims` as successive sums. Summing a conv weight over dims (0, 2, 3) in one call runs
        a strided kernel ~5x slower than summing dim 0 first (contiguous rows) and then the rest."""
        dims = self.reduce_dims()
        spatial = self.param[0].numel() // max(self.param.shape[1], 1) if self.param.dim() > 2 else 1
        if dims[:1] == (0,) and len(dims) > 1 and spatial > 1:
            return [(0,), tuple(d - 1 for d in dims[1:])]
        return [dims] if dims else []

    def broadcast_shape(self) -> list[int]:
        shape = [1] * self.param.dim()
        shape[self.dim] = self.length
        return shape


class FlatLayout:
    """Maps between per-structure vectors of all groups and the parameters they live in.

    The flat vector has one entry per STRUCTURE (a channel, or a unit of channels that decay
    together: a grouped-conv block, an attention head; `GroupSlices.unit_of`). Every parameter entry
    maps straight to its structure, so a multi-channel structure costs the hot path nothing extra:
    its joint norm is the same one reduction, and its scale the same one gather. `channels` and
    "channel" below count structures."""

    def __init__(self, groups: list[GroupSlices]):
        self.offsets = [0]
        for g in groups:
            self.offsets.append(self.offsets[-1] + g.n_units)
        self.channels = self.offsets[-1]
        self.group_ids = torch.repeat_interleave(torch.arange(len(groups)),
                                                 torch.tensor([g.n_units for g in groups], dtype=torch.long))
        self.params, self.axes = self._build_axes(groups)
        self.device = self.params[0].device if self.params else torch.device("cpu")
        if any(p.device != self.device for p in self.params):
            raise ConfigError("DPM needs every prunable parameter on one device; move the model with .to(device) first")
        positions, channels, axis_of = [], [], []
        index = {(id(a.param), a.dim): i for i, a in enumerate(self.axes)}
        for gi, g in enumerate(groups):
            for s in g.slices:
                ai = index[(id(s.param), s.dim)]
                positions.append(self.axes[ai].offset + s.local.cpu())
                root = s.root.cpu()
                channels.append(self.offsets[gi] + (root if g.unit_of is None else g.unit_of[root]))
                axis_of.append(torch.full((len(s.local),), ai, dtype=torch.long))
        cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0, dtype=torch.long)  # noqa: E731
        self.pos, self.chan = cat(positions).to(self.device), cat(channels).to(self.device)
        self.axis_of = cat(axis_of).to(self.device)
        self.lengths = [a.length for a in self.axes]
        # Per parameter, its shape and how to reduce it to each of its axes, in axis order (= flat order).
        self._shapes = [tuple(p.shape) for p in self.params]
        self._numels = [p.numel() for p in self.params]
        self.numel = sum(self._numels)  # entries of all prunable parameters: the length of `values()`
        self._axis_total = sum(self.lengths)
        self._plans = [[a.reduction_plan() for a in self.axes if a.param is p] for p in self.params]

    @staticmethod
    def _build_axes(groups: list[GroupSlices]) -> tuple[list[nn.Parameter], list[Axis]]:
        """Unique parameters, and their axes laid out parameter by parameter (so one elementwise
        op per parameter feeds all of its axes, in order)."""
        dims: dict[int, tuple[nn.Parameter, list[int]]] = {}
        for g in groups:
            for s in g.slices:
                entry = dims.setdefault(id(s.param), (s.param, []))
                if s.dim not in entry[1]:
                    entry[1].append(s.dim)
        params, axes, offset = [], [], 0
        for param, param_dims in dims.values():
            params.append(param)
            for d in sorted(param_dims):
                axes.append(Axis(param, d, offset))
                offset += param.shape[d]
        return params, axes

    def key(self, flat_index: int) -> tuple[int, int]:
        """(group index, channel) of a flat channel index."""
        gi = int(self.group_ids[flat_index])
        return gi, flat_index - self.offsets[gi]

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """A flat per-channel vector as one view per group."""
        return list(flat.split([b - a for a, b in zip(self.offsets, self.offsets[1:])]))

    # ----------------------------------------------------------------- reading
    def flatten(self, tensors: Iterable[torch.Tensor | None], out: torch.Tensor | None = None) -> torch.Tensor:
        """One float32 vector of `tensors` (one per parameter, in `params` order; None counts as zeros):
        elementwise math then runs as one op for the whole model instead of one per parameter."""
        parts = [torch.zeros(n, device=self.device) if t is None else t.detach().reshape(-1).float()
                 for t, n in zip(tensors, self._numels)]
        if out is None:
            out = torch.empty(self.numel, device=self.device)
        return torch.cat(parts, out=out) if parts else out

    def values(self, out: torch.Tensor | None = None) -> torch.Tensor:
        return self.flatten(self.params, out)

    def grads(self, out: torch.Tensor | None = None) -> torch.Tensor:
        return self.flatten((p.grad for p in self.params), out)

    def channel_sums(self, flat: torch.Tensor) -> torch.Tensor:
        """Per channel of every group, the sum of an elementwise quantity over all the channel's slices.

        `flat` is the quantity laid out like `values()`, or k such rows ([k, numel]) for k quantities
        in one pass; the result is [channels] or [k, channels], on the CPU where the engine keeps its
        state."""
        rows = flat.shape[:-1]
        if not self.params:
            return torch.zeros(*rows, 0)
        parts = []
        for part, shape, plans in zip(flat.split(self._numels, dim=-1), self._shapes, self._plans):
            full = part.view(*rows, *shape)
            for plan in plans:
                reduced = full
                for dims in plan:
                    reduced = reduced.sum(dim=tuple(d + len(rows) for d in dims))
                parts.append(reduced)
        flat_axes = torch.cat(parts, dim=-1)
        sums = torch.zeros(*rows, self.channels, dtype=torch.float32, device=self.device)
        return sums.index_add_(-1, self.chan, flat_axes.index_select(-1, self.pos)).cpu()

    def norms(self) -> torch.Tensor:
        """The joint L2 norm of every channel of every group."""
        return self.channel_sums(self.values().square_()).sqrt()

    # ----------------------------------------------------------------- writing
    @torch.no_grad()
    def scale(self, per_channel: torch.Tensor,
              tensors_of: Callable[[nn.Parameter], Iterable[torch.Tensor]] = lambda p: (p,)) -> None:
        """Multiply every slice of channel i by per_channel[i], in place (Parameters keep their identity).

        A parameter entry in two channels (an out-channel of one group, an in-channel of another) gets
        the product. `tensors_of` picks what is scaled for each parameter: the parameter itself, or
        optimizer state tensors shaped like it.
        """
        factors = per_channel.to(self.device, torch.float32).index_select(0, self.chan)
        changed = factors != 1.0
        if not bool(changed.any()):
            return
        flat = torch.ones(self._axis_total, dtype=torch.float32, device=self.device)
        flat.scatter_reduce_(0, self.pos, factors, reduce="prod")
        touched = torch.zeros(len(self.axes), device=self.device).index_add_(0, self.axis_of, changed.float())
        views = flat.split(self.lengths)
        for ai in torch.nonzero(touched).flatten().tolist():
            axis = self.axes[ai]
            factor = views[ai].view(axis.broadcast_shape())
            for tensor in tensors_of(axis.param):
                tensor.mul_(factor if tensor.dtype == torch.float32 else factor.to(tensor.dtype))

    def scale_state(self, optimizer: torch.optim.Optimizer, per_channel: torch.Tensor) -> None:
        """Scale the optimizer's per-parameter state (momentum, exp_avg, ...) the same way."""
        def state_of(param: nn.Parameter) -> list[torch.Tensor]:
            return [v for v in optimizer.state.get(param, {}).values()
                    if torch.is_tensor(v) and v.shape == param.shape]

        self.scale(per_channel, state_of)
