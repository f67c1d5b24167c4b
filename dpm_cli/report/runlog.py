"""Reading a training run's decay logs (written by the trainer, one JSON object per line).

    norms.jsonl   {"step": int, "norms": {"<group>:<index>": float, ...}}
    events.jsonl  {"step": int, "kind": "release"|"replacement"|"suppressed"|"selected"|"pruned",
                   "group": str, "index": int, "c_rate": float|null, "c_len": float|null,
                   "norm": float|null}   (norm: L_init when a decay starts, 0.0 when pruned)
    metrics.jsonl {"step": int, "loss": float, ...} per log step; {"step": int, "kind": "eval", ...} per eval;
                  {"step": int, "kind": "reconstruct", "layers": {name: [error before, after]}} per refit
    summary.json  what `dpm prune` printed at the end (accuracy before/after, widths, ...)
"""
from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

EVENT_KINDS = ("release", "replacement", "suppressed", "selected", "pruned")


@dataclass(frozen=True)
class DecayEvent:
    step: int
    kind: str
    group: str
    index: int
    c_rate: float | None = None
    c_len: float | None = None
    norm: float | None = None  # absent in logs written before dpm logged it

    @property
    def key(self) -> str:
        """The structure's key in norms.jsonl."""
        return f"{self.group}:{self.index}"


@dataclass
class NormHistory:
    """Norm of each structure per logged step; NaN where a step did not log that structure."""

    steps: list[int]
    series: dict[str, list[float]]

    def at(self, key: str, step: int) -> float | None:
        """The structure's norm at the last logged step <= `step` (None if none)."""
        values = self.series.get(key)
        if values is None:
            return None
        for i in range(bisect.bisect_right(self.steps, step) - 1, -1, -1):
            if not math.isnan(values[i]):
                return values[i]
        return None


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the run log ({err})") from err
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{number}: not a JSON object ({err.msg}); is the file truncated?") from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        yield number, obj


def read_norms(path: str | Path) -> NormHistory:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; --run expects a training run folder with norms.jsonl")
    rows: list[tuple[int, dict[str, float]]] = []
    for number, obj in _lines(path):
        step, norms = obj.get("step"), obj.get("norms")
        if not isinstance(step, int) or not isinstance(norms, dict):
            raise ConfigError(f"{path}:{number}: expected {{\"step\": int, \"norms\": {{...}}}}")
        try:
            rows.append((step, {str(k): float(v) for k, v in norms.items()}))
        except (TypeError, ValueError):
            raise ConfigError(f"{path}:{number}: every norm must be a number") from None
    rows.sort(key=lambda r: r[0])
    keys = sorted({k for _, norms in rows for k in norms})
    series = {k: [norms.get(k, math.nan) for _, norms in rows] for k in keys}
    return NormHistory([step for step, _ in rows], series)


def read_events(path: str | Path) -> list[DecayEvent]:
    """The run's events; a missing events.jsonl means no events were logged."""
    path = Path(path)
    if not path.is_file():
        return []
    events = []
    for number, obj in _lines(path):
        try:
            event = DecayEvent(int(obj["step"]), str(obj["kind"]), str(obj["group"]), int(obj["index"]),
                               _opt_float(obj.get("c_rate")), _opt_float(obj.get("c_len")),
                               _opt_float(obj.get("norm")))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{path}:{number}: expected step, kind, group and index "
                              "(c_rate and c_len optional)") from None
        events.append(event)  # kinds beyond EVENT_KINDS are kept: a newer trainer may log more
    return events


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass
class Metrics:
    """The run's metrics.jsonl split into training log lines and evaluations, in step order."""

    train: list[dict[str, Any]]
    evals: list[dict[str, Any]]


def read_metrics(path: str | Path) -> Metrics:
    """metrics.jsonl; a missing file means nothing was logged."""
    path = Path(path)
    if not path.is_file():
        return Metrics([], [])
    train, evals = [], []
    for number, obj in _lines(path):
        if not isinstance(obj.get("step"), int):
            raise ConfigError(f"{path}:{number}: expected an integer \"step\"")
        if obj.get("kind") == "eval":
            evals.append(obj)
        elif obj.get("kind") is None:  # other kinds (reconstruct) are not training curves
            train.append(obj)
    return Metrics(sorted(train, key=lambda r: r["step"]), sorted(evals, key=lambda r: r["step"]))


def read_summary(path: str | Path) -> dict[str, Any] | None:
    """summary.json, or None while the run has not finished."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the run summary ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data
