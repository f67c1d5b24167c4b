"""DPM's per-step overhead on ResNet-56 (batch 128, CIFAR-sized input, CPU).

    python benchmarks/overhead.py --steps 20

Each training step is timed in two parts in the same run: the plain step (forward, backward,
optimizer.step) and `pruner.step()` right after it. The pruner is kept in its decay phase with
Self-Rectifying on (the most expensive phase: norms, C_rate, C_len and rescaling every step).
Overhead = median(pruner.step) / median(plain step).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from dpm_cli.engine import DecayPruner, DPMConfig
from dpm_cli.models import resnet56


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = resnet56()
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    total = args.warmup + args.steps + 1
    pruner = DecayPruner(model, x[:1], DPMConfig(budget=0.5, decay_steps=10 * total), optimizer=opt)
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
    progress = pruner.progress()
    result = {
        "model": "resnet56", "batch": args.batch, "steps": args.steps, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "decaying_structures": progress.decaying,
        "plain_step_ms": 1000 * statistics.median(plain), "dpm_step_ms": 1000 * statistics.median(dpm),
    }
    result["overhead"] = result["dpm_step_ms"] / result["plain_step_ms"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
