"""MobileNetV2-style net (Sandler et al. 2018), shrunk for CIFAR-sized input on a CPU.

The stem keeps stride 1 (as CIFAR ports do) and the stage table is shorter than the ImageNet
one, so 32x32 and 28x28 input run fast while still exercising depthwise-conv coupling.
"""
from __future__ import annotations

import torch
from torch import nn

from dpm_cli.errors import ConfigError
from dpm_cli.models._init import init_weights

STEM_CHANNELS = 32
LAST_CHANNELS = 256
# (expansion t, output channels c, repeats n, first stride s), as in Table 2 of the paper.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))


def _divisible(channels: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of 8 (never below 8 or 10% under the target), as the paper does."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
             relu6: bool = True) -> nn.Sequential:
    """Conv (no bias: BN supplies the shift) + BN, with ReLU6 unless it is a linear projection."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu6:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection; residual when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:  # t = 1 would be an identity-width 1x1 conv; the paper omits it
            layers.append(_conv_bn(in_channels, hidden, 1))
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            # No activation after the projection: ReLU in the narrow bottleneck loses information.
            _conv_bn(hidden, out_channels, 1, relu6=False),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """Stride-1 stem, inverted-residual stages, 1x1 widening conv, global average pool, `head`."""

    def __init__(self, num_classes: int, in_channels: int, width_mult: float) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ConfigError(f"width_mult must be positive, got {width_mult}")
        channels = _divisible(STEM_CHANNELS * width_mult)
        layers: list[nn.Module] = [_conv_bn(in_channels, channels, 3)]
        for expansion, width, repeats, stride in STAGES:
            out_channels = _divisible(width * width_mult)
            for index in range(repeats):
                block_stride = stride if index == 0 else 1
                layers.append(InvertedResidual(channels, out_channels, block_stride, expansion))
                channels = out_channels
        last = _divisible(LAST_CHANNELS * max(1.0, width_mult))  # the paper never narrows the last conv
        layers.append(_conv_bn(channels, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(last, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> MobileNetV2:
    """Small MobileNetV2 for 32x32 / 28x28 input (about 0.21M parameters at width 1)."""
    return MobileNetV2(num_classes, in_channels, width_mult)
