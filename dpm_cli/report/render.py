"""Rich tables for people: the report (totals, layers, comparison, latency) and the gate table."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from . import fmt
from .compare import Comparison
from .counting import ModelCount
from .gates import CheckResult
from .latency import LatencyRun


def print_report(
    console: Console,
    counts: list[ModelCount],
    comparison: Comparison | None = None,
    latency: LatencyRun | None = None,
    *,
    layers: bool = True,
) -> None:
    console.print(totals_table(counts, comparison))
    if layers:
        console.print(compare_layer_table(comparison) if comparison else layer_table(counts[0]))
    if latency is not None:
        console.print(latency_table(latency, comparison))
    for count in counts:
        print_unknown(console, count)


def totals_table(counts: list[ModelCount], comparison: Comparison | None = None) -> Table:
    shape = "x".join(map(str, counts[0].input_shape))
    table = Table(title=f"Per forward pass at input {shape}", title_justify="left")
    table.add_column("")
    for c in counts:
        table.add_column(c.label, justify="right")
    if comparison:
        table.add_column("ratio a/b", justify="right")
    rows = [("Parameters", "params", comparison and comparison.params_ratio),
            (fmt.MACS_LABEL, "macs", comparison and comparison.macs_ratio),
            (fmt.FLOPS_LABEL, "flops", comparison and comparison.macs_ratio)]
    for title, attr, ratio in rows:
        cells = [fmt.count(getattr(c, attr)) for c in counts]
        table.add_row(title, *cells, *([fmt.times(ratio)] if comparison else []))
    return table


def layer_table(count: ModelCount) -> Table:
    table = Table(title=f"Layers of {count.label}", title_justify="left")
    for title, justify in (("Layer", "left"), ("Type", "left"), ("Width", "right"), ("Params", "right"),
                           ("MACs", "right"), ("Share of MACs", "right")):
        table.add_column(title, justify=justify)
    for row in count.layers:
        table.add_row(fmt.layer_name(row.name), row.type, fmt.width(row.width), fmt.count(row.params),
                      fmt.count(row.macs), fmt.percent(count.share(row)))
    return table


def compare_layer_table(cmp: Comparison) -> Table:
    """Layers that do multiply-accumulates (or changed width) in either model, a → b."""
    table = Table(title=f"Layers: a = {cmp.a.label}, b = {cmp.b.label}", title_justify="left")
    for title, justify in (("Layer", "left"), ("Type", "left"), ("Width a → b", "right"),
                           ("MACs a", "right"), ("MACs b", "right"), ("MACs kept", "right")):
        table.add_column(title, justify=justify)
    for d in cmp.layers:
        if not (d.macs_a or d.macs_b or d.width_a != d.width_b):
            continue
        kept = d.macs_b / d.macs_a if d.macs_a and d.macs_b is not None else None
        table.add_row(fmt.layer_name(d.name), d.type, fmt.width(d.width_a, d.width_b, pair=True),
                      fmt.count(d.macs_a), fmt.count(d.macs_b), fmt.percent(kept))
    return table


def latency_table(run: LatencyRun, cmp: Comparison | None = None) -> Table:
    title = f"CPU latency per forward pass ({fmt.threads(run.threads)}, {run.repeats} runs after {run.warmup} warm-up)"
    table = Table(title=title, title_justify="left")
    for head in ("Model", "Batch", "Median", "IQR (25–75%)", "p10–p90"):
        table.add_column(head, justify="left" if head == "Model" else "right")
    if cmp:
        table.add_column("Speed-up a/b", justify="right")
    for s in run.stats:
        speed = [fmt.times(cmp.speedups.get(s.batch_size)) if s.label == cmp.b.label else ""] if cmp else []
        table.add_row(s.label, str(s.batch_size), fmt.ms(s.median_ms), f"{s.q1_ms:.2f}–{s.q3_ms:.2f} ms",
                      f"{s.p10_ms:.2f}–{s.p90_ms:.2f} ms", *speed)
    return table


def print_unknown(console: Console, count: ModelCount) -> None:
    """Ops with no MAC rule: their cost is missing from the totals, so say so."""
    if not count.unknown_ops:
        return
    console.print(f"[yellow]Not counted in {count.label} (no MAC rule; the totals leave them out):[/yellow]")
    for u in count.unknown_ops:
        console.print(f"  {u.op} in {fmt.layer_name(u.layer)} ({u.calls} call{'s' if u.calls != 1 else ''})")


def gate_table(result: CheckResult) -> Table:
    shape = "x".join(map(str, result.count.input_shape))
    table = Table(title=f"dpm check at input {shape}", title_justify="left")
    for head in ("Gate", "Limit", "Measured", "Result"):
        table.add_column(head, justify="left" if head == "Gate" else "right")
    for g in result.gates:
        measured = fmt.gate_value(g.unit, g.measured) if g.detail is None else g.detail
        verdict = "[green]pass[/green]" if g.passed else "[red]FAIL[/red]"
        table.add_row(g.name, fmt.gate_value(g.unit, g.limit), measured, verdict)
    if result.quality is not None:
        table.caption, table.caption_justify = fmt.quality_line(result.quality), "left"
    return table
