"""CPU inference latency: median and spread over repeated runs, several models measured in one run.

Every model runs in eval mode under `torch.inference_mode`, after warm-up passes (the first calls
allocate memory and pick kernels). The models' timed passes are interleaved (A B, then B A, ...), so a
clock or load drift during the run slows both equally and the speed-up stays fair.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import ConfigError
from .counting import example_input
from .forward import run_forward


@dataclass(frozen=True)
class LatencyStats:
    """Timed forward passes of one model at one batch size, in milliseconds."""

    label: str
    batch_size: int
    samples_ms: tuple[float, ...]

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))

    @property
    def median_ms(self) -> float:
        return self.percentile(50)

    @property
    def q1_ms(self) -> float:
        return self.percentile(25)

    @property
    def q3_ms(self) -> float:
        return self.percentile(75)

    @property
    def p10_ms(self) -> float:
        return self.percentile(10)

    @property
    def p90_ms(self) -> float:
        return self.percentile(90)


@dataclass
class LatencyRun:
    """All models' timings from one `measure_latency` call."""

    batch_sizes: tuple[int, ...]
    repeats: int
    warmup: int
    threads: int
    stats: list[LatencyStats] = field(default_factory=list)

    def get(self, label: str, batch_size: int) -> LatencyStats:
        for s in self.stats:
            if s.label == label and s.batch_size == batch_size:
                return s
        raise KeyError(f"no latency measured for {label!r} at batch size {batch_size}")

    def speedup(self, slow: str, fast: str, batch_size: int) -> float:
        """How many times faster `fast` runs than `slow`: the median of the per-round time ratios.

        Rounds are interleaved, so each ratio compares two passes made moments apart; the median of
        those paired ratios cancels slow drift better than the ratio of the two medians.
        """
        a = np.asarray(self.get(slow, batch_size).samples_ms)
        b = np.asarray(self.get(fast, batch_size).samples_ms)
        return float(np.median(a / b))


def measure_latency(
    models: Mapping[str, nn.Module] | nn.Module,
    input_shape: Sequence[int] | Mapping[str, torch.Tensor],
    *,
    batch_sizes: Sequence[int] = (1,),
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> LatencyRun:
    """Time `model(x)` for each model at each batch size (x random, shaped like `input_shape` with its
    first dimension replaced by the batch size; token inputs, a dict of one example's tensors, are that
    example repeated batch-size times and passed as keyword arguments). `threads` sets torch's intra-op
    threads for the measurement (default: as configured). Training flags and the thread count are
    restored afterwards."""
    if isinstance(models, nn.Module):
        models = {"model": models}
    _validate(input_shape, batch_sizes, repeats, warmup, threads)
    previous_threads = torch.get_num_threads()
    modes = {m: m.training for model in models.values() for m in model.modules()}
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        run = LatencyRun(tuple(batch_sizes), repeats, warmup, torch.get_num_threads())
        for model in models.values():
            model.eval()
        for batch in batch_sizes:
            run.stats.extend(_measure_batch(models, input_shape, batch, repeats, warmup))
    finally:
        torch.set_num_threads(previous_threads)
        for module, training in modes.items():
            module.training = training
    return run


def _validate(input_shape: Sequence[int] | Mapping[str, torch.Tensor], batch_sizes: Sequence[int], repeats: int, warmup: int,
              threads: int | None) -> None:
    if not input_shape:
        raise ConfigError("latency needs an input shape, e.g. --input-shape 1,3,32,32")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ConfigError(f"batch sizes must be positive integers, got {list(batch_sizes)}; e.g. --batch-sizes 1,32")
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {repeats}")
    if warmup < 0:
        raise ConfigError(f"--warmup must be 0 or more, got {warmup}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")


def _measure_batch(
    models: Mapping[str, nn.Module], input_shape: Sequence[int] | Mapping[str, torch.Tensor], batch: int, repeats: int, warmup: int
) -> list[LatencyStats]:
    x = _batch(input_shape, batch)
    labels = list(models)
    samples: dict[str, list[float]] = {label: [] for label in labels}
    with torch.inference_mode():
        for _ in range(warmup):
            for label in labels:
                run_forward(models[label], _args(x))
        for round_ in range(repeats):
            # A B, B A, A B...: neither model always runs right after the other
            for label in labels if round_ % 2 == 0 else reversed(labels):
                samples[label].append(_time_once(models[label], x))
    return [LatencyStats(label, batch, tuple(samples[label])) for label in labels]


def _batch(input_shape: Sequence[int] | Mapping[str, torch.Tensor], batch: int) -> Any:
    """A batch of `batch` inputs: random for a shape; for token inputs, the one example repeated."""
    if isinstance(input_shape, Mapping):
        return {k: v[:1].repeat(batch, *[1] * (v.dim() - 1)) if torch.is_tensor(v) and v.dim() else v
                for k, v in input_shape.items()}
    return example_input((batch, *input_shape[1:]))


def _args(x: Any) -> Any:
    return x if isinstance(x, dict) else (x,)  # keyword arguments for token inputs


def _time_once(model: nn.Module, x: Any) -> float:
    start = time.perf_counter_ns()
    run_forward(model, _args(x))
    return (time.perf_counter_ns() - start) / 1e6
