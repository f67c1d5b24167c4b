"""What a fine-tuning run is given (options, callbacks) and what it gives back (position, result)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn


@dataclass
class TrainerHooks:
    """Optional callbacks, e.g. for benchmarks that record every evaluation.

    before_step(step, model) runs between backward() and optimizer.step(), where a regulariser acts on
    the gradients (sparse learning); on_step(step, loss) runs after the step and DPM's update."""

    on_eval: Callable[[int, dict[str, float]], None] | None = None
    on_step: Callable[[int, float], None] | None = None
    before_step: Callable[[int, nn.Module], None] | None = None


@dataclass
class LoopOptions:
    total_steps: int
    eval_every: int | None = None  # None: once per epoch
    log_every: int = 10
    checkpoint_every: int = 100
    grad_clip: float | None = None
    bf16: bool = False
    recalibrate_bn: bool = True
    recalibrate_batches: int = 20
    recalibrate_at_zero: bool = False  # re-estimate BN statistics on every step structures reach zero
    # The anytime accuracy's cadence: evaluate every this many steps while structures decay and for
    # eval_after_decay steps after they are all zero, and on the step they all reach zero.
    eval_every_decay: int | None = None
    eval_after_decay: int = 10
    # what the progress bar calls this run: a dense pre-training must not read as pruning
    description: str = "dpm fine-tune"


@dataclass
class Position:
    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of `epoch` already consumed


@dataclass
class TrainResult:
    steps: int
    evals: list[dict[str, Any]] = field(default_factory=list)
    # The anytime accuracy: the lowest eval top-1 from the first selection to the first eval at or
    # after the end of the decay phase (for single-step pruning that eval is the only one that sees the cut).
    min_decay_top1: float | None = None
    decay_evals_done: bool = False
    decay_eval_steps: list[int] = field(default_factory=list)  # the evals min_decay_top1 covered
