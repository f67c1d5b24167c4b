"""Self-Rectifying criteria: is the loss pulling a decaying structure back out?

C_rate = d / L_s, with d = <x* - x, x> / ||x|| the radial (norm-changing, first-order) part of the
optimizer's step and L_s = L_init / N the per-step decay. Measuring the radial part rather than
||x*|| - ||x|| matters: a step orthogonal to x always grows the norm (second order), and weights that
feed a normalisation layer receive gradients orthogonal to themselves by construction, so the raw
norm growth flags everything (DPM_SPEC.md, "Self-Rectifying").

C_len = ||g_i|| / mean_j ||g_j|| over the group's channels that are not pruned.
"""
from __future__ import annotations

import torch

from .config import RectifyConfig
from .structures import GroupSlices, ParamSums, grad_squares


class Snapshot:
    """Parameter values right after the previous DPM step: the x that the optimizer step started from."""

    def __init__(self) -> None:
        self._values: dict[int, torch.Tensor] = {}

    def take(self, groups: list[GroupSlices]) -> None:
        self._values = {}
        for g in groups:
            for s in g.slices:
                if id(s.param) not in self._values:
                    self._values[id(s.param)] = s.param.detach().clone()

    def clear(self) -> None:
        self._values = {}

    def has(self, group: GroupSlices) -> bool:
        return all(id(s.param) in self._values for s in group.slices)

    def before(self, param: torch.Tensor) -> torch.Tensor:
        return self._values[id(param)]


class StepSums:
    """The per-parameter quantities one step's criteria need, each computed at most once."""

    def __init__(self, snapshot: Snapshot):
        self.outward = ParamSums(lambda p: (p.detach().float() - snapshot.before(p).float()) * snapshot.before(p).float())
        self.before_sq = ParamSums(lambda p: snapshot.before(p).float().pow(2))
        self.grad_sq = ParamSums(grad_squares)


def c_rate(group: GroupSlices, sums: StepSums, l_init: torch.Tensor, decay_steps: int) -> torch.Tensor:
    """C_rate for every channel of `group` (the caller picks the decaying ones)."""
    outward = group.channel_sums(sums.outward).cpu()
    before_norm = group.channel_sums(sums.before_sq).sqrt().cpu()
    d = outward / before_norm.clamp_min(1e-12)
    return d / (l_init / decay_steps).clamp_min(1e-12)


def c_len(group: GroupSlices, sums: StepSums, alive: torch.Tensor) -> torch.Tensor:
    """C_len for every channel: its gradient norm over the mean of the group's non-pruned channels."""
    grad = group.channel_sums(sums.grad_sq).sqrt().cpu()
    mean_alive = grad[alive].mean() if alive.any() else torch.tensor(0.0)
    return grad / mean_alive.clamp_min(1e-12)


def rate_threshold(cfg: RectifyConfig, c_rates: torch.Tensor) -> float:
    """T_rate for this step: the absolute floor, or the configured quantile of the step's C_rates."""
    threshold = cfg.rate_threshold
    if cfg.rate_quantile is not None and c_rates.numel() > 0:
        threshold = max(threshold, float(torch.quantile(c_rates.double(), cfg.rate_quantile)))
    return threshold
