"""The benchmark suite's reduced plan runs end to end, so benchmarks/run_all.py cannot rot.

One seed, 24 steps, a width-0.25 VGG on the digits data: every mode at every budget, the ablation
path, latency and the overhead script. The numbers only have to be sane, not good.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODES = {"single", "iterative", "sp", "sp_sr", "sparse_single", "sparse_sp", "sparse_sp_sr"}
BUDGETS = {0.5, 0.25, 0.125}


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, "benchmarks/run_all.py", "--plan", "quick", "--out", str(out),
                           "--cache", str(out / "cache"), "--workers", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


@pytest.mark.slow
def test_every_mode_and_budget_ran_with_sane_numbers(quick):
    result, _ = quick
    assert not result["failed"]
    main = [r for r in result["runs"] if r["variant"] == "main"]
    assert {(r["mode"], r["budget"]) for r in main} == {(m, b) for m in MODES for b in BUDGETS}
    for r in main:
        assert 10.0 <= r["top1"] <= 100.0 and math.isfinite(r["loss"]) and r["loss"] > 0
        assert r["macs_kept"] <= r["budget"] + 0.02, r  # the budget holds against the dense model
        assert r["params_kept"] < 1.0 and r["equivalence_error"] <= 1e-4
        assert r["anytime_top1"] is not None and 0.0 <= r["anytime_top1"] <= 100.0
        assert r["per_round"] and r["per_round"][0]["selected"] > 0
        assert len(r["per_round"]) == (result["protocols"]["tiny-digits"]["rounds"] if r["mode"] == "iterative" else 1)
        assert abs(r["top1"] - r["pipeline_top1"]) < 1e-6  # our evaluation agrees with the pipeline's
        if not r["mode"].endswith("sp_sr"):
            assert r["releases"] == 0 and r["suppressed"] == 0


@pytest.mark.slow
def test_summary_latency_overhead_and_markdown(quick):
    result, markdown = quick
    rows = result["summary"]["main"]
    assert {(r["mode"], r["budget"]) for r in rows} == {(m, b) for m in MODES for b in BUDGETS}
    for r in rows:
        if r["mode"] != "single":
            assert r["d_top1"]["n"] == 1  # paired with single-step on the same seed
    assert result["summary"]["ablations"] and result["summary"]["ablations"][0]["d_top1"]["n"] == 1
    assert {r["budget"] for r in result["latency"]} == BUDGETS
    assert all(r["speedup_b1"] > 0 and r["speedup_b32"] > 0 for r in result["latency"])
    assert [r["rectify"] for r in result["overhead"]["runs"]] == [True, False]
    assert all(0 < r["overhead"] < 10 for r in result["overhead"]["runs"])
    for m in result["machine"], :
        assert m["nproc"] >= 1 and m["cpu"] and m["torch"]
    for heading in ("Headline", "every mode", "Ablations", "Latency", "overhead"):
        assert heading in markdown
    for label in ("single-step", "iterative", "DPM SP", "DPM SP+SR", "sparse + single-step", "sparse + SP+SR"):
        assert label in markdown


def test_every_mode_shares_the_dense_evaluation_window():
    """Issue 15: with a cadence inside the decay window, single-step, iterative and SP are evaluated on
    the same steps, ending eval_after_decay steps after SP's channels reach zero."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dpmbench.grid import PLANS
    from dpmbench.modes import MODES as ALL
    from dpmbench.protocol import Protocol

    p = Protocol(steps=100, eval_every=10, eval_every_decay=1, eval_after_decay=5)  # start 8, N 25
    assert p.decay_window_end == 8 + 1 + 25 + 5
    zero = {"single": p.start_step + 2, "iterative": p.start_step + 3 * (25 // 4) + 2, "sp": p.start_step + 1 + 25}
    for name, z in zero.items():
        o = ALL[name].overrides(p, 100)
        assert "training.eval_every_decay=1" in o
        assert f"training.eval_after_decay={p.decay_window_end - z}" in o, (name, o)
    assert "pruning.mode=single_step" in ALL["single"].overrides(p, 100)
    assert not any("eval_every_decay" in x for x in ALL["sp"].overrides(Protocol(steps=100, eval_every=10), 100))
    for name in ("pilot-15", "ingredients-600"):
        assert all(c.protocol.eval_every_decay == 1 for c in PLANS[name].comparisons)


def test_every_plan_fits_its_decay_phase():
    """A plan whose SP+SR runs need start + 1 + 2N > T steps would only fail hours into a study."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dpmbench.grid import PLANS
    from dpmbench.suite import plan_runs

    for name, plan in PLANS.items():
        for job in plan_runs(plan, Path("/nonexistent")):
            p = job.protocol
            phase = 2 * p.decay_steps if job.mode.endswith("sp_sr") else p.decay_steps
            assert p.start_step + 1 + phase <= p.steps, (name, job.label())


@pytest.mark.slow
def test_incremental_runner_appends_each_run_and_resumes(tmp_path):
    def once() -> list[dict]:
        done = subprocess.run([sys.executable, "benchmarks/run_incremental.py", "--plan", "quick", "--out",
                               str(tmp_path), "--cache", str(tmp_path / "cache"), "--max-runs", "1"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]

    first = once()
    second = once()  # skips the finished run, adds the next one
    assert len(first) == 1 and len(second) == 2 and second[0] == first[0]
    assert (second[0]["variant"], second[0]["seed"]) == ("main", 0) and second[1]["mode"] != second[0]["mode"]
    result = json.loads((tmp_path / "results.json").read_text())
    assert len(result["runs"]) == 2 and "Headline" in (tmp_path / "results.md").read_text()
