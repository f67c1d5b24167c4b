"""Shared pieces of the reference models: weight initialisation and the residual shortcut."""
from __future__ import annotations

from torch import nn


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (He et al. 2015), unit/zero norms, PyTorch-default linears.

    All draws come from torch's global generator, so `torch.manual_seed` fixes the result.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            # fan_out keeps the backward signal's variance stable through ReLU stacks.
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity, or a 1x1 conv + BN projection when the shape changes (so torch-pruning can couple
    the residual channels; zero-padding shortcuts would pin them)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))
