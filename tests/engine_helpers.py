"""Small models and a training loop shared by the engine tests."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dpm_cli.engine import DecayPruner


class TwoStage(nn.Module):
    """Conv-BN-ReLU x2 -> flatten -> linear: two groups that do not share a weight when one is ignored."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 4), 1))


class Residual(nn.Module):
    """A residual stage: the stem, both block outputs and the classifier input form one long group."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                          nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
            for _ in range(2))
        self.fc = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = F.relu(x + block(x))
        return self.fc(x.mean(dim=(2, 3)))


def batch(n: int = 16, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, pruner: DecayPruner | None, steps: int,
                data: tuple[torch.Tensor, torch.Tensor], after_step=None) -> None:
    x, y = data
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if pruner is not None:
            pruner.step()
        if after_step is not None:
            after_step()
