"""The JSON documents `dpm report --json` and `dpm check --json` print.

The schema is stable: keys are only ever added. A change that renames or removes a key, or changes
a value's meaning, bumps SCHEMA_VERSION. Counts are integers; ratios and times are floats; a value
that cannot be measured or has no finite value (a ratio over zero) is null.
"""
from __future__ import annotations

import json
import math
from typing import Any

from .compare import Comparison
from .counting import ModelCount
from .gates import CheckResult
from .latency import LatencyRun
from .quality import Quality
from ..provenance import BuiltFrom

SCHEMA_VERSION = 1

UNITS = {
    "params": "parameters (shared parameters counted once)",
    "macs": "multiply-accumulates of conv, linear, matmul and attention in one forward pass at input_shape",
    "flops": "2 x macs",
    "latency": "milliseconds per forward pass on CPU, eval mode, torch.inference_mode",
    "ratios": "a / b: 2.0 means b has half of a's MACs or params, or runs twice as fast",
    "top1": "top-1 accuracy in % on the evaluation data; accuracy drop in points (baseline - model)",
    "loss": "mean cross-entropy on the evaluation data; loss increase = model - baseline",
    "cosine": "mean over samples of the cosine similarity of model and baseline outputs (flattened); "
              "with one output per sample, the cosine of the two vectors of scores over all samples",
}


def count_to_dict(count: ModelCount, *, layers: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "label": count.label,
        "params": count.params,
        "macs": count.macs,
        "flops": count.flops,
        "unknown_ops": [{"op": u.op, "layer": u.layer, "calls": u.calls} for u in count.unknown_ops],
    }
    if layers:
        doc["layers"] = [
            {"name": r.name, "type": r.type, "width": r.width, "params": r.params, "macs": r.macs,
             "share": count.share(r)}
            for r in count.layers
        ]
    return doc


def latency_to_dict(run: LatencyRun) -> dict[str, Any]:
    return {
        "batch_sizes": list(run.batch_sizes),
        "repeats": run.repeats,
        "warmup": run.warmup,
        "threads": run.threads,
        "results": [
            {"model": s.label, "batch_size": s.batch_size, "median_ms": s.median_ms, "q1_ms": s.q1_ms,
             "q3_ms": s.q3_ms, "p10_ms": s.p10_ms, "p90_ms": s.p90_ms, "samples": len(s.samples_ms)}
            for s in run.stats
        ],
    }


def comparison_to_dict(cmp: Comparison) -> dict[str, Any]:
    return {
        "a": cmp.a.label,
        "b": cmp.b.label,
        "macs_ratio": cmp.macs_ratio,
        "params_ratio": cmp.params_ratio,
        "speedup": {str(batch): s for batch, s in cmp.speedups.items()} or None,
        "layers": [
            {"name": d.name, "type": d.type, "width_a": d.width_a, "width_b": d.width_b,
             "params_a": d.params_a, "params_b": d.params_b, "macs_a": d.macs_a, "macs_b": d.macs_b}
            for d in cmp.layers
        ],
    }


def report_to_dict(
    counts: list[ModelCount],
    comparison: Comparison | None = None,
    latency: LatencyRun | None = None,
) -> dict[str, Any]:
    """The `dpm report --json` document."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "dpm.report",
        "units": UNITS,
        "input_shape": list(counts[0].input_shape),
        "models": [count_to_dict(c) for c in counts],
        "comparison": comparison_to_dict(comparison) if comparison else None,
        "latency": latency_to_dict(latency) if latency else None,
    }


def check_to_dict(result: CheckResult) -> dict[str, Any]:
    """The `dpm check --json` document."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "dpm.check",
        "passed": result.passed,
        "units": UNITS,
        "input_shape": list(result.count.input_shape),
        "batch_size": result.batch_size,
        "gates": [
            {"name": g.name, "limit": g.limit, "measured": g.measured, "unit": g.unit, "passed": g.passed,
             "detail": g.detail}
            for g in result.gates
        ],
        "model": count_to_dict(result.count, layers=False),
        "baseline": count_to_dict(result.baseline, layers=False) if result.baseline else None,
        "latency": latency_to_dict(result.latency) if result.latency else None,
        "evaluation": quality_to_dict(result.quality) if result.quality else None,
        "provenance": built_from_to_dict(result.built_from) if result.built_from else None,
    }


def quality_to_dict(q: Quality) -> dict[str, Any]:
    return {
        "data": q.data,
        "samples": q.samples,
        "labeled": q.labeled,
        "model": {"top1": q.model.top1, "loss": q.model.loss},
        "baseline": {"top1": q.baseline.top1, "loss": q.baseline.loss} if q.baseline else None,
        "accuracy_drop": q.accuracy_drop,
        "loss_increase": q.loss_increase,
        "cosine": q.cosine,
    }


def built_from_to_dict(b: BuiltFrom) -> dict[str, Any]:
    def brief(doc: dict[str, Any] | None) -> dict[str, Any] | None:  # hashes, not the whole recipe
        if doc is None:
            return None
        return {**doc, "recipe": {k: v for k, v in (doc.get("recipe") or {}).items() if k != "canonical"}}

    return {"passed": b.passed, "differences": b.differences, "recorded": brief(b.recorded),
            "given": brief(b.expected), "notes": b.notes}


def dumps(doc: dict[str, Any]) -> str:
    """JSON text; infinities and NaNs (not valid JSON) become null."""
    return json.dumps(_finite(doc), indent=2)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
