"""Paired statistics: modes are compared seed by seed (same dense model, same batch order).

A difference counts as a win or a loss only when |mean| > 2 standard errors of the paired
differences; anything smaller is reported as "level".
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Iterable

Record = dict[str, Any]


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    v = [x for x in values if x is not None]
    if not v:
        return math.nan, math.nan
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def paired(a: list[Record], b: list[Record], metric: str) -> dict[str, float] | None:
    """Mean and standard error of a[metric] - b[metric] over the seeds both have, and how often a > b."""
    by_seed = {r["seed"]: r[metric] for r in b if r.get(metric) is not None}
    diffs = [r[metric] - by_seed[r["seed"]] for r in a if r["seed"] in by_seed and r.get(metric) is not None]
    if not diffs:
        return None
    n = len(diffs)
    se = statistics.stdev(diffs) / math.sqrt(n) if n > 1 else math.nan
    return {"mean": statistics.fmean(diffs), "se": se, "n": n,
            "higher": sum(d > 0 for d in diffs), "lower": sum(d < 0 for d in diffs)}


MIN_SEEDS = 3  # two differences give a standard error with one degree of freedom: no verdict from that


def verdict(diff: dict[str, float] | None, higher_is_better: bool = True) -> str:
    """'win' / 'loss' only beyond two standard errors; 'level' otherwise; 'n/a' below MIN_SEEDS seeds."""
    if diff is None or not math.isfinite(diff["se"]) or diff["n"] < MIN_SEEDS:
        return "n/a"
    mean = diff["mean"] if higher_is_better else -diff["mean"]
    if diff["se"] == 0:
        return "level" if mean == 0 else ("win" if mean > 0 else "loss")
    if mean > 2 * diff["se"]:
        return "win"
    if mean < -2 * diff["se"]:
        return "loss"
    return "level"


def summarize(runs: list[Record], reference: list[Record] | None) -> dict[str, Any]:
    """One row: means, spreads, paired differences to `reference` (e.g. single-step, same seeds)."""
    top1, loss = mean_std(r["top1"] for r in runs), mean_std(r["loss"] for r in runs)
    anytime = [r["anytime_top1"] for r in runs if r["anytime_top1"] is not None]
    rounds = max((len(r["per_round"]) for r in runs), default=0)
    per_round = [
        {k: statistics.fmean(r["per_round"][i][k] if i < len(r["per_round"]) else 0 for r in runs)
         for k in ("selected", "release", "suppressed", "replacement")}
        for i in range(rounds)
    ]
    row = {
        "n": len(runs), "seeds": sorted(r["seed"] for r in runs),
        "top1": top1[0], "top1_std": top1[1], "loss": loss[0], "loss_std": loss[1],
        "macs_kept": statistics.fmean(r["macs_kept"] for r in runs),
        "params_kept": statistics.fmean(r["params_kept"] for r in runs),
        "releases": statistics.fmean(r["releases"] for r in runs),
        "suppressed": statistics.fmean(r["suppressed"] for r in runs),
        "per_round": per_round,
        "anytime_top1": statistics.fmean(anytime) if anytime else None,
        "anytime_top1_worst": min(anytime) if anytime else None,
        "min_top1_after_cut": mean_std(r.get("min_top1_after_cut") for r in runs)[0],
        "max_equivalence_error": max(r["equivalence_error"] for r in runs),
        "seconds": statistics.fmean(r["seconds"] for r in runs),
    }
    if reference is not None:
        row["d_top1"] = paired(runs, reference, "top1")
        row["d_loss"] = paired(runs, reference, "loss")
        row["d_anytime"] = paired(runs, reference, "anytime_top1")
        row["verdict_top1"] = verdict(row["d_top1"])
        row["verdict_loss"] = verdict(row["d_loss"], higher_is_better=False)
    return row
