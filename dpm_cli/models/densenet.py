"""Small DenseNet (Huang et al. 2017): each layer's output is concatenated onto its input.

Pre-activation BN-ReLU-conv layers inside dense blocks, BN-ReLU-1x1 conv + 2x2 average-pool
transitions between blocks. The channel concatenation is the structure pruning must follow.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dpm_cli.errors import ConfigError
from dpm_cli.models._init import init_weights

COMPRESSION = 0.5  # transitions halve the channel count (DenseNet-BC's theta)


class DenseLayer(nn.Module):
    """BN-ReLU-3x3 conv producing `growth` new channels, appended to the input."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.relu(self.bn(x)))], dim=1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv to compress channels, then 2x2 average pool to halve the map."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(self.relu(self.bn(x))))


class DenseNet(nn.Module):
    """3x3 stem of 2*growth channels, dense blocks joined by transitions, BN-ReLU, pool, `head`."""

    def __init__(self, num_classes: int, in_channels: int, growth: int, block_layers: Sequence[int]) -> None:
        super().__init__()
        if growth < 1 or not block_layers or min(block_layers) < 1:
            raise ConfigError(
                f"densenet needs growth >= 1 and at least one block of >= 1 layers, got "
                f"growth={growth}, block_layers={tuple(block_layers)}"
            )
        channels = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)]
        for index, count in enumerate(block_layers):
            for _ in range(count):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            if index < len(block_layers) - 1:
                compressed = max(1, int(channels * COMPRESSION))
                layers.append(Transition(channels, compressed))
                channels = compressed
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def densenet_small(num_classes: int = 10, in_channels: int = 3, growth: int = 12,
                   block_layers: Sequence[int] = (4, 4)) -> DenseNet:
    """Two dense blocks of four layers at growth 12 (about 47k parameters)."""
    return DenseNet(num_classes, in_channels, growth, tuple(block_layers))
