"""The `obs` criterion: a channel matters as much as the output error its removal leaves when the
channels that remain compensate for it (Optimal Brain Surgeon, structured: OBS, Hassibi & Stork 1993;
the column form used by OBC/ZipLM and SlimGPT for pruning whole input features of a linear layer).

For a Linear that reads a group's channel j as input column j, with H the second moment of its inputs
on calibration tokens (centred: the refit's bias absorbs the mean) and a small damping,
    score(j) = ||W[:, j]||^2 / [H^-1]_jj
is the increase of the layer's squared output error when column j is removed and every other column
is re-solved by least squares. A channel that others duplicate or predict scores near zero, however
strongly it fires; the `activation` criterion (||W[:, j]|| x RMS x_j) cannot see that. The compensation
itself is what `pruning.reconstruct` applies when the structures reach zero, so the two go together.

The statistics are collected beside the activation criterion's (the same calibration forwards, real
tokens only) for the Linear layers that take a prunable group's channels as inputs: sum of x x^T, sum
of x and a count per layer, stored as float32 so that a resumed run ranks bit-identically. Groups
whose consumers are not Linear (convolutions) score as `activation` does, and are named.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn

from .activation import MaskedHooks

DAMPING = 1e-2  # of the mean diagonal of H: keeps H^-1 finite for dead or collinear inputs


class InputMoments(MaskedHooks):
    """Hooks that accumulate, per named Linear, the first and second moments of its input rows."""

    def __init__(self, names: set[str]):
        self.names = names
        self._sums: dict[str, list[Any]] = {}  # name -> [x^T x (float64), sum x (float64), count]

    @contextmanager
    def collect(self, model: nn.Module) -> Iterator["InputMoments"]:
        layers = [(m, self._accumulator(name)) for name, m in model.named_modules()
                  if name in self.names and isinstance(m, nn.Linear)]
        with self.hooked(model, layers):
            yield self

    def _accumulator(self, name: str) -> Any:
        @torch.no_grad()
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            if not inputs or not torch.is_tensor(inputs[0]):
                return
            x = inputs[0].detach()
            flat = x.reshape(-1, x.shape[-1]).double()
            mask = self._mask
            if mask is not None and tuple(x.shape[:-1]) == tuple(mask.shape):  # padding is not data
                flat = flat[mask.reshape(-1).bool()]
            entry = self._sums.setdefault(name, [0.0, 0.0, 0.0])
            entry[0] = entry[0] + flat.T @ flat
            entry[1] = entry[1] + flat.sum(0)
            entry[2] += float(flat.shape[0])
        return hook

    def result(self) -> dict[str, dict[str, torch.Tensor]]:
        """{name: {"gram": x^T x, "sum": sum x, "count": n}} on the CPU, float32 (what is saved)."""
        return {name: {"gram": g.float().cpu(), "sum": s.float().cpu(), "count": torch.tensor(n)}
                for name, (g, s, n) in self._sums.items() if n > 0}


def linear_consumers(groups: list[Any], model: nn.Module) -> set[str]:
    """Names of the Linear layers that read some group's channels as input columns (slices on dim 1)."""
    by_weight = {id(m.weight): name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    return {by_weight[id(s.param)] for g in groups for s in g.slices if s.dim == 1 and id(s.param) in by_weight}


@torch.no_grad()
def inverse_diagonal(moments: dict[str, torch.Tensor], damping: float = DAMPING) -> torch.Tensor:
    """[H^-1]_jj, H the damped centred second moment of a layer's inputs (float64, CPU). It depends on
    the calibration data only, so a pruner computes it once per collection (CalibrationActivations)."""
    n = float(moments["count"])
    mean = moments["sum"].double() / n
    h = moments["gram"].double() / n - torch.outer(mean, mean)
    h = h + (damping * float(h.diagonal().mean()) + 1e-12) * torch.eye(len(h), dtype=h.dtype)
    return torch.linalg.inv(h).diagonal().clone()


@torch.no_grad()
def column_scores(weight: torch.Tensor, moments: dict[str, torch.Tensor], damping: float = DAMPING) -> torch.Tensor:
    """||W[:, j]||^2 / [H^-1]_jj per input column j (CPU, float32); `moments["inverse_diagonal"]`, when
    present, is [H^-1]_jj already computed."""
    inverse = moments.get("inverse_diagonal")
    inverse = inverse_diagonal(moments, damping) if inverse is None else inverse
    return (weight.detach().double().cpu().square().sum(0) / inverse).float()


@torch.no_grad()
def obs_importance(group: Any, moments: dict[nn.Module, dict[str, torch.Tensor]]) -> torch.Tensor | None:
    """A group's OBS score per channel: the sum over the Linear layers reading its channels, normalised
    by the group mean like the other criteria; None when no such layer has moments."""
    modules = {id(m.weight): m for m in moments}
    imp, seen, cache = torch.zeros(group.channels), False, {}
    for s in group.slices:
        module = modules.get(id(s.param))
        if module is None or s.dim != 1:
            continue
        if module not in cache:
            cache[module] = column_scores(module.weight, moments[module])
        imp.index_add_(0, s.root.cpu(), cache[module].index_select(0, s.local.cpu()))
        seen = True
    return imp / imp.mean().clamp_min(1e-12) if seen else None
