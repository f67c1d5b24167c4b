"""Optimizers (SGD, AdamW) and learning-rate schedules (cosine, step, constant) with linear warm-up."""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    """`cfg` has name, lr, momentum, nesterov, weight_decay, betas (recipe training.optimizer)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, cfg: Any, base_lr: float) -> float:
    """Multiplier of the base learning rate at `step` (0-based) of `total` steps."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return cfg.gamma ** ((step - cfg.warmup_steps) // cfg.step_size)
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr / base_lr if base_lr > 0 else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Any, total_steps: int,
                    decay_window: tuple[int, int] | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """`cfg` has name, warmup_steps, step_size, gamma, min_lr and optionally decay_lr_scale (recipe
    training.schedule). decay_window (first selection step, last step of the decay phase): optimizer
    steps first+1 .. last, the ones DPM decays in, get the rate times decay_lr_scale."""
    base_lr = optimizer.param_groups[0]["lr"]
    scale = getattr(cfg, "decay_lr_scale", 1.0)

    def factor(step: int) -> float:  # `step` (0-based) sets the rate of optimizer step step + 1
        inside = decay_window is not None and decay_window[0] <= step < decay_window[1]
        return lr_factor(step, total_steps, cfg, base_lr) * (scale if inside else 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def retarget_lr(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, lr: float) -> None:
    """Give a resumed run a new base learning rate, keeping the schedule's position.

    Loading the optimizer's and scheduler's state restores the old base rate; the schedule's factor
    at the current step then applies to the new one (what `--resume training.optimizer.lr=...` means)."""
    scheduler.base_lrs = [lr for _ in optimizer.param_groups]
    rates = [lr * fn(scheduler.last_epoch) for fn in scheduler.lr_lambdas]
    for group, rate in zip(optimizer.param_groups, rates):
        group["initial_lr"], group["lr"] = lr, rate
    scheduler._last_lr = rates  # what get_last_lr() reports; torch keeps it in this attribute
