"""The suite: dense models, sparse starting points, every run of the plan, latency, overhead, summary."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from . import machine
from .dense import CACHE, ensure_dense
from .grid import BUDGETS, CORE, SPARSE, Plan
from .modes import BASELINE, MODES
from .protocol import Protocol
from .runner import Job, run
from .setups import SETUPS
from .sparse import ensure_sparse, sparse_path
from .speed import latency, overhead
from .stats import paired, summarize, verdict
from .workers import run_jobs

# Extra paired comparisons reported next to "versus single-step": (mode, reference mode).
PAIRS = (("sp_sr", "sp"), ("sparse_sp", "sparse_single"), ("sparse_sp_sr", "sparse_single"),
         ("sparse_sp_sr", "sparse_sp"))


def _dense_job(name: str, cache: str) -> dict[str, Any]:
    return ensure_dense(SETUPS[name], Path(cache))


def _sparse_job(name: str, p: Protocol, seed: int, dense: str, cache: str) -> dict[str, Any]:
    return ensure_sparse(SETUPS[name], p, seed, Path(dense), Path(cache))


def _run_job(job: Job, workdir: str) -> dict[str, Any]:
    return run(job, Path(workdir))


def plan_runs(plan: Plan, models_dir: Path) -> list[Job]:
    """Every pruning run of the plan, the slow setups first so that the workers stay busy to the end."""
    jobs: list[Job] = []
    for c in plan.comparisons:
        for budget in BUDGETS:
            for mode in c.modes:
                seeds = (c.sparse_seeds if MODES[mode].sparse else c.seeds).get(budget, 0)
                for seed in range(seeds):
                    keep = (str(models_dir / f"{c.setup}-keep{budget}-{mode}.pt")
                            if c.keep_models and seed == 0 and mode == "sp_sr" else None)
                    jobs.append(Job(c.setup, budget, mode, seed, c.protocol, keep_model=keep))
    for a in plan.ablations:
        p = plan.ablation_protocol(a)
        for mode in a.modes:
            for seed in range(a.seeds):
                jobs.append(Job(a.setup, a.budget, mode, seed, p, variant=a.name))
    return jobs


def execute(plan: Plan, out_dir: Path, *, workers: int, threads: int, cache: Path = CACHE,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    began = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    models_dir, work = out_dir / "models", out_dir / "work"
    info = {"machine": machine.describe(), "workers": workers, "threads_per_worker": threads}
    log(f"machine: {info['machine']}")

    log("1/5 dense models")
    setups = sorted({c.setup for c in plan.comparisons})
    dense = dict(zip(setups, run_jobs(_dense_job, [(s, str(cache)) for s in setups], workers=workers,
                                      threads=threads, log=log)))
    _raise_failed("dense", dense)

    jobs = plan_runs(plan, models_dir)
    log("2/5 sparse-learning starting points")
    # One job per cached file: protocols that differ only in fields the pre-phase ignores share it,
    # and two workers must never write the same file.
    wanted_by_path = {}
    for j in jobs:
        if MODES[j.mode].sparse:
            path = sparse_path(SETUPS[j.setup], j.protocol, j.seed, cache)
            wanted_by_path.setdefault(path, (j.setup, j.protocol, j.seed))
    wanted = list(wanted_by_path.values())
    sparse = run_jobs(_sparse_job, [(s, p, seed, dense[s]["path"], str(cache)) for s, p, seed in wanted],
                      workers=workers, threads=threads, log=log, label=lambda j: f"{j[0]} seed {j[2]}")
    _raise_failed("sparse", dict(enumerate(sparse)))
    jobs = [replace(j, start={"dense": dense[j.setup]["path"],
                              "sparse": str(sparse_path(SETUPS[j.setup], j.protocol, j.seed, cache))})
            for j in jobs]

    log(f"3/5 pruning runs: {len(jobs)}")
    ordered = sorted(range(len(jobs)), key=lambda i: -jobs[i].protocol.steps * _cost(jobs[i].setup))
    results = run_jobs(_run_job, [(jobs[i], str(work)) for i in ordered], workers=workers, threads=threads,
                       log=log, label=lambda j: j[0].label())
    runs = [r for r in results if "error" not in r]
    failed = [{"job": jobs[i].label(), **r} for i, r in zip(ordered, results) if "error" in r]

    log("4/5 latency of compact against dense models")
    speed = []
    for c in plan.comparisons:
        for budget in BUDGETS:
            path = models_dir / f"{c.setup}-keep{budget}-sp_sr.pt"
            if not path.is_file():
                continue
            for t in sorted({1, threads, 2}):
                row = latency(SETUPS[c.setup], dense[c.setup]["path"], str(path),
                              repeats=plan.latency_repeats, threads=t)
                macs = next((r["macs_kept"] for r in runs if r["setup"] == c.setup and r["budget"] == budget
                             and r["mode"] == "sp_sr" and r["seed"] == 0 and r["variant"] == "main"), None)
                speed.append({"setup": c.setup, "budget": budget, "mode": "sp_sr", "macs_kept": macs, **row})

    log("5/5 DPM per-step overhead (benchmarks/overhead.py)")
    over = overhead(plan.overhead_args) if plan.run_overhead else None

    return {**info, "dense": dense, "protocols": {c.setup: c.protocol.to_dict() for c in plan.comparisons},
            "runs": runs, "failed": failed, "summary": summarize_all(plan, runs), "latency": speed,
            "overhead": over, "wall_seconds": round(time.perf_counter() - began, 1),
            "load_average_end": machine.load_average(), "git_end": machine.git_state()}


def _cost(setup: str) -> int:
    return 4 if "mnist" in setup else 1


def _raise_failed(what: str, results: dict[Any, Any]) -> None:
    bad = {k: v for k, v in results.items() if isinstance(v, dict) and "error" in v}
    if bad:
        k, v = next(iter(bad.items()))
        raise RuntimeError(f"{what} failed for {k}: {v['error']}\n{v.get('traceback', '')}")


def summarize_all(plan: Plan, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def select(setup: str, variant: str, budget: float, mode: str) -> list[dict[str, Any]]:
        return [r for r in runs if (r["setup"], r["variant"], r["budget"], r["mode"]) == (setup, variant, budget, mode)]

    main: list[dict[str, Any]] = []
    for c in plan.comparisons:
        for budget in BUDGETS:
            base = select(c.setup, "main", budget, BASELINE)
            for mode in CORE + SPARSE:
                group = select(c.setup, "main", budget, mode)
                if not group:
                    continue
                row = {"setup": c.setup, "budget": budget, "mode": mode, **summarize(group, base)}
                row["pairs"] = {ref: _pair(group, select(c.setup, "main", budget, ref))
                                for m, ref in PAIRS if m == mode}
                main.append(row)
    ablations: list[dict[str, Any]] = []
    for a in plan.ablations:
        for mode in a.modes:
            group = select(a.setup, a.name, a.budget, mode)
            if not group:
                continue
            row = {"ablation": a.name, "setup": a.setup, "budget": a.budget, "mode": mode, "changes": a.changes,
                   "question": a.question, **summarize(group, select(a.setup, "main", a.budget, mode))}
            row["pairs"] = {"main single": _pair(group, select(a.setup, "main", a.budget, BASELINE))}
            if mode != BASELINE and BASELINE in a.modes:  # does the mode still beat single-step here?
                row["pairs"]["ablation single"] = _pair(group, select(a.setup, a.name, a.budget, BASELINE))
            if mode == "sp_sr":  # does this Self-Rectifying setting beat Smooth Pruning alone?
                row["pairs"]["main sp"] = _pair(group, select(a.setup, "main", a.budget, "sp"))
            ablations.append(row)
    return {"main": main, "ablations": ablations}


def _pair(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not b:
        return None
    top1, loss = paired(a, b, "top1"), paired(a, b, "loss")
    return {"d_top1": top1, "d_loss": loss, "verdict_top1": verdict(top1),
            "verdict_loss": verdict(loss, higher_is_better=False)}
