"""Number formatting shared by the terminal tables and the Markdown output."""
from __future__ import annotations

MACS_LABEL = "MACs (multiply-accumulates)"
FLOPS_LABEL = "FLOPs (= 2 × MACs)"


def count(value: float | None) -> str:
    """125747840 -> '125.75M'; counts stay exact below 10,000."""
    if value is None:
        return "—"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale and abs(value) >= 1e4:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def times(value: float | None) -> str:
    """A ratio: 2.0 -> '2.00x'."""
    if value is None:
        return "—"
    return "∞" if value == float("inf") else f"{value:.2f}x"


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def width(a: int | None, b: int | None = None, *, pair: bool = False) -> str:
    """'64' or, comparing, '64 → 32'."""
    left = "—" if a is None else str(a)
    if not pair:
        return left
    right = "—" if b is None else str(b)
    return left if a == b else f"{left} → {right}"


def layer_name(name: str) -> str:
    return name or "(model)"


def threads(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


def gate_value(unit: str, value: float | None) -> str:
    """A gate's limit or measured value in its unit."""
    if value is None:
        return "—"
    formats = {"ms": ms, "x": times, "points": lambda v: f"{v:.2f} points", "%": lambda v: f"{v:.2f}%",
               "loss": lambda v: f"{v:.4f}", "cosine": lambda v: f"{v:.4f}"}
    return formats.get(unit, count)(value)


def quality_line(q) -> str:
    """What the quality gates were measured on, and the raw numbers behind them."""
    parts = [f"Evaluated on {q.data}: {q.samples} samples"]
    for label, scores in (("model", q.model), ("baseline", q.baseline)):
        if scores is not None and scores.top1 is not None:
            parts.append(f"{label} top-1 {scores.top1:.2f}%, loss {scores.loss:.4f}")
    if q.cosine is not None:
        parts.append(f"output cosine {q.cosine:.4f}")
    return "; ".join(parts) + "."
