"""Markdown tables of a suite result (what goes into docs/BENCHMARKS.md)."""
from __future__ import annotations

import math
from typing import Any

from .modes import MODES

SPEEDUP = {0.5: "2x", 0.25: "4x", 0.125: "8x"}
MARK = {"win": " **win**", "loss": " **loss**", "level": "", "n/a": ""}


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _diff(d: dict[str, float] | None, verdict: str = "n/a", digits: int = 2, scale: float = 1.0) -> str:
    if not d:
        return "-"
    se = "" if not math.isfinite(d["se"]) else f" ± {d['se'] * scale:.{digits}f}"
    return f"{d['mean'] * scale:+.{digits}f}{se}{MARK.get(verdict, '')}"


def _rounds(row: dict[str, Any], key: str) -> str:
    if not row["per_round"]:
        return "-"
    return "/".join(_num(r[key], 1) for r in row["per_round"])


def machine_block(result: dict[str, Any], command: str) -> str:
    m = result["machine"]
    return "\n".join([
        f"- Command: `{command}`",
        f"- Date: {m['date']}; wall time {result['wall_seconds'] / 60:.1f} min",
        f"- Machine: `nproc` = {m['nproc']}, CPU `{m['cpu']}`, torch {m['torch']}, torch-pruning "
        f"{m['torch_pruning']}, Python {m['python']}",
        f"- Code: commit {m.get('git', 'unknown')} at the start, {result.get('git_end', 'unknown')} at the end",
        f"- Parallelism: {result['workers']} worker processes x {result['threads_per_worker']} thread; "
        f"load average at start {m['load_average']}, at end {result.get('load_average_end')}",
    ])


def dense_table(result: dict[str, Any]) -> str:
    lines = ["| setup | dense top-1 % | dense held-out loss | training steps | protocol (T, N, eval every, lr) |",
             "|---|---|---|---|---|"]
    for name, d in result["dense"].items():
        p = result["protocols"].get(name, {})
        lines.append(f"| {name} | {_num(d['top1'])} | {_num(d['loss'], 4)} | {d['steps']} | "
                     f"T={p.get('steps')}, N={p.get('decay_steps')}, every {p.get('eval_every')}{_dense(p)}, "
                     f"lr {p.get('lr')} |")
    return "\n".join(lines)


def _dense(p: dict[str, Any]) -> str:
    """The anytime cadence, when the protocol evaluates densely inside the decay window."""
    k = p.get("eval_every_decay")
    return f" (every {k} from the first cut to step {p.get('decay_window_end')})" if k else ""


def headline_table(result: dict[str, Any]) -> str:
    rows = {(r["setup"], r["budget"], r["mode"]): r for r in result["summary"]["main"]}
    lines = ["| setup | MACs | seeds | single-step top-1 | SP - single | SP+SR - single | SP+SR - SP | "
             "iterative - single | anytime top-1: single / SP / SP+SR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (setup, budget, mode), base in rows.items():
        if mode != "single":
            continue
        sp, sr, it = (rows.get((setup, budget, m)) for m in ("sp", "sp_sr", "iterative"))
        pair = (sr or {}).get("pairs", {}).get("sp")
        lines.append(" | ".join([
            f"| {setup}", SPEEDUP.get(budget, str(budget)), str(base["n"]),
            f"{_num(base['top1'])} ± {_num(base['top1_std'])}",
            _diff(sp and sp["d_top1"], sp and sp["verdict_top1"]),
            _diff(sr and sr["d_top1"], sr and sr["verdict_top1"]),
            _diff(pair and pair["d_top1"], pair and pair["verdict_top1"]),
            _diff(it and it["d_top1"], it and it["verdict_top1"]),
            " / ".join(_num(r and r["anytime_top1"], 1) for r in (base, sp, sr)) + " |",
        ]))
    return "\n".join(lines)


def setup_table(result: dict[str, Any], setup: str) -> str:
    lines = ["| MACs | mode | seeds | top-1 % | Δ top-1 vs single | held-out loss | Δ loss vs single | "
             "MACs kept | params kept | selected / releases / suppressed per round | anytime top-1 (mean, worst) | "
             "lowest top-1 after the first cut, to the end |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["summary"]["main"]:
        if r["setup"] != setup:
            continue
        base = r["mode"] == "single"
        lines.append(" | ".join([
            f"| {SPEEDUP.get(r['budget'], r['budget'])}", MODES[r["mode"]].label, str(r["n"]),
            f"{_num(r['top1'])} ± {_num(r['top1_std'])}",
            "(baseline)" if base else _diff(r.get("d_top1"), r.get("verdict_top1", "n/a")),
            f"{_num(r['loss'], 4)} ± {_num(r['loss_std'], 4)}",
            "(baseline)" if base else _diff(r.get("d_loss"), r.get("verdict_loss", "n/a"), digits=4),
            _num(r["macs_kept"], 3), _num(r["params_kept"], 3),
            f"{_rounds(r, 'selected')} / {_rounds(r, 'release')} / {_rounds(r, 'suppressed')}",
            f"{_num(r['anytime_top1'], 1)}, {_num(r['anytime_top1_worst'], 1)}",
            f"{_num(r.get('min_top1_after_cut'), 1)} |",
        ]))
    return "\n".join(lines)


def pairs_table(result: dict[str, Any]) -> str:
    lines = ["| setup | MACs | comparison | seeds | Δ top-1 | Δ held-out loss |", "|---|---|---|---|---|---|"]
    for r in result["summary"]["main"]:
        for ref, p in r.get("pairs", {}).items():
            if not p or not p["d_top1"]:
                continue
            lines.append(f"| {r['setup']} | {SPEEDUP.get(r['budget'])} | {MODES[r['mode']].label} - "
                         f"{MODES[ref].label} | {p['d_top1']['n']} | {_diff(p['d_top1'], p['verdict_top1'])} | "
                         f"{_diff(p['d_loss'], p['verdict_loss'], digits=4)} |")
    return "\n".join(lines)


def ablation_table(result: dict[str, Any]) -> str:
    lines = ["| ablation (setup, MACs) | mode | seeds | top-1 % | Δ top-1 vs same mode, main protocol | "
             "Δ loss vs same mode | Δ top-1 vs main single-step | Δ top-1 vs single-step of this ablation | "
             "Δ top-1 vs main SP | releases / suppressed per run | anytime top-1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["summary"]["ablations"]:
        single, sp = r["pairs"].get("main single"), r["pairs"].get("main sp")
        own = r["pairs"].get("ablation single")
        lines.append(" | ".join([
            f"| {r['ablation']} ({r['setup']}, {SPEEDUP.get(r['budget'])})", MODES[r["mode"]].label, str(r["n"]),
            f"{_num(r['top1'])} ± {_num(r['top1_std'])}", _diff(r.get("d_top1"), r.get("verdict_top1", "n/a")),
            _diff(r.get("d_loss"), r.get("verdict_loss", "n/a"), digits=4),
            _diff(single and single["d_top1"], single and single["verdict_top1"]),
            _diff(own and own["d_top1"], own and own["verdict_top1"]),
            _diff(sp and sp["d_top1"], sp and sp["verdict_top1"]),
            f"{_num(r['releases'], 1)} / {_num(r['suppressed'], 1)}", f"{_num(r['anytime_top1'], 1)} |",
        ]))
    return "\n".join(lines)


def latency_table(result: dict[str, Any]) -> str:
    lines = ["| setup | MACs budget | MACs kept | threads | dense ms (b1 / b32) | compact ms (b1 / b32) | "
             "speed-up b1 | speed-up b32 |", "|---|---|---|---|---|---|---|---|"]
    for r in result["latency"]:
        lines.append(f"| {r['setup']} | {SPEEDUP.get(r['budget'])} | {_num(r['macs_kept'], 3)} | {r['threads']} | "
                     f"{_num(r['dense_ms_b1'], 3)} / {_num(r['dense_ms_b32'], 2)} | "
                     f"{_num(r['compact_ms_b1'], 3)} / {_num(r['compact_ms_b32'], 2)} | "
                     f"{_num(r['speedup_b1'])}x | {_num(r['speedup_b32'])}x |")
    return "\n".join(lines)


def overhead_line(result: dict[str, Any]) -> str:
    o = result.get("overhead")
    if not o:
        return "not run"
    if "error" in o:
        return f"failed: {o['error']}"
    runs = "; ".join(
        f"Self-Rectifying {'on' if r['rectify'] else 'off'}: plain step {r['plain_step_ms']:.1f} ms, "
        f"`pruner.step()` {r['dpm_step_ms']:.1f} ms (mean {r['dpm_step_ms_mean']:.1f}), overhead "
        f"**{100 * r['overhead']:.1f}%**, events {r['events'] or 'none'}" for r in o["runs"])
    return (f"`{o['command']}`: {o['model']}, batch {o['batch']}, {o['threads']} threads, "
            f"{o['runs'][0]['decaying_structures']} structures decaying. {runs}")


def report(result: dict[str, Any], command: str) -> str:
    setups = list(dict.fromkeys(r["setup"] for r in result["summary"]["main"]))
    parts = ["## Machine and command", machine_block(result, command), "", "## Dense models", dense_table(result),
             "", "## Headline: paired differences to single-step (mean ± standard error over seeds)",
             headline_table(result), ""]
    for s in setups:
        parts += [f"## {s}: every mode", setup_table(result, s), ""]
    parts += ["## Further paired comparisons", pairs_table(result), ""]
    if result["summary"]["ablations"]:
        parts += ["## Ablations", ablation_table(result), ""]
    parts += ["## Latency of the compact models (DPM SP+SR, seed 0)", latency_table(result), "",
              "## DPM per-step overhead", overhead_line(result), ""]
    if result["failed"]:
        parts += ["## Failed runs", *[f"- {f['job']}: {f['error']}" for f in result["failed"]], ""]
    return "\n".join(parts)
