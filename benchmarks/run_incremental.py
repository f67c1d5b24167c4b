"""Run a plan's pruning runs one by one, appending each result to OUT/runs.jsonl as it finishes.

    python benchmarks/run_incremental.py --plan pilot-15 --out benchmarks/.cache/results-pilot-15

For long studies on a shared machine (`--plan ingredients-600`): an interrupted run loses only the
job in progress; rerunning the same command skips every job already in runs.jsonl. Jobs run in the
plan's priority order (`--order`): seeds interleaved, so that whatever has finished is paired. At the
end OUT/results.json and OUT/results.md are written as `run_all.py` writes them (without latency and
overhead, which this script does not measure). One process, one thread; no sparse-learning modes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dpmbench import machine  # noqa: E402
from dpmbench.dense import CACHE, ensure_dense  # noqa: E402
from dpmbench.grid import PLANS  # noqa: E402
from dpmbench.modes import MODES  # noqa: E402
from dpmbench.runner import run  # noqa: E402
from dpmbench.setups import SETUPS  # noqa: E402
from dpmbench.suite import plan_runs, summarize_all  # noqa: E402
from dpmbench.tables import report  # noqa: E402


def ordered(jobs: list) -> list:
    """Main grid first, then each variant in plan order; within each, seed by seed across modes."""
    variants = list(dict.fromkeys(j.variant for j in jobs))
    return sorted(jobs, key=lambda j: (variants.index(j.variant), j.budget != 0.125, j.seed, j.mode))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", choices=sorted(PLANS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs")
    parser.add_argument("--shard", default="0/1", metavar="K/N",
                        help="run only every N-th job of the plan, starting at the K-th (one process per core, "
                             "each with its own --out; study15.py reads them together)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    plan, began = PLANS[args.plan], time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    seen = {(r["setup"], r["variant"], r["budget"], r["mode"], r["seed"]) for r in done}
    info = {"machine": machine.describe(), "workers": 1, "threads_per_worker": 1}
    dense = {s: ensure_dense(SETUPS[s], args.cache) for s in sorted({c.setup for c in plan.comparisons})}
    jobs = [j for j in ordered(plan_runs(plan, args.out / "models")) if not MODES[j.mode].sparse]
    shard, shards = (int(n) for n in args.shard.split("/"))
    jobs = jobs[shard::shards]
    todo = [j for j in jobs if (j.setup, j.variant, j.budget, j.mode, j.seed) not in seen]
    print(f"{len(jobs)} runs in the plan, {len(jobs) - len(todo)} already done", flush=True)
    for i, job in enumerate(todo[:args.max_runs], 1):
        result = run(replace(job, start={"dense": dense[job.setup]["path"]}), args.out / "work")
        with log.open("a") as f:
            f.write(json.dumps(result, default=float) + "\n")
        done.append(result)
        print(f"  [{i}/{len(todo)}] {time.perf_counter() - began:6.0f}s  {job.label()}: top1 {result['top1']:.2f}, "
              f"anytime {result['anytime_top1']}", flush=True)
    command = "python benchmarks/run_incremental.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {**info, "dense": dense, "protocols": {c.setup: c.protocol.to_dict() for c in plan.comparisons},
              "runs": done, "failed": [], "summary": summarize_all(plan, done), "latency": [], "overhead": None,
              "wall_seconds": round(time.perf_counter() - began, 1), "load_average_end": machine.load_average(),
              "git_end": machine.git_state(), "command": command}
    (args.out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    (args.out / "results.md").write_text(report(result, command))
    print(f"wrote {args.out / 'results.json'} ({len(done)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
