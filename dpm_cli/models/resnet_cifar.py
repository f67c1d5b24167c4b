"""CIFAR-style ResNet (He et al. 2016, Sec. 4.2): depth = 6n + 2, three stages of n basic blocks.

Shape-changing shortcuts are 1x1 conv + BN projections (option B) rather than zero-padding
(option A), so torch-pruning sees a real layer on every residual path and can couple the
channels of a whole stage.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dpm_cli.errors import ConfigError
from dpm_cli.models._init import init_weights, shortcut


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """3x3 stem, stages of width w, 2w, 4w (strides 1, 2, 2), global average pool, `head`."""

    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        channels = width
        for index, stride in enumerate((1, 2, 2)):
            out_channels = width * 2**index
            blocks = [BasicBlock(channels, out_channels, stride)]
            blocks += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = out_channels
        self.layer1, self.layer2, self.layer3 = stages
        # Adaptive pooling lets the same net take 32x32 CIFAR, 28x28 MNIST or 8x8 digits.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.head(torch.flatten(self.pool(x), 1))


def resnet_cifar(depth: int, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> ResNetCifar:
    """Build a CIFAR ResNet of `depth` layers (20, 32, 44, 56, 110, ...: any 6n + 2)."""
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"resnet_cifar depth must be 6n + 2 with n >= 1 (e.g. 20, 56), got {depth}")
    if width < 1:
        raise ConfigError(f"resnet_cifar width must be a positive integer, got {width}")
    return ResNetCifar((depth - 2) // 6, num_classes, in_channels, width)


def resnet20(**kwargs: Any) -> ResNetCifar:
    """ResNet-20 for CIFAR (0.27M parameters at width 16)."""
    return resnet_cifar(20, **kwargs)


def resnet56(**kwargs: Any) -> ResNetCifar:
    """ResNet-56 for CIFAR (0.86M parameters at width 16)."""
    return resnet_cifar(56, **kwargs)
