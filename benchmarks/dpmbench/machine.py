"""The machine a benchmark ran on: what BENCHMARKS.md must state next to every number."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess

import torch


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """1/5/15-minute load: on a shared machine it says how contended the timings were."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def nproc() -> int:
    try:
        return int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout)
    except (OSError, ValueError, subprocess.CalledProcessError):
        return os.cpu_count() or 1


def git_state() -> str:
    """The commit the numbers came from, and whether dpm_cli/ had uncommitted changes (others edit it)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "dpm_cli"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" with uncommitted changes in dpm_cli/" if dirty else "")


def describe() -> dict[str, object]:
    import torch_pruning

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": nproc(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "torch_pruning": _distribution_version("torch-pruning", torch_pruning.__version__),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "load_average": load_average(),
        "git": git_state(),
    }


def _distribution_version(name: str, fallback: str) -> str:
    # torch_pruning.__version__ says 1.6.0 while the installed distribution is 1.6.1 (DPM_SPEC.md).
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return fallback
