"""Error types. Every error the user can cause says what is wrong and how to fix it in one line.

The CLI maps `InputError` to exit code 2 (bad input) and any other `DpmError` to exit code 1
(runtime failure); see `dpm_cli.cli.app.main`.
"""
from __future__ import annotations


class DpmError(Exception):
    """Base class of the errors dpm reports as one clear line."""

    exit_code = 1


class InputError(DpmError):
    """The user's input (model, recipe, data, options) cannot be used as given."""

    exit_code = 2


class ConfigError(InputError):
    """An option or recipe value is missing, of the wrong type or out of range."""


class TraceError(InputError):
    """torch-pruning could not trace the model from the example inputs."""


class BudgetError(InputError):
    """The requested budget cannot be met under the per-layer limits, or nothing is prunable."""


class CheckpointError(InputError):
    """A checkpoint is missing, corrupt, refused (pickle without trust) or does not fit the model."""


class EquivalenceError(DpmError):
    """The compact model does not compute what the decayed model computes."""


class TrainingError(DpmError):
    """Training diverged (NaN or infinite loss) or failed at run time."""


class GraphTimeoutError(TraceError):
    """Building torch-pruning's dependency graph or groups took longer than the configured limit."""


class PreflightError(InputError):
    """Removing the structures a selection would pick breaks the model; found before any training."""


class CompactionError(DpmError):
    """torch-pruning failed while removing the zeroed structures (the model is left as it was)."""


class OutOfSpaceError(DpmError):
    """An output could not be written: its disk is full (or the user's quota spent)."""
