"""Running many independent jobs on a few cores.

Small models use one core badly: on this 2-core machine two one-thread processes train ResNet-20
(width 8, MNIST, batch 64) at 18 steps/s together, one two-thread process at 13 steps/s; and when
other work shares the cores, a two-thread process stalls at every OpenMP barrier (measured 1 step/s
against 7 for one thread). So each worker process gets one thread. Runs are deterministic with one
thread, so results do not depend on the worker count or the order jobs finish in.
"""
from __future__ import annotations

import multiprocessing
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence


def _init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _call(fn: Callable[..., Any], args: tuple) -> Any:
    try:
        return fn(*args)
    except Exception as err:  # one failed run must not lose the others' results
        return {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}


def run_jobs(fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int, threads: int = 1,
             label: Callable[[tuple], str] = str, log: Callable[[str], None] = print) -> list[Any]:
    """fn(*job) for every job, in `workers` processes; results in the jobs' order."""
    results: list[Any] = [None] * len(jobs)
    began = time.perf_counter()
    if workers <= 1:
        _init(threads)
        for i, job in enumerate(jobs):
            results[i] = _call(fn, job)
            _progress(log, i + 1, len(jobs), began, label(job), results[i])
        return results
    context = multiprocessing.get_context("spawn")  # fork after torch's thread pools can deadlock
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init, initargs=(threads,)) as pool:
        futures = {pool.submit(_call, fn, job): i for i, job in enumerate(jobs)}
        for done, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            results[i] = future.result()
            _progress(log, done, len(jobs), began, label(jobs[i]), results[i])
    return results


def _progress(log: Callable[[str], None], done: int, total: int, began: float, label: str, result: Any) -> None:
    elapsed = time.perf_counter() - began
    eta = elapsed / done * (total - done)
    status = "FAILED " + result["error"] if isinstance(result, dict) and "error" in result else "ok"
    log(f"  [{done}/{total}] {elapsed:6.0f}s elapsed, ~{eta:4.0f}s left  {label}: {status}")
    sys.stdout.flush()
