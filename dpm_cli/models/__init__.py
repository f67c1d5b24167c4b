"""Reference architectures dpm ships, since torchvision is not a dependency.

Every model's last layer is an `nn.Linear` named `head`, so callers can leave the classifier
out of pruning with `ignored_layers=[model.head]`. Constructors take only plain keyword
values (ints, floats, tuples), so a YAML recipe can name them, e.g. `dpm_cli.models:resnet56`.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from torch import nn

from dpm_cli.errors import ConfigError
from dpm_cli.models.densenet import densenet_small
from dpm_cli.models.mlp import mlp
from dpm_cli.models.mobilenetv2 import mobilenetv2
from dpm_cli.models.resnet_cifar import resnet20, resnet56, resnet_cifar
from dpm_cli.models.resnet_imagenet import resnet50
from dpm_cli.models.transformer import vit_tiny
from dpm_cli.models.vgg import vgg16_bn, vgg_small

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet56": resnet56,
    "resnet50": resnet50,
    "vgg16_bn": vgg16_bn,
    "vgg_small": vgg_small,
    "mobilenetv2": mobilenetv2,
    "densenet_small": densenet_small,
    "vit_tiny": vit_tiny,
    "mlp": mlp,
}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model `name` with constructor keywords `kwargs`."""
    factory = MODELS.get(name)
    if factory is None:
        close = difflib.get_close_matches(name, MODELS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown model '{name}'; {hint}known models: {', '.join(MODELS)}")
    return factory(**kwargs)


__all__ = [
    "MODELS",
    "build_model",
    "densenet_small",
    "mlp",
    "mobilenetv2",
    "resnet20",
    "resnet50",
    "resnet56",
    "resnet_cifar",
    "vgg16_bn",
    "vgg_small",
    "vit_tiny",
]
