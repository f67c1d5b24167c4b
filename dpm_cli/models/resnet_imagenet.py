"""ResNet-50 for 224x224 ImageNet input (He et al. 2016, Table 1), about 25.6M parameters.

Stride sits on the 3x3 conv of each bottleneck (the "v1.5" layout torchvision ships), so the
parameter count matches the usual 25,557,032 reference.
"""
from __future__ import annotations

import torch
from torch import nn

from dpm_cli.models._init import init_weights, shortcut

EXPANSION = 4
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (bottleneck width, blocks, stride)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), each with BN; projection shortcut on shape change."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class ResNet50(nn.Module):
    """7x7/2 stem + 3x3/2 max-pool, four bottleneck stages, global average pool, `head`."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        channels = 64
        for width, blocks, stride in STAGES:
            layers = [Bottleneck(channels, width, stride)]
            channels = width * EXPANSION
            layers += [Bottleneck(channels, width, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.head(torch.flatten(self.pool(x), 1))


def resnet50(num_classes: int = 1000, in_channels: int = 3) -> ResNet50:
    """ResNet-50 (25.6M parameters at 1000 classes), for 224x224 input."""
    return ResNet50(num_classes, in_channels)
