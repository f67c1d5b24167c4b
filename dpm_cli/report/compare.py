"""Two models side by side (typically the original and its compact version): totals, per-layer
widths and MACs, and the ratios first / second (2.0 = the second has half the MACs, or runs twice as
fast)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .counting import LayerCount, ModelCount
from .latency import LatencyRun


@dataclass(frozen=True)
class LayerDiff:
    """One layer in both models, matched by module path; None where a model lacks the layer."""

    name: str
    type: str
    width_a: int | None
    width_b: int | None
    params_a: int | None
    params_b: int | None
    macs_a: int | None
    macs_b: int | None


@dataclass
class Comparison:
    """`a` against `b`; every ratio is a / b."""

    a: ModelCount
    b: ModelCount
    layers: list[LayerDiff]
    speedups: dict[int, float] = field(default_factory=dict)  # batch size -> latency a / latency b

    @property
    def macs_ratio(self) -> float | None:
        return ratio(self.a.macs, self.b.macs)

    @property
    def params_ratio(self) -> float | None:
        return ratio(self.a.params, self.b.params)


def ratio(a: float, b: float) -> float | None:
    """a / b, or None when b is zero (no finite ratio)."""
    return a / b if b else None


def compare(a: ModelCount, b: ModelCount, latency: LatencyRun | None = None) -> Comparison:
    """Match the two models' layers by name (a's order, then layers only b has) and compute ratios.

    With `latency` (a run that measured both `a.label` and `b.label`), the speed-up a / b per batch
    size comes from that same run.
    """
    rows_a = {row.name: row for row in a.layers}
    rows_b = {row.name: row for row in b.layers}
    names = list(rows_a) + [name for name in rows_b if name not in rows_a]
    layers = [_diff(name, rows_a.get(name), rows_b.get(name)) for name in names]
    speedups = {}
    if latency is not None:
        speedups = {batch: latency.speedup(a.label, b.label, batch) for batch in latency.batch_sizes}
    return Comparison(a, b, layers, speedups)


def _diff(name: str, x: LayerCount | None, y: LayerCount | None) -> LayerDiff:
    some = x or y
    assert some is not None
    return LayerDiff(
        name=name,
        type=some.type,
        width_a=x.width if x else None,
        width_b=y.width if y else None,
        params_a=x.params if x else None,
        params_b=y.params if y else None,
        macs_a=x.macs if x else None,
        macs_b=y.macs if y else None,
    )
