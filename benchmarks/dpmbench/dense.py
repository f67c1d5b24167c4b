"""Dense reference models, trained once and cached in benchmarks/.cache/ (git-ignored)."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dpm_cli.checkpoint import build_from_factory

from .data import batches, evaluate, loaders
from .setups import Setup

CACHE = Path(__file__).resolve().parents[1] / ".cache"


def save_atomic(obj: object, path: Path) -> None:
    """Write then rename, so an interrupted run never leaves a half-written cache file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def dense_path(setup: Setup, cache: Path = CACHE) -> Path:
    digest = hashlib.sha1(setup.key().encode()).hexdigest()[:10]
    return cache / f"dense-{setup.name}-{digest}.pt"


def ensure_dense(setup: Setup, cache: Path = CACHE) -> dict[str, object]:
    """Train the dense model unless cached; return {path, top1, loss, seconds, cached}."""
    path = dense_path(setup, cache)
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        return {**json.loads(meta.read_text()), "path": str(path), "cached": True}
    start = time.perf_counter()
    torch.manual_seed(0)
    model = build_from_factory(setup.factory, dict(setup.kwargs))
    train, val = loaders(setup, seed=0)
    steps = setup.dense_epochs * len(train)
    # The pipeline's own pre-training recipe: SGD with momentum, one-cycle schedule.
    opt = torch.optim.SGD(model.parameters(), lr=setup.dense_lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=setup.dense_lr, total_steps=steps)
    model.train()
    for x, y in batches(train, steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
    result = {**evaluate(model, val), "steps": steps, "seconds": round(time.perf_counter() - start, 1)}
    save_atomic(model.state_dict(), path)
    meta.write_text(json.dumps(result))
    return {**result, "path": str(path), "cached": False}
