"""CI gates: limits on a model's MACs, parameters and latency, and on its gain over a baseline.

A "reduction" or "speed-up" is always baseline / model: `min_macs_reduction=2.0` passes when the
model has at most half the baseline's MACs, `min_speedup=1.5` when it runs at least 1.5x as fast
(median of interleaved, paired timings at `batch_size`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch.nn as nn

from ..errors import ConfigError, DpmError
from .compare import ratio
from .counting import ModelCount, count_model, example_input
from .latency import LatencyRun, measure_latency


class GateFailure(DpmError):
    """At least one gate failed (exit code 1)."""


@dataclass(frozen=True)
class Limits:
    """The gates to check; None means "not checked"."""

    max_macs: float | None = None
    max_params: float | None = None
    max_latency_ms: float | None = None
    min_speedup: float | None = None
    min_macs_reduction: float | None = None
    min_params_reduction: float | None = None

    @property
    def needs_baseline(self) -> bool:
        return any(v is not None for v in (self.min_speedup, self.min_macs_reduction, self.min_params_reduction))

    @property
    def needs_latency(self) -> bool:
        return self.max_latency_ms is not None or self.min_speedup is not None

    def validate(self, has_baseline: bool) -> None:
        """Fail early (exit 2), before any model is loaded, on gates that cannot be checked."""
        given = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        if not given:
            raise ConfigError("no gates given: pass at least one of --max-macs, --max-params, --max-latency-ms, "
                              "or --baseline with --min-speedup / --min-macs-reduction / --min-params-reduction")
        for name, value in given.items():
            if not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.needs_baseline and not has_baseline:
            raise ConfigError("--min-speedup, --min-macs-reduction and --min-params-reduction compare against "
                              "a baseline: pass --baseline ORIGINAL_CHECKPOINT")
        if has_baseline and not self.needs_baseline:
            raise ConfigError("--baseline given but no gate uses it: add --min-speedup, --min-macs-reduction "
                              "or --min-params-reduction, or drop --baseline")


@dataclass(frozen=True)
class GateResult:
    """One gate: the limit, what was measured (None if it could not be), and whether it passed."""

    name: str
    limit: float
    measured: float | None
    unit: str
    passed: bool


@dataclass
class CheckResult:
    count: ModelCount
    gates: list[GateResult]
    baseline: ModelCount | None = None
    latency: LatencyRun | None = None
    batch_size: int = 1

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]


def evaluate_gates(
    limits: Limits,
    count: ModelCount,
    *,
    baseline: ModelCount | None = None,
    latency_ms: float | None = None,
    speedup: float | None = None,
) -> list[GateResult]:
    """Compare measured values with the limits; pure (measures nothing itself)."""
    results = []
    upper = [("max-macs", limits.max_macs, count.macs, "MACs"),
             ("max-params", limits.max_params, count.params, "params"),
             ("max-latency-ms", limits.max_latency_ms, latency_ms, "ms")]
    for name, limit, measured, unit in upper:
        if limit is not None:
            results.append(GateResult(name, limit, measured, unit, measured is not None and measured <= limit))
    lower = [("min-speedup", limits.min_speedup, speedup),
             ("min-macs-reduction", limits.min_macs_reduction, _reduction(baseline, count, "macs")),
             ("min-params-reduction", limits.min_params_reduction, _reduction(baseline, count, "params"))]
    for name, limit, measured in lower:
        if limit is not None:
            results.append(GateResult(name, limit, measured, "x", measured is not None and measured >= limit))
    return results


def _reduction(baseline: ModelCount | None, count: ModelCount, attr: str) -> float | None:
    if baseline is None:
        return None
    value = ratio(getattr(baseline, attr), getattr(count, attr))
    return float("inf") if value is None else value  # a model with none left is infinitely reduced


def check_model(
    model: nn.Module,
    input_shape: Sequence[int],
    limits: Limits,
    *,
    baseline: nn.Module | None = None,
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> CheckResult:
    """Measure what the limits need (latency only if a latency gate is set) and evaluate the gates."""
    limits.validate(baseline is not None)
    x = example_input(input_shape)
    count = count_model(model, x, label="model")
    base = count_model(baseline, x, label="baseline") if baseline is not None else None
    latency = latency_ms = speedup = None
    if limits.needs_latency:
        models = {"model": model} if limits.min_speedup is None else {"baseline": baseline, "model": model}
        latency = measure_latency(models, input_shape, batch_sizes=(batch_size,), repeats=repeats,
                                  warmup=warmup, threads=threads)
        latency_ms = latency.get("model", batch_size).median_ms
        if limits.min_speedup is not None:
            speedup = latency.speedup("baseline", "model", batch_size)
    gates = evaluate_gates(limits, count, baseline=base, latency_ms=latency_ms, speedup=speedup)
    return CheckResult(count, gates, base, latency, batch_size)
