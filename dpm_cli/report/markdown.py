"""GitHub-flavoured Markdown for pull-request comments: totals and latency in the open, the
per-layer table folded in a <details> block."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from . import fmt
from .compare import Comparison
from .counting import ModelCount
from .gates import CheckResult
from .latency import LatencyRun
from .runlog import read_summary


def _table(header: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def report_markdown(
    counts: list[ModelCount],
    comparison: Comparison | None = None,
    latency: LatencyRun | None = None,
    *,
    layers: bool = True,
) -> str:
    shape = "x".join(map(str, counts[0].input_shape))
    out = [f"### dpm report (input {shape}, one forward pass)", ""]
    out += _totals(counts, comparison) + [""]
    if latency is not None:
        out += _latency(latency, comparison) + [""]
    for count in counts:
        if count.unknown_ops:
            ops = ", ".join(f"`{u.op}` in `{fmt.layer_name(u.layer)}` ×{u.calls}" for u in count.unknown_ops)
            out += [f"**Not counted in {count.label}** (no MAC rule): {ops}", ""]
    if layers:
        out += ["<details><summary>Per-layer table</summary>", ""]
        out += _compare_layers(comparison) if comparison else _layers(counts[0])
        out += ["", "</details>", ""]
    return "\n".join(out)


def _totals(counts: list[ModelCount], cmp: Comparison | None) -> list[str]:
    header = [""] + [f"`{c.label}`" for c in counts] + (["ratio a/b"] if cmp else [])
    rows = []
    for title, attr, ratio in (("Parameters", "params", cmp and cmp.params_ratio),
                               (fmt.MACS_LABEL, "macs", cmp and cmp.macs_ratio),
                               (fmt.FLOPS_LABEL, "flops", cmp and cmp.macs_ratio)):
        rows.append([title] + [fmt.count(getattr(c, attr)) for c in counts] + ([fmt.times(ratio)] if cmp else []))
    return _table(header, rows)


def _latency(run: LatencyRun, cmp: Comparison | None) -> list[str]:
    header = ["Model", "Batch", "Median", "IQR", "p10–p90"] + (["Speed-up a/b"] if cmp else [])
    rows = []
    for s in run.stats:
        speed = [fmt.times(cmp.speedups.get(s.batch_size)) if s.label == cmp.b.label else ""] if cmp else []
        rows.append([f"`{s.label}`", str(s.batch_size), fmt.ms(s.median_ms), f"{s.q1_ms:.2f}–{s.q3_ms:.2f} ms",
                     f"{s.p10_ms:.2f}–{s.p90_ms:.2f} ms", *speed])
    note = f"CPU, {fmt.threads(run.threads)}, {run.repeats} interleaved runs after {run.warmup} warm-up."
    return [note, ""] + _table(header, rows, right_from=1)


def _layers(count: ModelCount) -> list[str]:
    rows = [[f"`{fmt.layer_name(r.name)}`", r.type, fmt.width(r.width), fmt.count(r.params), fmt.count(r.macs),
             fmt.percent(count.share(r))] for r in count.layers]
    return _table(["Layer", "Type", "Width", "Params", "MACs", "Share"], rows, right_from=2)


def _compare_layers(cmp: Comparison) -> list[str]:
    rows = []
    for d in cmp.layers:
        if d.macs_a or d.macs_b or d.width_a != d.width_b:
            rows.append([f"`{fmt.layer_name(d.name)}`", d.type, fmt.width(d.width_a, d.width_b, pair=True),
                         fmt.count(d.macs_a), fmt.count(d.macs_b)])
    return _table(["Layer", "Type", "Width a → b", "MACs a", "MACs b"], rows, right_from=2)


def check_markdown(result: CheckResult) -> str:
    """The gate table as Markdown, for a CI job summary."""
    verdict = "passed" if result.passed else f"FAILED ({len(result.failed())} of {len(result.gates)} gates)"
    rows = [[g.name, fmt.gate_value(g.unit, g.limit), fmt.gate_value(g.unit, g.measured) if g.detail is None
             else g.detail, "pass" if g.passed else "**FAIL**"] for g in result.gates]
    out = [f"### dpm check {verdict}", ""] + _table(["Gate", "Limit", "Measured", "Result"], rows) + [""]
    if result.quality is not None:
        out += [fmt.quality_line(result.quality), ""]
    return "\n".join(out)


def run_markdown(run_dir: str | Path) -> str:
    """A pruning run's before/after (its summary.json) for a pull-request comment."""
    run = Path(run_dir)
    s = read_summary(run / "summary.json")
    if s is None:
        return f"### dpm run `{run.name}`\n\nNo summary.json yet: the run has not finished.\n"
    rows = []
    if s.get("metric") in ("top1", "loss"):
        top1 = s["metric"] == "top1"
        unit = "%" if top1 else ""
        rows.append(["val top-1" if top1 else "val loss", _f(s.get("before"), unit), _f(s.get("after"), unit),
                     _change(s.get("before"), s.get("after"))])
    for title, key in (("Parameters", "params"), ("MACs", "macs")):
        a, b = s.get(f"{key}_before"), s.get(f"{key}_after")
        rows.append([title, fmt.count(a), fmt.count(b), f"{fmt.times(a / b)} smaller" if a and b else "—"])
    out = [f"### dpm run `{run.name}`", ""] + _table(["", "dense", "compact", "change"], rows) + [""]
    facts = [f"lowest val top-1 during the decay {_f(s['min_decay_top1'], '%')}" if s.get("min_decay_top1") is not None
             else None, f"{s['steps']} steps" if s.get("steps") is not None else None,
             f"{s.get('releases', 0)} releases, {s.get('suppressed', 0)} suppressed"]
    return "\n".join(out + ["; ".join(f for f in facts if f), ""])


def gates_doc_markdown(doc: dict[str, Any]) -> str:
    """Any `dpm check --json` document as a gate table (every field each gate has)."""
    gates = [g for g in doc.get("gates") or [] if isinstance(g, dict)]
    failed = sum(g.get("passed") is False for g in gates)
    verdict = "passed" if doc.get("passed") and not failed else f"FAILED ({failed} of {len(gates)} gates)"
    keys = [k for k in dict.fromkeys(k for g in gates for k in g) if k not in ("name", "passed", "unit")]
    rows = [[str(g.get("name", ""))] + [_gate_cell(g, k) for k in keys] + ["pass" if g.get("passed") else "**FAIL**"]
            for g in gates]
    return "\n".join([f"### dpm check {verdict}", ""] + _table(["Gate", *keys, "Result"], rows) + [""])


def _gate_cell(gate: dict[str, Any], key: str) -> str:
    value, unit = gate.get(key), gate.get("unit")
    if key in ("limit", "measured") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt.gate_value(unit, value) if unit in ("ms", "x", "MACs", "params") else f"{value:.4g} {unit or ''}".strip()
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _f(value: Any, unit: str = "") -> str:
    return f"{value:.2f}{unit}" if isinstance(value, (int, float)) else "—"


def _change(a: Any, b: Any) -> str:
    return f"{b - a:+.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "—"
