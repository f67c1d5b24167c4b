"""Decay shapes: the fraction of a structure's initial norm left after n of its N decay steps.

The paper's Smooth Pruning is linear, (N - n) / N. The cosine shape, (1 + cos(pi n / N)) / 2, starts
and ends gently: it removes less in the first and last steps and more in the middle, which gives the
rest of the network a slower start and a softer landing at zero. Both are exactly 1 at n = 0 and
exactly 0 at n = N (the pruner also sets the last step to zero itself).
"""
from __future__ import annotations

import math

import torch

SHAPES = ("linear", "cosine")


def remaining_fraction(n: torch.Tensor, n_total: int, shape: str = "linear") -> torch.Tensor:
    """Target norm / initial norm after decay step n (a tensor of step counts) of `n_total`."""
    n = n.clamp(0, n_total)
    if shape == "linear":
        return (n_total - n).float() / n_total  # this exact form: results reproduce bit for bit
    if shape == "cosine":
        return 0.5 * (1.0 + torch.cos(math.pi * n.float() / n_total))
    raise ValueError(f"unknown decay shape {shape!r}; use one of {', '.join(SHAPES)}")
