"""The DPM benchmark suite: where does DPM beat single-step pruning on real data, and by how much?

    python benchmarks/run_all.py                      # the full suite (docs/BENCHMARKS.md), <= 40 min on 2 cores
    python benchmarks/run_all.py --plan quick --out /tmp/b   # the reduced suite of tests/test_benchmarks.py

Dense models (cached in benchmarks/.cache/) are pruned to 2x, 4x and 8x fewer MACs in every mode
(single-step, iterative single-step, DPM Smooth Pruning, SP + Self-Rectifying, and the same after
sparse learning) with the same criterion, steps, optimizer and batch order per seed, through
`dpm_cli.pipeline.prune`. Writes OUT/results.json (every run, raw) and OUT/results.md (the tables).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dpmbench.dense import CACHE  # noqa: E402
from dpmbench.grid import PLANS  # noqa: E402
from dpmbench.suite import execute, summarize_all  # noqa: E402
from dpmbench.tables import report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", choices=sorted(PLANS), default="full", help="which grid to run (default: full)")
    parser.add_argument("--out", type=Path, default=CACHE / "results",
                        help="folder for results.json and results.md (default: benchmarks/.cache/results)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="cache of dense and sparse models")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="parallel run processes, one thread each (default: min(2, cores))")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default: 1)")
    parser.add_argument("--render-only", action="store_true",
                        help="recompute the summary and tables from OUT/results.json without running anything")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)  # the main process only measures latency; it sets its threads per measurement
    if args.render_only:
        result = json.loads((args.out / "results.json").read_text())
        result["summary"] = summarize_all(PLANS[args.plan], result["runs"])
        command = result["command"]
    else:
        command = "python benchmarks/run_all.py" + ("" if argv is None and len(sys.argv) == 1 else
                                                    " " + " ".join(argv if argv is not None else sys.argv[1:]))
        result = execute(PLANS[args.plan], args.out, workers=args.workers, threads=args.threads, cache=args.cache)
        result["command"] = command
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    (args.out / "results.md").write_text(report(result, command))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}; "
          f"suite wall time {result['wall_seconds'] / 60:.1f} min"
          f"; {len(result['runs'])} runs, {len(result['failed'])} failed")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
