"""Sparse learning before pruning (DepGraph's setting, reported separately in the paper).

The dpm pipeline has no regularisation phase, so this one runs through the library: S steps of
training from the dense model with torch-pruning's group-norm regulariser (GroupNormPruner.regularize
after backward, before the optimizer step), which pushes the groups the magnitude criterion ranks
low towards zero. The result is cached per (setup, seed, S, reg, lr) and then pruned by the pipeline
for the remaining T - S steps, so sparse modes train for the same total number of steps.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
import torch_pruning as tp

from dpm_cli.checkpoint import build_from_factory

from .data import batches, evaluate, loaders
from .dense import CACHE, save_atomic
from .protocol import Protocol
from .setups import Setup

ALPHA = 4  # torch-pruning's default: the least important group gets 4x the regularisation


def sparse_path(setup: Setup, p: Protocol, seed: int, cache: Path = CACHE) -> Path:
    key = f"{setup.key()}|seed{seed}|S{p.sparse_steps}|reg{p.sparse_reg}|lr{p.lr}|b{p.batch_size}|a{ALPHA}"
    return cache / "sparse" / f"{setup.name}-s{seed}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"


def ensure_sparse(setup: Setup, p: Protocol, seed: int, dense: Path, cache: Path = CACHE) -> dict[str, object]:
    path = sparse_path(setup, p, seed, cache)
    if path.is_file():
        return {"path": str(path), "cached": True}
    torch.manual_seed(seed)
    model = build_from_factory(setup.factory, dict(setup.kwargs))
    model.load_state_dict(torch.load(dense, map_location="cpu", weights_only=True))
    example = torch.zeros(setup.input_shape)
    importance = tp.importance.GroupMagnitudeImportance(p=2)  # the criterion the modes prune with
    reg = tp.pruner.GroupNormPruner(model, example, importance=importance, reg=p.sparse_reg, alpha=ALPHA,
                                    ignored_layers=[model.head], global_pruning=True)
    model.train()  # building a torch-pruning pruner leaves the model in eval mode
    train, val = loaders(setup, seed, p.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=0.9, weight_decay=5e-4)
    for x, y in batches(train, p.sparse_steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        reg.regularize(model, alpha=ALPHA)
        opt.step()
    save_atomic(model.state_dict(), path)
    return {"path": str(path), "cached": False, **evaluate(model, val)}
