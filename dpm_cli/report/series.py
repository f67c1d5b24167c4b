"""The data behind the run plots, read from a training run's logs (no plotting library needed).

Each decay is drawn from measured norms: the trainer logs the norm of every decaying structure at
every step of the decay phase (every k-th step when the phase is long, so that norms.jsonl holds at
most a few hundred lines; see training/loop.py), and events.jsonl gives each decay's endpoints
exactly: L_init at the step it began, the norm at a release, 0.0 at the step it was pruned.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .runlog import DecayEvent, Metrics, NormHistory, read_events, read_metrics, read_norms, read_summary

START_KINDS = ("selected", "replacement")
MARKER_KINDS = ("release", "replacement", "suppressed", "pruned")


@dataclass(frozen=True)
class DecayCurve:
    """One decay of one structure, from the step it began to the step it ended."""

    key: str  # "group:index", as in norms.jsonl
    kind: str  # how it began: "selected" or "replacement"
    end: str  # "pruned" (last norm exactly 0.0), "released", or "decaying" (the log ends mid-ramp)
    steps: list[int]
    norms: list[float]


@dataclass(frozen=True)
class Marker:
    kind: str  # release | replacement | suppressed | pruned
    step: int
    norm: float | None
    key: str


@dataclass
class DecaySeries:
    curves: list[DecayCurve]
    markers: list[Marker]
    decay_steps: int | None  # N
    logged: NormHistory  # the measured norms
    window: tuple[int, int] | None  # first decay start .. last structure at zero (or the log's end)


@dataclass
class TrainingSeries:
    """Loss and accuracy over the run, and what to mark on them."""

    train_steps: list[int]
    train_loss: list[float]
    eval_steps: list[int]
    eval_top1: list[float]  # empty for label-free objectives
    eval_loss: list[float]
    window: tuple[int, int] | None
    before: float | None  # the dense model's top-1 (summary.json), for reference
    min_decay_top1: float | None  # the anytime accuracy: lowest eval top-1 during the decay


def infer_decay_steps(events: list[DecayEvent]) -> int | None:
    """N, from the steps between a structure's start and its pruning (the most common gap)."""
    started: dict[str, int] = {}
    gaps: Counter[int] = Counter()
    for e in events:
        if e.kind in START_KINDS:
            started[e.key] = e.step
        elif e.kind == "pruned" and e.key in started:
            gaps[e.step - started.pop(e.key)] += 1
    return gaps.most_common(1)[0][0] if gaps else None


def build_decay_series(events: list[DecayEvent], logged: NormHistory, decay_steps: int | None = None,
                       last_step: int | None = None) -> DecaySeries:
    """Every decay as a curve (its logged norms between exact endpoints) plus the event markers."""
    last = max([last_step or 0, *logged.steps, *(e.step for e in events)])
    open_: dict[str, DecayEvent] = {}
    curves: list[DecayCurve] = []
    for e in events:
        if e.kind in START_KINDS:
            open_[e.key] = e
        elif e.kind in ("pruned", "release") and e.key in open_:
            curves.append(_curve(open_.pop(e.key), e, logged, last))
    curves += [_curve(start, None, logged, last) for start in open_.values()]
    markers = [_placed(Marker(e.kind, e.step, e.norm, e.key), logged) for e in events if e.kind in MARKER_KINDS]
    starts = [c.steps[0] for c in curves if c.steps]
    ends = [c.steps[-1] for c in curves if c.steps]
    window = (min(starts), max(ends)) if starts else None
    return DecaySeries(curves, markers, decay_steps or infer_decay_steps(events), logged, window)


def _curve(start: DecayEvent, end: DecayEvent | None, logged: NormHistory, last: int) -> DecayCurve:
    stop = end.step if end is not None else last
    outcome = "decaying" if end is None else ("pruned" if end.kind == "pruned" else "released")
    values = logged.series.get(start.key, [])
    inner = [(t, v) for t, v in zip(logged.steps, values) if start.step < t < stop and v == v]  # v == v: not NaN
    first = [(start.step, start.norm)] if start.norm is not None else []
    if end is None:
        tail = [(t, v) for t, v in zip(logged.steps, values) if t == stop and v == v]
    elif end.kind == "pruned":
        tail = [(stop, 0.0)]  # the engine sets it to exactly zero
    else:
        tail = [(stop, end.norm)] if end.norm is not None else []
    points = first + inner + tail
    return DecayCurve(start.key, start.kind, outcome, [t for t, _ in points], [v for _, v in points])


def _placed(marker: Marker, logged: NormHistory) -> Marker:
    """A marker from an older log without the event's norm sits at the last logged norm."""
    if marker.norm is not None:
        return marker
    norm = 0.0 if marker.kind == "pruned" else logged.at(marker.key, marker.step)
    return Marker(marker.kind, marker.step, norm, marker.key)


def decay_series(run_dir: str | Path) -> DecaySeries:
    run = _run(run_dir)
    logged = read_norms(run / "norms.jsonl") if (run / "norms.jsonl").is_file() else NormHistory([], {})
    events = read_events(run / "events.jsonl")
    if not events and not logged.steps:
        raise ConfigError(f"{run}: no events.jsonl or norms.jsonl: the run logged no decay yet")
    metrics = read_metrics(run / "metrics.jsonl")
    last = max((r["step"] for r in metrics.train + metrics.evals), default=None)
    return build_decay_series(events, logged, infer_decay_steps(events) or _recipe_decay_steps(run), last)


def _recipe_decay_steps(run: Path) -> int | None:
    """N as the run's resolved recipe states it (only when given in steps)."""
    try:
        recipe = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8"))
        value = recipe["pruning"]["decay_steps"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) and value >= 1 else None


def build_training_series(metrics: Metrics, window: tuple[int, int] | None,
                          summary: dict[str, Any] | None = None) -> TrainingSeries:
    train = [r for r in metrics.train if isinstance(r.get("loss"), (int, float))]
    evals = [r for r in metrics.evals if isinstance(r.get("loss"), (int, float))]
    top1 = [r for r in evals if isinstance(r.get("top1"), (int, float))]
    summary = summary or {}
    labelled = summary.get("metric") == "top1"
    return TrainingSeries(
        [r["step"] for r in train], [float(r["loss"]) for r in train],
        [r["step"] for r in evals], [float(r["top1"]) for r in top1] if len(top1) == len(evals) else [],
        [float(r["loss"]) for r in evals], window,
        float(summary["before"]) if labelled and summary.get("before") is not None else None,
        _opt(summary.get("min_decay_top1")))


def training_series(run_dir: str | Path) -> TrainingSeries:
    run = _run(run_dir)
    metrics = read_metrics(run / "metrics.jsonl")
    if not metrics.train and not metrics.evals:
        raise ConfigError(f"{run / 'metrics.jsonl'}: missing or empty: the run logged no metrics yet")
    events = read_events(run / "events.jsonl")
    window = None
    if events:
        window = build_decay_series(events, NormHistory([], {})).window
    return build_training_series(metrics, window, read_summary(run / "summary.json"))


def run_widths(run_dir: str | Path) -> list[tuple[str, int, int]]:
    """(layer, output width before, after) of every conv and linear layer, from summary.json."""
    summary = read_summary(_run(run_dir) / "summary.json") or {}
    rows = []
    for w in summary.get("widths") or []:
        if isinstance(w, dict) and not str(w.get("kind", "")).startswith("BatchNorm"):
            rows.append((str(w.get("name", "")), int(w.get("out_before", 0)), int(w.get("out_after", 0))))
    return rows


def _run(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"{run}: no such run folder; --run expects the folder a training run wrote")
    return run


def _opt(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None
