"""CI gates: limits on a model's MACs, parameters and latency, and on its gain over a baseline.

A "reduction" or "speed-up" is always baseline / model: `min_macs_reduction=2.0` passes when the
model has at most half the baseline's MACs, `min_speedup=1.5` when it runs at least 1.5x as fast
(median of interleaved, paired timings at `batch_size`).

Quality gates evaluate the model and its baseline on the same data in one pass (`quality.py`):
`max_accuracy_drop` in top-1 points (baseline - model), `min_accuracy` in %, `max_loss_increase` in
cross-entropy (model - baseline), `min_cosine` the mean per-sample cosine of the two models' outputs
(for label-free models). `built-from` (see `dpm_cli.provenance`) passes when the model's recorded
inputs are the given checkpoint, recipe and data.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn as nn

from ..errors import ConfigError, DpmError
from ..provenance import BuiltFrom
from .compare import ratio
from .counting import ModelCount, count_model, example_input
from .evaldata import EvalData
from .latency import LatencyRun, measure_latency
from .quality import Quality, measure_quality

# Quality gates: allowed range of the limit, and what a value means (for the message).
_RANGES = {
    "max_accuracy_drop": (0.0, 100.0, "top-1 points, 0 to 100"),
    "min_accuracy": (0.0, 100.0, "top-1 accuracy in %, 0 to 100"),
    "max_loss_increase": (0.0, float("inf"), "a cross-entropy increase, 0 or more"),
    "min_cosine": (-1.0, 1.0, "a cosine similarity, -1 to 1"),
}
_BASELINE_GATES = "--min-speedup, --min-macs-reduction, --min-params-reduction, --max-accuracy-drop, " \
                  "--max-loss-increase or --min-cosine"


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
    max_accuracy_drop: float | None = None
    min_accuracy: float | None = None
    max_loss_increase: float | None = None
    min_cosine: float | None = None

    @property
    def needs_baseline(self) -> bool:
        return any(v is not None for v in (self.min_speedup, self.min_macs_reduction, self.min_params_reduction,
                                           self.max_accuracy_drop, self.max_loss_increase, self.min_cosine))

    @property
    def needs_labels(self) -> bool:
        return any(v is not None for v in (self.max_accuracy_drop, self.min_accuracy, self.max_loss_increase))

    @property
    def needs_data(self) -> bool:
        return self.needs_labels or self.min_cosine is not None

    @property
    def needs_latency(self) -> bool:
        return self.max_latency_ms is not None or self.min_speedup is not None

    def validate(self, has_baseline: bool, *, other_gates: bool = False) -> None:
        """Fail early (exit 2), before any model is loaded, on gates that cannot be checked.
        `other_gates`: a gate outside these limits (--built-from) is given."""
        given = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        if not given and not other_gates:
            raise ConfigError("no gates given: pass at least one of --max-macs, --max-params, --max-latency-ms, "
                              "--min-accuracy, --built-from, or --baseline with " + _BASELINE_GATES)
        for name, value in given.items():
            option = f"--{name.replace('_', '-')}"
            low, high, what = _RANGES.get(name, (None, None, ""))
            if low is None and not value > 0:
                raise ConfigError(f"{option} must be positive, got {value}")
            if low is not None and not low <= value <= high:
                raise ConfigError(f"{option} {value} is out of range: give {what}")
        if self.needs_baseline and not has_baseline:
            raise ConfigError(f"{_BASELINE_GATES} compare against a baseline: pass --baseline ORIGINAL_CHECKPOINT")
        if has_baseline and not (self.needs_baseline or self.needs_data):  # data gates evaluate both models
            raise ConfigError(f"--baseline given but no gate uses it: add {_BASELINE_GATES}, or drop --baseline")


@dataclass(frozen=True)
class GateResult:
    """One gate: the limit, what was measured (None if it could not be), and whether it passed."""

    name: str
    limit: float | None  # None for built-from, which compares hashes, not numbers
    measured: float | None
    unit: str
    passed: bool
    detail: str | None = None  # built-from: what matched or differed


@dataclass
class CheckResult:
    count: ModelCount
    gates: list[GateResult]
    baseline: ModelCount | None = None
    latency: LatencyRun | None = None
    batch_size: int = 1
    quality: Quality | None = None
    built_from: BuiltFrom | None = None

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
    quality: Quality | None = None,
    built_from: BuiltFrom | None = None,
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
    q = quality
    for name, limit, measured, unit, upper_bound in (
            ("max-accuracy-drop", limits.max_accuracy_drop, q and q.accuracy_drop, "points", True),
            ("min-accuracy", limits.min_accuracy, q and q.model.top1, "%", False),
            ("max-loss-increase", limits.max_loss_increase, q and q.loss_increase, "loss", True),
            ("min-cosine", limits.min_cosine, q and q.cosine, "cosine", False)):
        if limit is not None:
            ok = measured is not None and (measured <= limit if upper_bound else measured >= limit)
            results.append(GateResult(name, limit, measured, unit, ok))
    if built_from is not None:
        detail = "; ".join(built_from.differences) or "same checkpoint, recipe and data as recorded"
        results.append(GateResult("built-from", None, None, "provenance", built_from.passed, detail))
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
    data: EvalData | None = None,
    device: torch.device | str = "cpu",
    eval_batch_size: int = 256,
    show_progress: bool = False,
    built_from: BuiltFrom | None = None,
    log_progress: bool = False,
) -> CheckResult:
    """Measure what the limits need (latency only if a latency gate is set, the data only if a quality
    gate is) and evaluate the gates. `show_progress`: a bar of the evaluation; else `log_progress`: a line
    every half minute of a long one."""
    limits.validate(baseline is not None, other_gates=built_from is not None)
    check_data(limits, data)
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
    quality = None
    if limits.needs_data and data is not None:
        quality = _evaluate(model, baseline, data, limits, device, eval_batch_size, show_progress, log_progress)
    gates = evaluate_gates(limits, count, baseline=base, latency_ms=latency_ms, speedup=speedup, quality=quality,
                           built_from=built_from)
    return CheckResult(count, gates, base, latency, batch_size, quality, built_from)


def check_data(limits: Limits, data: EvalData | None) -> None:
    """Quality gates need data, and the accuracy and loss gates labels: exit 2 before any evaluation."""
    if not limits.needs_data:
        return
    if data is None:
        raise ConfigError("--max-accuracy-drop, --min-accuracy, --max-loss-increase and --min-cosine evaluate "
                          "on data: pass --recipe (its validation data) or --data FILE|SOURCE")
    if limits.needs_labels and not data.labeled:
        raise ConfigError(f"--max-accuracy-drop, --min-accuracy and --max-loss-increase need labels, but "
                          f"{data.description} has none: use --min-cosine, or --data with labels")


def _evaluate(model: nn.Module, baseline: nn.Module | None, data: EvalData, limits: Limits,
              device: torch.device | str, batch_size: int, show_progress: bool, log_progress: bool) -> Quality:
    from .progress import sample_progress

    device = torch.device(device)
    models = [m for m in (model, baseline) if m is not None]
    homes = [next(m.parameters(), torch.empty(0)).device for m in models]
    for m in models:
        m.to(device)
    try:
        with sample_progress(data.samples, "evaluating model and baseline" if baseline is not None
                             else "evaluating model", enabled=show_progress, lines=log_progress) as advance:
            return measure_quality(model, data.loader(batch_size), baseline=baseline,
                                   labels_needed=limits.needs_labels, description=data.description,
                                   device=device, progress=advance)
    finally:
        for m, home in zip(models, homes):
            m.to(home)
