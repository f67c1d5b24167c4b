"""Self-Rectifying criteria: is the loss pulling a decaying structure back out?

C_rate = d / L_s, with d = <x* - x, x> / ||x|| the radial (norm-changing, first-order) part of the
optimizer's step and L_s = L_init / N the per-step decay. Measuring the radial part rather than
||x*|| - ||x|| matters: a step orthogonal to x always grows the norm (second order), and weights that
feed a normalisation layer receive gradients orthogonal to themselves by construction, so the raw
norm growth flags everything (DPM_SPEC.md, "Self-Rectifying").

C_len = ||g_i|| / mean_j ||g_j|| over the group's channels that are not pruned.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import RectifyConfig
from .structures import GroupSlices


@dataclass
class Criteria:
    c_rate: torch.Tensor  # [C], float32, NaN where not evaluated
    c_len: torch.Tensor


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


def criteria(group: GroupSlices, snapshot: Snapshot, l_init: torch.Tensor, decay_steps: int,
             alive: torch.Tensor) -> Criteria:
    """C_rate and C_len for every channel of `group` (the caller picks the decaying ones)."""
    def radial(s) -> torch.Tensor:
        before = snapshot.before(s.param).float()
        return (s.param.detach().float() - before) * before

    outward = group.reduce(radial).cpu()
    before_norm = group.reduce(lambda s: snapshot.before(s.param).float().pow(2)).sqrt().cpu()
    d = outward / before_norm.clamp_min(1e-12)
    per_step_decay = (l_init / decay_steps).clamp_min(1e-12)
    c_rate = d / per_step_decay
    grad = group.grad_norms().cpu()
    mean_alive = grad[alive].mean() if alive.any() else torch.tensor(0.0)
    c_len = grad / mean_alive.clamp_min(1e-12)
    return Criteria(c_rate, c_len)


def rate_threshold(cfg: RectifyConfig, c_rates: torch.Tensor) -> float:
    """T_rate for this step: the absolute floor, or the configured quantile of the step's C_rates."""
    threshold = cfg.rate_threshold
    if cfg.rate_quantile is not None and c_rates.numel() > 0:
        threshold = max(threshold, float(torch.quantile(c_rates.double(), cfg.rate_quantile)))
    return threshold
