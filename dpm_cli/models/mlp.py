"""A plain multilayer perceptron: the smallest model dpm prunes, and the sklearn-digits baseline."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dpm_cli.errors import ConfigError


class MLP(nn.Module):
    """Flatten -> (Linear -> ReLU) per hidden width -> Linear `head`."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        if in_features < 1 or any(width < 1 for width in hidden):
            raise ConfigError(
                f"mlp widths must be positive, got in_features={in_features}, hidden={tuple(hidden)}"
            )
        # Flatten first so image batches (e.g. 1x8x8 digits) feed in without a reshape.
        layers: list[nn.Module] = [nn.Flatten()]
        features = in_features
        for width in hidden:
            layers += [nn.Linear(features, width), nn.ReLU(inplace=True)]
            features = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def mlp(in_features: int = 64, hidden: Sequence[int] = (128, 64), num_classes: int = 10) -> MLP:
    """MLP for flattened input; the default fits 8x8 sklearn digits."""
    return MLP(in_features, tuple(hidden), num_classes)
