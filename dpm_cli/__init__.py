"""dpm: the Decay Pruning Method for PyTorch models, as a library and a CLI.

    from dpm_cli import DecayPruner, DPMConfig
    pruner = DecayPruner(model, example_inputs, DPMConfig(budget=0.5, decay_steps=100), optimizer=opt)
    ...  # after every optimizer.step(): pruner.step()
    compact = pruner.compact().model
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"

__all__ = ["DecayPruner", "DPMConfig", "RectifyConfig", "CompactionResult", "recalibrate_batchnorm",
           "load", "__version__"]


def load(path: str | Path, **kwargs: Any):
    """Load a model written by dpm (or any checkpoint kind `dpm_cli.checkpoint.load_model` reads).

    A dpm artifact (`*.dpm.pt`) is rebuilt from its factory and pruning history without unpickling code;
    the factory runs only if allow-listed (see `dpm_cli.trust`), equal to `factory=`, or with `trust=True`.
    `trust=True` also allows a pickled module. Bad or refused input raises `dpm_cli.errors.CheckpointError`.
    """
    from .checkpoint import load_model

    return load_model(path, **kwargs)


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `dpm --help` and `dpm report` do not pay for the engine.
    if name in {"DecayPruner", "DPMConfig", "RectifyConfig", "CompactionResult", "recalibrate_batchnorm"}:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'dpm_cli' has no attribute {name!r}")
