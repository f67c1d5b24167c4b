"""Bounds on input sizes, checked before anything is allocated or parsed.

A recipe or a shape is data from someone else as often as not; these limits keep a hostile or
mistyped one from hanging the process or exhausting memory. Each refusal says the estimate.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import ConfigError

MAX_RECIPE_BYTES = 1 << 20  # a real recipe is a few KB
MAX_YAML_NODES = 100_000  # after alias expansion (a billion-laughs bomb expands exponentially)
MAX_YAML_DEPTH = 64  # recipes nest 4 deep; free-form kwargs a little more
MAX_EXAMPLE_BYTES = 2 << 30  # one float32 example input
MAX_STEPS = 10**9  # optimizer steps; days at 10,000 steps/s


def human_bytes(n: float) -> str:
    for unit, size in (("EiB", 1 << 60), ("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20),
                       ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def example_bytes_problem(shape: Sequence[int]) -> str | None:
    """Why a float32 example input of `shape` is too large to allocate, or None."""
    size = 4 * math.prod(int(d) for d in shape)
    if size <= MAX_EXAMPLE_BYTES:
        return None
    return (f"an example input of shape {list(shape)} would take {human_bytes(size)} (float32), more than the "
            f"{human_bytes(MAX_EXAMPLE_BYTES)} limit; give a batch of 1 and the real sample shape")


def check_example_shape(shape: Sequence[int], what: str = "input shape") -> None:
    problem = example_bytes_problem(shape)
    if problem:
        raise ConfigError(f"{what}: {problem}")


def steps_problem(steps: int) -> str | None:
    if steps <= MAX_STEPS:
        return None
    years = steps / 1000 / 3600 / 24 / 365
    return (f"{steps:.3g} steps would take about {years:.3g} years even at 1000 steps/s; "
            f"give at most {MAX_STEPS:.0e} (or use training.epochs)")
