"""The same data, split and batch order the pipeline uses, for code that runs outside it."""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from dpm_cli.data import load_data, make_loaders, set_epoch

from .setups import Setup

EVAL_BATCH = 500  # also the recipes' data.eval_batch_size, so both evaluate identically


@functools.lru_cache(maxsize=8)
def _bundle(source: str):
    # Defaults of the recipe schema: val_fraction 0.2, split_seed 0 (the fixed held-out split).
    return load_data(source, val_fraction=0.2, split_seed=0)


def loaders(setup: Setup, seed: int, batch_size: int | None = None) -> tuple[Any, Any]:
    """(train, val) exactly as `dpm prune` builds them with training.seed = seed."""
    return make_loaders(_bundle(setup.source), batch_size=batch_size or setup.batch_size,
                        eval_batch_size=EVAL_BATCH, seed=seed)


def batches(loader: Any, steps: int):
    """`steps` training batches in the pipeline's order (epoch by epoch, reshuffled per epoch)."""
    done, epoch = 0, 0
    while done < steps:
        set_epoch(loader, epoch)
        for batch in loader:
            yield batch
            done += 1
            if done >= steps:
                return
        epoch += 1


@torch.no_grad()
def evaluate(model: nn.Module, val_loader: Any) -> dict[str, float]:
    """Top-1 (%) and mean cross-entropy on the held-out split, in eval mode."""
    was = model.training
    model.eval()
    correct, loss, n = 0, 0.0, 0
    for x, y in val_loader:
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
        n += len(y)
    model.train(was)
    return {"top1": 100.0 * correct / n, "loss": loss / n}
