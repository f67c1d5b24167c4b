"""One self-contained HTML page: summary, gates, per-layer comparison and plots.

Nothing on the page comes from the network: the CSS is inline, the plots are base64 PNG data URIs, and
there are no scripts, fonts or links to fetch, so the file can be mailed, attached to a CI run or
opened offline. Every text from a model, a log or a gate document is HTML-escaped.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from ..checkpoint import write_atomically
from ..errors import DpmError
from . import fmt
from .compare import Comparison
from .counting import ModelCount
from .latency import LatencyRun
from .runlog import read_metrics, read_summary

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
padding:0 1rem;color:#1f2328;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f6f8fa}
td.l{text-align:left}.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
figure{margin:1rem 0}img{max-width:100%;height:auto;border:1px solid #d0d7de}
figcaption{font-size:.85rem;color:#57606a}.note{color:#57606a;font-size:.9rem}
code{font-family:ui-monospace,monospace;font-size:.85rem}
"""

# keys of a `dpm check --json` document shown elsewhere on the page (or not for people)
_CHECK_SHOWN = {"schema_version", "kind", "units", "gates", "passed", "model", "baseline", "latency"}


@dataclass
class Page:
    """What one report page shows; every part is optional."""

    title: str = "dpm report"
    counts: list[ModelCount] = field(default_factory=list)
    comparison: Comparison | None = None
    latency: LatencyRun | None = None
    run_dir: Path | None = None
    check: dict[str, Any] | None = None  # a `dpm check --json` document
    plots: bool = True


def report_html(page: Page) -> str:
    summary = read_summary(page.run_dir / "summary.json") if page.run_dir else None
    body = [f"<h1>{escape(page.title)}</h1>"]
    if page.run_dir is not None:
        body.append(f'<p class="note">Training run <code>{escape(str(page.run_dir))}</code></p>')
    if summary:
        body += ["<h2>Pruning run</h2>", run_table(summary)]
    elif page.run_dir is not None:
        body.append('<p class="note">The run has not finished (no summary.json yet): its logs so far.</p>')
    if page.counts:
        shape = "x".join(map(str, page.counts[0].input_shape))
        body += [f"<h2>Size per forward pass at input {escape(shape)}</h2>", totals_table(page.counts, page.comparison)]
    if page.check is not None:
        body += ["<h2>Gates</h2>", gates_html(page.check)]
    layers = layers_table(page.comparison, page.counts, summary)
    if layers:
        body += ["<h2>Per-layer comparison</h2>", layers]
    if page.latency is not None:
        body += ["<h2>CPU latency</h2>", latency_table(page.latency, page.comparison)]
    for count in page.counts:
        if count.unknown_ops:
            ops = ", ".join(f"<code>{escape(u.op)}</code> in <code>{escape(fmt.layer_name(u.layer))}</code>"
                            for u in count.unknown_ops)
            body.append(f'<p class="note">Not counted in {escape(count.label)} (no MAC rule): {ops}</p>')
    if page.plots:
        body += ["<h2>Plots</h2>", *plots_html(page)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(page.title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_html(path: str | Path, text: str) -> Path:
    """Write the page atomically: a reader sees the old file or the whole new one."""
    path = Path(path)

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    write_atomically(path, write)
    return path


# ---------------------------------------------------------------------------------------- tables

def _table(header: list[str] | None, rows: list[list[str]], left: int = 1) -> str:
    """Cells are already escaped HTML; the first `left` columns are left-aligned; no header row if None."""
    head = f"<tr>{''.join(f'<th>{h}</th>' for h in header)}</tr>" if header else ""
    lines = ["".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(row))
             for row in rows]
    return f"<table>{head}" + "".join(f"<tr>{r}</tr>" for r in lines) + "</table>"


def run_table(s: dict[str, Any]) -> str:
    """Before and after from summary.json: the quality, the size, what the decay did."""
    rows = []
    if s.get("metric") == "top1":
        rows.append(["val top-1", _pct(s.get("before")), _pct(s.get("after")), _delta(s.get("before"), s.get("after"))])
    elif s.get("metric") == "loss":
        rows.append(["val loss", _num(s.get("before")), _num(s.get("after")), _delta(s.get("before"), s.get("after"))])
    if s.get("ce_before") is not None:
        rows.append(["val cross-entropy", _num(s["ce_before"]), _num(s.get("ce_after")),
                     _delta(s["ce_before"], s.get("ce_after"))])
    for title, key in (("Parameters", "params"), ("MACs", "macs")):
        a, b = s.get(f"{key}_before"), s.get(f"{key}_after")
        rows.append([title, fmt.count(a), fmt.count(b), f"{fmt.times(a / b)} smaller" if a and b else "—"])
    out = _table(["", "dense", "compact", "change"], rows)
    facts = [("lowest val top-1 during the decay (anytime accuracy)", _pct(s.get("min_decay_top1"))),
             ("training steps", _num(s.get("steps"))), ("releases", _num(s.get("releases"))),
             ("suppressed releases", _num(s.get("suppressed"))),
             ("equivalence error (compact vs decayed, relative)", _num(s.get("equivalence_error")))]
    out += _table(None, [[escape(k), v] for k, v in facts if v != "—"])
    notes = [n for n in s.get("notes") or [] if isinstance(n, str)]
    return out + "".join(f'<p class="note">note: {escape(n)}</p>' for n in notes)


def totals_table(counts: list[ModelCount], cmp: Comparison | None) -> str:
    header = [""] + [escape(c.label) for c in counts] + (["ratio a/b"] if cmp else [])
    rows = []
    for title, attr, ratio in (("Parameters", "params", cmp and cmp.params_ratio),
                               (fmt.MACS_LABEL, "macs", cmp and cmp.macs_ratio),
                               (fmt.FLOPS_LABEL, "flops", cmp and cmp.macs_ratio)):
        rows.append([escape(title)] + [fmt.count(getattr(c, attr)) for c in counts] + ([fmt.times(ratio)] if cmp else []))
    return _table(header, rows)


def layers_table(cmp: Comparison | None, counts: list[ModelCount], summary: dict[str, Any] | None) -> str:
    if cmp is not None:
        rows = [[f"<code>{escape(fmt.layer_name(d.name))}</code>", escape(d.type),
                 escape(fmt.width(d.width_a, d.width_b, pair=True)), fmt.count(d.macs_a), fmt.count(d.macs_b)]
                for d in cmp.layers if d.macs_a or d.macs_b or d.width_a != d.width_b]
        return (f'<p class="note">a = {escape(cmp.a.label)}, b = {escape(cmp.b.label)}</p>'
                + _table(["Layer", "Type", "Width a → b", "MACs a", "MACs b"], rows, left=2))
    if counts:
        c = counts[0]
        rows = [[f"<code>{escape(fmt.layer_name(r.name))}</code>", escape(r.type), fmt.width(r.width),
                 fmt.count(r.params), fmt.count(r.macs), fmt.percent(c.share(r))] for r in c.layers]
        return _table(["Layer", "Type", "Width", "Params", "MACs", "Share"], rows, left=2)
    widths = [w for w in (summary or {}).get("widths") or [] if isinstance(w, dict)]
    rows = [[f"<code>{escape(str(w.get('name')))}</code>", escape(str(w.get("kind"))),
             escape(fmt.width(w.get("in_before"), w.get("in_after"), pair=True)),
             escape(fmt.width(w.get("out_before"), w.get("out_after"), pair=True))] for w in widths]
    return _table(["Layer", "Type", "Inputs before → after", "Outputs before → after"], rows, left=2) if rows else ""


def latency_table(run: LatencyRun, cmp: Comparison | None) -> str:
    rows = []
    for s in run.stats:
        speed = [fmt.times(cmp.speedups.get(s.batch_size)) if s.label == cmp.b.label else ""] if cmp else []
        rows.append([escape(s.label), str(s.batch_size), fmt.ms(s.median_ms), f"{s.q1_ms:.2f}–{s.q3_ms:.2f} ms",
                     f"{s.p10_ms:.2f}–{s.p90_ms:.2f} ms", *speed])
    note = f"CPU, {fmt.threads(run.threads)}, {run.repeats} interleaved runs after {run.warmup} warm-up."
    header = ["Model", "Batch", "Median", "IQR", "p10–p90"] + (["Speed-up a/b"] if cmp else [])
    return f'<p class="note">{escape(note)}</p>' + _table(header, rows)


def gates_html(check: dict[str, Any]) -> str:
    """Any `dpm check --json` document: one row per gate, every field it has, then the other facts."""
    gates = [g for g in check.get("gates") or [] if isinstance(g, dict)]
    failed = [g for g in gates if g.get("passed") is False]
    verdict = ('<p class="pass">every gate passed</p>' if check.get("passed") and not failed else
               f'<p class="fail">FAILED: {len(failed)} of {len(gates)} gates</p>')
    keys = [k for k in dict.fromkeys(k for g in gates for k in g) if k not in ("name", "passed", "unit")]
    rows = [[escape(str(g.get("name", "")))] + [_gate_value(g, k) for k in keys]
            + ['<span class="pass">pass</span>' if g.get("passed") else '<span class="fail">FAIL</span>']
            for g in gates]
    out = verdict + _table(["Gate"] + [escape(k) for k in keys] + ["Result"], rows)
    facts = [[escape(k), escape(_plain(v))] for k, v in check.items() if k not in _CHECK_SHOWN and v is not None]
    return out + (_table(None, facts, left=2) if facts else "")


def _gate_value(gate: dict[str, Any], key: str) -> str:
    value, unit = gate.get(key), gate.get("unit")
    if key in ("limit", "measured") and isinstance(value, (int, float)) and not isinstance(value, bool):
        text = fmt.ms(value) if unit == "ms" else fmt.times(value) if unit == "x" else (
            fmt.count(value) if unit in ("MACs", "params") else f"{value:.4g}" + (f" {unit}" if unit else ""))
        return escape(text)
    return escape(_plain(value))


def _plain(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—"
    return str(value) if isinstance(value, int) or value.is_integer() and abs(value) < 1e6 else f"{value:.4g}"


def _pct(value: Any) -> str:
    return f"{value:.2f}%" if isinstance(value, (int, float)) else "—"


def _delta(a: Any, b: Any) -> str:
    return f"{b - a:+.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "—"


# ---------------------------------------------------------------------------------------- plots

def plots_html(page: Page) -> list[str]:
    """The figures as <figure> blocks with data-URI images; a note instead if matplotlib is missing."""
    try:
        figures = _figures(page)
    except DpmError as err:
        if "matplotlib" not in str(err):
            raise
        return [f'<p class="note">Plots left out: {escape(str(err))}</p>']
    if not figures:
        return ['<p class="note">Nothing to plot: pass --run with a training run folder, or a model.</p>']
    return [f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>" for png, alt, caption in figures]


def _figures(page: Page) -> list[tuple[bytes, str, str]]:
    from . import plots, series

    out = []
    if page.run_dir is not None:
        name = page.run_dir.name
        decay = series.decay_series(page.run_dir)
        out.append((plots.png_bytes(plots.decay_figure(decay, name)), "decay history",
                    "Norm of every decaying structure at every logged step, from the start of its decay to "
                    "exactly zero when pruned; releases (x) and replacements (triangle) where they happened."))
        if read_metrics(page.run_dir / "metrics.jsonl").train:
            train = series.training_series(page.run_dir)
            out.append((plots.png_bytes(plots.training_figure(train, name)), "accuracy and loss",
                        "Validation accuracy and loss over the run; the shaded band is the decay window, so the "
                        "lowest accuracy inside it is the accuracy the model keeps while it is pruned."))
    rows, labels, title = _width_rows(page)
    if rows:
        out.append((plots.png_bytes(plots.widths_figure(rows, labels, title)), "per-layer widths",
                    "Output width of every layer before and after pruning."))
    return out


def _width_rows(page: Page) -> tuple[list, tuple, str]:
    from . import plots, series

    if page.comparison is not None or page.counts:
        rows, labels = plots.width_rows(page.comparison or page.counts[0])
        return rows, labels, "Per-layer widths" + (" before and after" if labels[1] else "")
    if page.run_dir is not None:
        return series.run_widths(page.run_dir), ("before", "after"), "Per-layer widths before and after"
    return [], (None, None), ""
