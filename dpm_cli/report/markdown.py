"""GitHub-flavoured Markdown for pull-request comments: totals and latency in the open, the
per-layer table folded in a <details> block."""
from __future__ import annotations

from . import fmt
from .compare import Comparison
from .counting import ModelCount
from .gates import CheckResult
from .latency import LatencyRun


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
