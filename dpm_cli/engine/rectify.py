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
from .layout import FlatLayout


class StepSums:
    """Per channel, everything one decay step needs, from one pass over the parameters:
    ||x*||^2 (the decay's norms), <x* - x, x> and ||x||^2 (C_rate), ||g||^2 (C_len); x* is the value
    after the optimizer step, x the value before it (`before`, a `FlatLayout.values()` snapshot)."""

    def __init__(self, layout: FlatLayout, before: torch.Tensor):
        # Written row by row into one buffer: copies of the whole model are what this step costs.
        rows = torch.empty(4, layout.numel, device=before.device)
        now = layout.values(out=rows[0])
        torch.sub(now, before, out=rows[1]).mul_(before)
        now.square_()
        torch.square(before, out=rows[2])
        layout.grads(out=rows[3]).square_()
        self.norm_sq, self.outward, self.before_sq, self.grad_sq = layout.channel_sums(rows)


def c_rate(sums: StepSums, l_init: torch.Tensor, decay_steps: int) -> torch.Tensor:
    """C_rate for every channel (the caller picks the decaying ones)."""
    d = sums.outward / sums.before_sq.sqrt().clamp_min(1e-12)
    return d / (l_init / decay_steps).clamp_min(1e-12)


def c_len(sums: StepSums, alive: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """C_len for every channel: its gradient norm over the mean of its group's non-pruned channels."""
    grad = sums.grad_sq.sqrt()
    groups = int(group_ids.max()) + 1 if group_ids.numel() else 0
    alive = alive.float()
    total = torch.zeros(groups).index_add_(0, group_ids, grad * alive)
    count = torch.zeros(groups).index_add_(0, group_ids, alive)
    mean_alive = (total / count.clamp_min(1.0)).index_select(0, group_ids)
    return grad / mean_alive.clamp_min(1e-12)


def rate_threshold(cfg: RectifyConfig, c_rates: torch.Tensor) -> float:
    """T_rate for this step: the absolute floor, or the configured quantile of the step's C_rates."""
    threshold = cfg.rate_threshold
    if cfg.rate_quantile is not None and c_rates.numel() > 0:
        threshold = max(threshold, float(torch.quantile(c_rates.double(), cfg.rate_quantile)))
    return threshold
