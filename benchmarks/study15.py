"""Tables of the issue 15 study (docs/BENCHMARKS.md, "Issue 15 study") from the runs it appended.

    python benchmarks/study15.py benchmarks/.cache/study-15-digits benchmarks/.cache/study-15-mnist

Reads OUT/runs.jsonl of each plan (`run_incremental.py --plan study-15-*`) and prints Markdown: paired
differences of final top-1 with standard error, two-sided paired t-test p and wins/losses per seed; the
lowest held-out top-1 during the decay (mean and worst seed) against the dense model, with the cadence
the runs were evaluated at.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from scipy import stats as scistats

NAMES = {"single": "single-step", "sp": "SP", "sp_sr": "SP+SR"}
X = {0.5: "2x", 0.25: "4x", 0.125: "8x"}


def load(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines() if line.strip()]


def pick(runs: list[dict[str, Any]], setup: str, variant: str, budget: float, mode: str) -> dict[int, dict[str, Any]]:
    return {r["seed"]: r for r in runs if (r["setup"], r["variant"], r["budget"], r["mode"]) == (setup, variant, budget, mode)}


def paired(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], metric: str = "top1") -> str:
    seeds = sorted(set(a) & set(b))
    d = [a[s][metric] - b[s][metric] for s in seeds]
    if len(d) < 2:
        return "n/a" if not d else f"{d[0]:+.2f} (n=1)"
    mean, se = statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d))
    p = 2 * scistats.t.sf(abs(mean / se), len(d) - 1) if se > 0 else (1.0 if mean == 0 else 0.0)
    wins, losses = sum(x > 0 for x in d), sum(x < 0 for x in d)
    return f"{mean:+.2f} ± {se:.2f} (p {p:.3f}; {wins} higher, {losses} lower of {len(d)})"


def reread(run: dict[str, Any], every: int) -> float | None:
    """The lowest top-1 a run evaluated at a finer cadence would have shown at `every`: the window's
    evaluations on multiples of `every` from its first step, and the off-cadence ones (the step the
    channels reached zero, which every cadence evaluates)."""
    steps = run.get("anytime_steps") or []
    if run.get("anytime_every") == every or not steps:
        return run.get("anytime_top1")
    first, fine = min(steps), run["anytime_every"]
    kept = {s for s in steps if (s - first) % every == 0 or (s - first) % fine != 0}
    values = [e["top1"] for e in run["evals"] if e["step"] in kept]
    return min(values) if values else None


def anytime(group: dict[int, dict[str, Any]]) -> str:
    every = max((r["anytime_every"] for r in group.values() if r.get("anytime_every")), default=None)
    values = [v for v in (reread(r, every) for r in group.values()) if v is not None]
    if not values:
        return "n/a"
    dense = statistics.fmean(r["dense_top1"] for r in group.values())
    every = {every}
    return (f"{statistics.fmean(values):.1f} (worst {min(values):.1f}; dense {dense:.1f}; "
            f"every {'/'.join(map(str, sorted(every)))} steps)")


def mean_top1(group: dict[int, dict[str, Any]]) -> str:
    return f"{statistics.fmean(r['top1'] for r in group.values()):.2f} (n={len(group)})" if group else "n/a"


def main_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| setup | budget | mode | top-1 % | vs single-step | vs SP | lowest top-1 during the decay % |",
             "|---|---|---|---|---|---|---|"]
    for setup in sorted({r["setup"] for r in runs}):
        for budget in (0.125, 0.25):
            single, sp = pick(runs, setup, "main", budget, "single"), pick(runs, setup, "main", budget, "sp")
            for mode in ("single", "sp", "sp_sr"):
                g = pick(runs, setup, "main", budget, mode)
                if g:
                    lines.append(f"| {setup} | {X[budget]} | {NAMES[mode]} | {mean_top1(g)} | "
                                 f"{paired(g, single) if mode != 'single' else ''} | "
                                 f"{paired(g, sp) if mode == 'sp_sr' else ''} | {anytime(g)} |")
    return "\n".join(lines)


def variant_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| setup | variant | mode | top-1 % | vs the same mode without it | vs single-step with it | "
             "vs plain single-step | lowest top-1 during the decay % |", "|---|---|---|---|---|---|---|---|"]
    for setup in sorted({r["setup"] for r in runs}):
        variants = list(dict.fromkeys(r["variant"] for r in runs if r["setup"] == setup and r["variant"] != "main"))
        for v in variants:
            budget = next(r["budget"] for r in runs if r["setup"] == setup and r["variant"] == v)
            for mode in ("single", "sp", "sp_sr"):
                g = pick(runs, setup, v, budget, mode)
                if not g:
                    continue
                own_single = pick(runs, setup, v, budget, "single")
                lines.append(f"| {setup} | {v} ({X[budget]}) | {NAMES[mode]} | {mean_top1(g)} | "
                             f"{paired(g, pick(runs, setup, 'main', budget, mode))} | "
                             f"{paired(g, own_single) if mode != 'single' and own_single else ''} | "
                             f"{paired(g, pick(runs, setup, 'main', budget, 'single')) if mode != 'single' else ''} | "
                             f"{anytime(g)} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    runs = [r for folder in argv for r in load(Path(folder))]
    print(f"{len(runs)} runs\n\n## Main grid (T = 600)\n\n{main_table(runs)}\n\n## Variants\n\n{variant_table(runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
