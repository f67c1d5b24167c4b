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


class HardcodedSplit(nn.Module):
    """An MLP whose forward splits its hidden layer at a hard-coded width: torch-pruning traces and
    groups it, but once a hidden unit is removed `split([16, 16])` no longer fits (the preflight's case)."""

    def __init__(self, in_features: int = 64, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(in_features, 32)
        self.fc2 = nn.Linear(32, 32)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(torch.flatten(x, 1)))
        a, b = self.fc2(h).split([16, 16], dim=1)
        return self.head(torch.cat([F.relu(a), b], 1))


class ConvHead(nn.Module):
    """SqueezeNet's shape of classifier: a 1x1 conv to the classes, then global pooling; no Linear."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                                      nn.ReLU())
        self.classifier = nn.Sequential(nn.Conv2d(32, classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


class TwoOutputs(nn.Module):
    """Returns a dict: logits from `head`, and an embedding from `embed` (a second output to protect)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(64, 48)
        self.embed = nn.Linear(48, 24)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.embed(F.relu(self.body(torch.flatten(x, 1))))
        return {"logits": self.head(F.relu(e)), "embedding": e}


class NormResidual(nn.Module):
    """A pre-norm residual MLP (the shape of a transformer without attention): the residual width is
    coupled through every LayerNorm, so only prune_through_norm can shrink it."""

    def __init__(self, width: int = 32, blocks: int = 2):
        super().__init__()
        self.embed = nn.Linear(64, width)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(blocks))
        self.fc1 = nn.ModuleList(nn.Linear(width, 2 * width) for _ in range(blocks))
        self.fc2 = nn.ModuleList(nn.Linear(2 * width, width) for _ in range(blocks))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(torch.flatten(x, 1))
        for norm, fc1, fc2 in zip(self.norms, self.fc1, self.fc2):
            x = x + fc2(F.gelu(fc1(norm(x))))
        return self.head(self.norm(x))
