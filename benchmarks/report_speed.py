"""How long `dpm report` takes on a ResNet-50-sized model (25.6M parameters, 224x224 input).

    python benchmarks/report_speed.py [--runs 3]

Prints the command it times and two figures:
- the whole command, start to exit, in a fresh process (Python start-up and `import torch` included),
  median over --runs;
- the report itself inside one process, by stage: loading the checkpoint, counting, rendering.
The target is at most 3 s for the report on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

FACTORY = "dpm_cli.models:resnet50"
SHAPE = "1,3,224,224"


def command(checkpoint: Path) -> list[str]:
    return [sys.executable, "-m", "dpm_cli", "report", str(checkpoint), "--factory", FACTORY,
            "--input-shape", SHAPE]


def time_cli(checkpoint: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command(checkpoint), check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def time_stages(checkpoint: Path) -> dict[str, float]:
    from rich.console import Console

    from dpm_cli.checkpoint import load_model
    from dpm_cli.report import count_model, example_input
    from dpm_cli.report.render import print_report

    stages = {}
    start = time.perf_counter()
    model = load_model(checkpoint, factory=FACTORY)
    stages["load checkpoint (build + weights)"] = time.perf_counter() - start
    start = time.perf_counter()
    count = count_model(model, example_input((1, 3, 224, 224)), label="resnet50")
    stages["count (one forward pass)"] = time.perf_counter() - start
    start = time.perf_counter()
    print_report(Console(file=io.StringIO(), width=140), [count])
    stages["render tables"] = time.perf_counter() - start
    print(f"  counted: {count.params / 1e6:.2f}M parameters, {count.macs / 1e9:.2f}G MACs, {len(count.layers)} rows")
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh-process runs of the command")
    args = parser.parse_args()
    from dpm_cli.models import resnet50

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "resnet50.pt"
        torch.save(resnet50().state_dict(), checkpoint)
        shown = " ".join(["python", *command(checkpoint)[1:]]).replace(str(checkpoint), "resnet50.pt")
        print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}")
        print(f"command: {shown}")
        times = time_cli(checkpoint, args.runs)
        print(f"whole command (fresh process, incl. Python start and import torch): "
              f"median {statistics.median(times):.2f} s over {args.runs} runs "
              f"(min {min(times):.2f} s, max {max(times):.2f} s)")
        print("in one process:")
        stages = time_stages(checkpoint)
        for name, seconds in stages.items():
            print(f"  {name:<36} {seconds:.2f} s")
        print(f"  {'report total':<36} {sum(stages.values()):.2f} s")


if __name__ == "__main__":
    main()
