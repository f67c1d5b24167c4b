"""Speed: CPU latency of each compact model against its dense model, and DPM's per-step overhead.

Latency uses `dpm_cli.report.latency.measure_latency`, which interleaves the two models' timed passes
(A B, B A, ...) under torch.inference_mode, so the speed-up is a ratio measured in one run and a
load change on the shared machine slows both models alike. The speed-up is the median of the
per-round ratios.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from dpm_cli.checkpoint import build_from_factory
from dpm_cli.report.latency import measure_latency

from .setups import Setup

BATCHES = (1, 32)
OVERHEAD_SCRIPT = Path(__file__).resolve().parents[1] / "overhead.py"


def latency(setup: Setup, dense_path: str, compact_path: str, *, repeats: int, threads: int) -> dict[str, Any]:
    dense = build_from_factory(setup.factory, dict(setup.kwargs))
    dense.load_state_dict(torch.load(dense_path, map_location="cpu", weights_only=True))
    compact = torch.load(compact_path, map_location="cpu", weights_only=False)
    run = measure_latency({"dense": dense, "compact": compact}, setup.input_shape, batch_sizes=BATCHES,
                          repeats=repeats, warmup=3, threads=threads)
    out: dict[str, Any] = {"threads": run.threads, "repeats": repeats}
    for b in BATCHES:
        out[f"dense_ms_b{b}"] = run.get("dense", b).median_ms
        out[f"compact_ms_b{b}"] = run.get("compact", b).median_ms
        out[f"speedup_b{b}"] = run.speedup("dense", "compact", b)
    return out


def overhead(args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run benchmarks/overhead.py (another engineer's script) as is and return its JSON figure."""
    done = subprocess.run([sys.executable, str(OVERHEAD_SCRIPT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    text = done.stdout
    return {**json.loads(text[text.index("{"):]), "command": " ".join(["python benchmarks/overhead.py", *args])}
