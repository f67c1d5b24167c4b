"""DPM's per-step overhead on ResNet-56 (batch 128, CIFAR-sized input, CPU).

    python benchmarks/overhead.py --steps 20

Each training step is timed in two parts in the same run: the plain step (forward, backward,
optimizer.step) and `pruner.step()` right after it. The pruner is kept in its decay phase (N longer
than the run), the most expensive phase: norms and rescaling every step and, with Self-Rectifying
(engine defaults), C_rate and C_len every step plus a re-selection on the steps that release.
Overhead = median(pruner.step) / median(plain step), for SR on (engine defaults) and SR off (SP only).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import Counter

import torch
import torch.nn.functional as F

from dpm_cli.engine import DecayPruner, DPMConfig
from dpm_cli.models import resnet56


def measure(args: argparse.Namespace, rectify: bool) -> dict:
    torch.manual_seed(0)
    model = resnet56()
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    total = args.warmup + args.steps + 1
    cfg = DPMConfig(budget=0.5, decay_steps=10 * total, rectify={"enabled": rectify})
    pruner = DecayPruner(model, x[:1], cfg, optimizer=opt)
    plain, dpm = [], []
    for step in range(total):
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        t1 = time.perf_counter()
        pruner.step()  # step 1 selects the targets; from step 2 on they decay
        t2 = time.perf_counter()
        if step > args.warmup:
            plain.append(t1 - t0)
            dpm.append(t2 - t1)
    plain_ms, dpm_ms = 1000 * statistics.median(plain), 1000 * statistics.median(dpm)
    return {
        "rectify": rectify, "decaying_structures": pruner.progress().decaying,
        "events": dict(Counter(e.kind for e in pruner.events if e.kind != "selected")),
        "plain_step_ms": round(plain_ms, 1), "dpm_step_ms": round(dpm_ms, 2),
        "dpm_step_ms_mean": round(1000 * statistics.mean(dpm), 2),
        "dpm_step_ms_max": round(1000 * max(dpm), 2),
        "overhead": round(dpm_ms / plain_ms, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    result = {
        "model": "resnet56", "batch": args.batch, "steps": args.steps, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "runs": [measure(args, rectify=True), measure(args, rectify=False)],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
