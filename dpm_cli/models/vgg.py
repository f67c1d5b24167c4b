"""VGG-style nets with BatchNorm (Simonyan & Zisserman 2015; CIFAR variant after Liu et al. 2017).

The classifier flattens the last conv map directly, with no global pooling, so every output
channel of the last conv feeds `spatial**2` consecutive inputs of the first Linear. That
conv -> flatten -> Linear coupling is what these models exist to exercise.
"""
from __future__ import annotations

from typing import Union

import torch
from torch import nn

from dpm_cli.errors import ConfigError
from dpm_cli.models._init import init_weights

Layer = Union[int, str]  # an int is a 3x3 conv's width, "M" a 2x2 max-pool
VGG16_CFG: tuple[Layer, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)
VGG_SMALL_CFG: tuple[Layer, ...] = (32, "M", 64, "M", 128, 128, "M")
MIN_SPATIAL = 2  # keep the flattened map at least 2x2 so the flatten coupling is non-trivial


def _features(
    cfg: tuple[Layer, ...], in_channels: int, input_size: int, width_mult: float
) -> tuple[nn.Sequential, int, int]:
    """Conv-BN-ReLU stack; returns (layers, output channels, output spatial size).

    A max-pool is skipped when it would shrink the map below MIN_SPATIAL, which both lets
    8x8 and 28x28 input through and keeps a 2x2 map at 32x32 instead of a 1x1 one.
    """
    layers: list[nn.Module] = []
    channels, size = in_channels, input_size
    for item in cfg:
        if item == "M":
            if size // 2 >= MIN_SPATIAL:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            continue
        out_channels = max(1, round(int(item) * width_mult))
        layers += [
            nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        channels = out_channels
    return nn.Sequential(*layers), channels, size


class VGG(nn.Module):
    """`features` -> flatten -> Linear-ReLU `fc` -> Linear `head`; built for one input size."""

    def __init__(self, cfg: tuple[Layer, ...], hidden: int, num_classes: int, in_channels: int,
                 input_size: int, width_mult: float) -> None:
        super().__init__()
        if input_size < 1:
            raise ConfigError(f"input_size must be a positive integer, got {input_size}")
        if width_mult <= 0:
            raise ConfigError(f"width_mult must be positive, got {width_mult}")
        self.input_size = input_size
        self.features, channels, size = _features(cfg, in_channels, input_size, width_mult)
        hidden = max(1, round(hidden * width_mult))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels * size * size, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(hidden, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The flattened width depends on the input size, so say so rather than fail in a matmul.
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ConfigError(
                f"this VGG was built for {self.input_size}x{self.input_size} input but got "
                f"{x.shape[-2]}x{x.shape[-1]}; build it with input_size={x.shape[-1]}"
            )
        return self.head(self.relu(self.fc(self.flatten(self.features(x)))))


def vgg16_bn(
    num_classes: int = 10, in_channels: int = 3, input_size: int = 32, width_mult: float = 1.0
) -> VGG:
    """VGG-16 with BatchNorm, CIFAR head (one 512-wide hidden Linear)."""
    return VGG(VGG16_CFG, 512, num_classes, in_channels, input_size, width_mult)


def vgg_small(
    num_classes: int = 10, in_channels: int = 3, input_size: int = 32, width_mult: float = 1.0
) -> VGG:
    """Four-conv VGG for fast tests: 32, M, 64, M, 128, 128, M, then a 128-wide hidden Linear."""
    return VGG(VGG_SMALL_CFG, 128, num_classes, in_channels, input_size, width_mult)
