"""Least-squares reconstruction: refit the layers that consume pruned channels so that they reproduce
the original model's outputs, once the channels are zero.

When a structure reaches zero, the layer that read it (an FFN's down projection, an attention output
projection) loses that input. For a linear consumer the best replacement from the inputs that remain is
a linear regression: weights W[:, kept] and bias chosen so that, on the calibration batches,
W' x_kept + b' matches what the ORIGINAL model's same layer outputs. It is solved in closed form (ridge
regularised normal equations, float64), one consumer at a time in module order, each seeing the inputs
the already-refitted layers before it produce (sequential reconstruction, as in ThiNet and the
"bias compensation" of FLAP, here with every kept weight, not the bias only).

It needs the original model with the same module names (a frozen copy from before pruning) and only
touches consumers that are `nn.Linear`; others (convolutions, transformers' Conv1D) are left as they are
and named in the result, and so are layers called more than once per forward (ALBERT shares one layer's
weights across its layers: a refit from one call's inputs would change what its later calls read) or
never called as modules (nn.MultiheadAttention applies its out_proj's weight inside its own forward). Pruned columns stay exactly zero, so compaction is unaffected.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from .state import PRUNED


@dataclass
class Consumer:
    """A linear layer reading pruned channels: `pruned` are its input features that are zero."""

    name: str
    module: nn.Linear
    pruned: torch.Tensor  # long, sorted input indices
    dead: torch.Tensor  # long, sorted output indices that are pruned themselves: they stay zero

    def kept(self) -> torch.Tensor:
        return _complement(self.pruned, self.module.in_features)

    def live(self) -> torch.Tensor:
        return _complement(self.dead, self.module.out_features)


def _complement(indices: torch.Tensor, size: int) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[indices] = False
    return torch.nonzero(mask).flatten()


@dataclass
class Refit:
    """What one consumer's refit did, as relative errors ||y - y_original|| / ||y_original|| on the
    calibration tokens (before: the layer as it was; after: refitted)."""

    name: str
    before: float
    after: float
    applied: bool
    # why a layer was left as it is: "shared" (called more than once per forward: ALBERT shares a layer's
    # weights across its layers) or "not called" (its weight is applied inside another module's forward:
    # nn.MultiheadAttention's out_proj)
    left: str = ""


def consumers(pruner: Any, model: nn.Module) -> tuple[list[Consumer], list[str]]:
    """The linear layers whose input features include pruned channels, in module order, and the names
    of other consumers (not refitted)."""
    linear = {id(m.weight): (n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    pruned_inputs: dict[str, set[int]] = {}
    pruned_outputs: dict[str, set[int]] = {}
    others: list[str] = []
    for group, state in zip(pruner.groups, pruner.states):
        gone = state.status == PRUNED
        if group.unit_of is not None:
            gone = gone[group.unit_of]
        if not bool(gone.any()):
            continue
        for s in group.slices:
            hit = linear.get(id(s.param))
            local = s.local[gone[s.root]].tolist()
            if hit is not None and s.dim == 0:
                pruned_outputs.setdefault(hit[0], set()).update(local)
            elif hit is not None and s.dim == 1:
                pruned_inputs.setdefault(hit[0], set()).update(local)
            elif s.dim == 1:
                others.append(s.name)
    order = {n: i for i, n in enumerate(name for name, _ in model.named_modules())}
    modules = {name: module for name, module in linear.values()}
    found = [Consumer(n, modules[n], torch.tensor(sorted(idx), dtype=torch.long),
                      torch.tensor(sorted(pruned_outputs.get(n, ())), dtype=torch.long))
             for n, idx in pruned_inputs.items() if idx]
    return sorted(found, key=lambda c: order[c.name]), sorted(set(others))


def _token_rows(inputs: Any, rows: int) -> torch.Tensor | None:
    """Real-token rows of a flattened [batch, seq, features] activation: padding is not data."""
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    if mask is None or mask.numel() != rows:
        return None
    return mask.reshape(-1).bool()


class _Captured(Exception):
    """Raised by the capture hook: the rest of the forward pass is not needed."""


def _capture(module: nn.Module, model: nn.Module, inputs: Any, call: Callable[[nn.Module, Any], Any],
             want_input: bool, stop: bool = True) -> list[torch.Tensor]:
    """The input (or output) of `module` on `inputs`, once per call of it. With `stop` the forward ends
    at the first call, since nothing after the layer matters to its refit (a refit's cost then grows
    with the layer's depth); without it the whole forward runs, which shows a layer shared by several
    layers (ALBERT: one tensor per call)."""
    got: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        got.append((args[0] if want_input else out).detach())
        if stop:
            raise _Captured

    handle = module.register_forward_hook(hook)
    try:
        call(model, inputs)
    except _Captured:
        pass
    finally:
        handle.remove()
    return got


@torch.no_grad()
def refit(model: nn.Module, original: nn.Module, found: list[Consumer], batches: Callable[[], Iterable[Any]],
          call: Callable[[nn.Module, Any], Any], ridge: float = 1e-3) -> list[Refit]:
    """Refit every consumer in `found` (in order) on `batches()` (called once per consumer: the inputs
    must reflect the layers refitted before it). `model` and `original` must be in eval mode."""
    originals = dict(original.named_modules())
    results = []
    for c in found:
        if c.name not in originals:
            raise ValueError(f"the original model has no layer {c.name!r} to reconstruct")
        results.append(_refit_one(model, originals[c.name], original, c, batches, call, ridge))
    return results


def _refit_one(model: nn.Module, target_layer: nn.Module, original: nn.Module, c: Consumer,
               batches: Callable[[], Iterable[Any]], call: Callable[[nn.Module, Any], Any], ridge: float) -> Refit:
    device = c.module.weight.device  # the sums live beside the layer (float64: the normal equations need it)
    kept, live, bias = c.kept().to(device), c.live().to(device), c.module.bias is not None
    width = len(kept) + int(bias)
    gram = torch.zeros(width, width, dtype=torch.float64, device=device)
    cross = torch.zeros(width, len(live), dtype=torch.float64, device=device)
    y_sq = err_sq = 0.0
    for i, inputs in enumerate(batches()):
        xs = _capture(c.module, model, inputs, call, want_input=True, stop=i > 0)
        if len(xs) != 1:  # shared by several layers (ALBERT): its later calls read what its refit changes
            return Refit(c.name, math.nan, math.nan, applied=False, left="shared" if xs else "not called")
        ys = _capture(target_layer, original, inputs, call, want_input=False, stop=i > 0)
        if len(ys) != 1:
            return Refit(c.name, math.nan, math.nan, applied=False, left="shared" if ys else "not called")
        y = ys[0]
        x = xs[0].reshape(-1, xs[0].shape[-1]).double()
        y = y.reshape(-1, y.shape[-1]).double()[:, live]  # outputs pruned themselves stay zero
        rows = _token_rows(inputs, len(x))
        if rows is not None:
            x, y = x[rows], y[rows]
        now = x @ c.module.weight[live].double().T + (c.module.bias[live].double() if bias else 0.0)
        y_sq += float(y.square().sum())
        err_sq += float((now - y).square().sum())
        xk = x[:, kept]
        if bias:
            xk = torch.cat([xk, torch.ones(len(xk), 1, dtype=xk.dtype, device=device)], 1)
        gram += xk.T @ xk
        cross += xk.T @ y
    before = (err_sq / max(y_sq, 1e-30)) ** 0.5
    damp = ridge * float(gram.diagonal().mean()) + 1e-12
    try:
        coef = torch.linalg.solve(gram + damp * torch.eye(width, dtype=gram.dtype, device=device), cross)
    except RuntimeError:
        return Refit(c.name, before, before, applied=False)
    # ||Y - X A||^2 = sum Y^2 - 2 tr(A^T X^T Y) + tr(A^T X^T X A), from the sums already accumulated
    resid = y_sq - 2 * float((coef * cross).sum()) + float((coef * (gram @ coef)).sum())
    after = (max(resid, 0.0) / max(y_sq, 1e-30)) ** 0.5
    if not after < before:
        return Refit(c.name, before, before, applied=False)
    w = c.module.weight
    w[live.unsqueeze(1), kept.unsqueeze(0)] = coef[:len(kept)].T.to(w.dtype)
    w[:, c.pruned.to(device)] = 0.0
    if bias:
        c.module.bias[live] = coef[len(kept)].to(w.dtype)
    return Refit(c.name, before, after, applied=True)
