"""PNG plots: per-layer widths (before and after), the decay history of a training run, and its
accuracy and loss with the decay window shaded. The data behind them comes from series.py.

matplotlib is optional (`pip install 'dpm-cli[plot]'`); it is imported only when a plot is asked
for, with the file-only Agg backend so plotting works on machines without a display.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, DpmError
from .compare import Comparison
from .counting import ModelCount
from .runlog import read_metrics
from .series import DecaySeries, TrainingSeries, decay_series, run_widths, training_series

# how each event kind is marked on the decay plot; releases stand out
_MARKERS = {"release": ("x", "red", 60), "replacement": ("^", "tab:green", 30), "suppressed": ("v", "tab:orange", 30),
            "pruned": ("o", "black", 14)}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise DpmError("plotting needs matplotlib, which is not installed: pip install matplotlib "
                       "(or pip install 'dpm-cli[plot]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _out_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file: --plot expects a folder to write PNG files into")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{out}: cannot create the plot folder ({err.strerror})") from None
    return out


def width_rows(data: ModelCount | Comparison) -> tuple[list[tuple[str, int | None, int | None]], tuple]:
    """(layer, width a, width b) of every layer that does multiply-accumulates, and the two labels."""
    if isinstance(data, Comparison):
        rows = [(d.name, d.width_a, d.width_b) for d in data.layers
                if (d.macs_a or d.macs_b) and (d.width_a or d.width_b)]
        return rows, (data.a.label, data.b.label)
    return [(r.name, r.width, None) for r in data.layers if r.macs and r.width], (data.label, None)


def plot_widths(data: ModelCount | Comparison, out_dir: str | Path) -> Path:
    """widths.png: the width of every layer that does multiply-accumulates, a and b side by side."""
    plt = _pyplot()
    rows, labels = width_rows(data)
    title = "Per-layer widths" + (" before and after" if labels[1] else "")
    return _save(plt, widths_figure(rows, labels, title), _out_dir(out_dir) / "widths.png")


def widths_figure(rows: list[tuple[str, int | None, int | None]], labels: tuple, title: str) -> Any:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(rows) + 2), 4))
    x = list(range(len(rows)))
    ax.bar([i - 0.2 if labels[1] else i for i in x], [a or 0 for _, a, _ in rows],
           width=0.4 if labels[1] else 0.8, label=labels[0], color="tab:gray")
    if labels[1]:
        ax.bar([i + 0.2 for i in x], [b or 0 for _, _, b in rows], width=0.4, label=labels[1], color="tab:blue")
    ax.set_xlabel("layer (in model order)")
    ax.set_ylabel("width (output channels or features)")
    ax.set_title(title)
    if len(rows) <= 40:  # names only while they stay readable
        ax.set_xticks(x, [name or "(model)" for name, _, _ in rows], rotation=90, fontsize=6)
    ax.legend()
    return fig


def plot_decay_history(run_dir: str | Path, out_dir: str | Path) -> Path:
    """decay_history.png: the norm of every decaying structure, step by step, releases marked."""
    data = decay_series(run_dir)
    return _save(_pyplot(), decay_figure(data, Path(run_dir).name), _out_dir(out_dir) / "decay_history.png")


def plot_training(run_dir: str | Path, out_dir: str | Path) -> Path:
    """training.png: accuracy and loss over the run, the decay window shaded."""
    data = training_series(run_dir)
    return _save(_pyplot(), training_figure(data, Path(run_dir).name), _out_dir(out_dir) / "training.png")


def plot_run(run_dir: str | Path, out_dir: str | Path, *, widths: bool = True) -> list[Path]:
    """Every plot a run's logs allow: decay history, training curves, widths before/after (summary.json)."""
    written = [plot_decay_history(run_dir, out_dir)]
    if read_metrics(Path(run_dir) / "metrics.jsonl").train:
        written.append(plot_training(run_dir, out_dir))
    rows = run_widths(run_dir) if widths else []
    if rows:
        fig = widths_figure(rows, ("before", "after"), f"Per-layer widths of {Path(run_dir).name}")
        written.append(_save(_pyplot(), fig, _out_dir(out_dir) / "widths.png"))
    return written


def decay_figure(data: DecaySeries, name: str) -> Any:
    """Pruned decays thin and grey, released ones red, replacements green; events marked where they happened."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    styles = {"released": ("tab:red", 1.4), "replacement": ("tab:green", 1.2), "plain": ("0.6", 0.6)}
    labels = {"released": "decay until its release", "replacement": "replacement's decay", "plain": "decay to zero"}
    plain = [c for c in data.curves if c.end != "released" and c.kind != "replacement"]
    if plain:  # one collection: thousands of structures draw in a moment
        from matplotlib.collections import LineCollection

        ax.add_collection(LineCollection([list(zip(c.steps, c.norms)) for c in plain], colors=styles["plain"][0],
                                         linewidths=styles["plain"][1], zorder=1, label=labels["plain"]))
        ax.autoscale_view()
    shown: set[str] = set()
    for curve in data.curves:
        if curve.end != "released" and curve.kind != "replacement":
            continue
        style = "released" if curve.end == "released" else "replacement"
        color, width = styles[style]
        ax.plot(curve.steps, curve.norms, color=color, linewidth=width, zorder=2,
                label=None if style in shown else labels[style])
        shown.add(style)
    for kind, (marker, color, size) in _MARKERS.items():
        points = [(m.step, m.norm) for m in data.markers if m.kind == kind and m.norm is not None]
        if points:
            ax.scatter([s for s, _ in points], [v for _, v in points], marker=marker, color=color, s=size,
                       zorder=3, label=f"{kind} ({len(points)})")
    n = f", N = {data.decay_steps} steps" if data.decay_steps else ""
    ax.set_xlabel("training step")
    ax.set_ylabel("joint norm of the structure")
    ax.set_title(f"Decay of {len(data.curves)} structures in {name}{n}")
    ax.set_ylim(bottom=0)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=7)
    return fig


def training_figure(data: TrainingSeries, name: str) -> Any:
    """Validation top-1 (when there are labels) above, training and validation loss below."""
    plt = _pyplot()
    panels = 2 if data.eval_top1 else 1
    fig, axes = plt.subplots(panels, 1, figsize=(8, 3.2 * panels), sharex=True, squeeze=False)
    axes = [a[0] for a in axes]
    if data.eval_top1:
        ax = axes[0]
        ax.plot(data.eval_steps, data.eval_top1, marker="o", markersize=3, color="tab:blue", label="val top-1")
        if data.before is not None:
            ax.axhline(data.before, color="0.4", linestyle="--", linewidth=0.8, label=f"dense model {data.before:.2f}%")
        if data.min_decay_top1 is not None:
            ax.axhline(data.min_decay_top1, color="tab:red", linestyle=":", linewidth=0.8,
                       label=f"lowest during the decay {data.min_decay_top1:.2f}%")
        ax.set_ylabel("val top-1 (%)")
        ax.set_title(f"Accuracy and loss over {name}")
    ax = axes[-1]
    ax.plot(data.train_steps, data.train_loss, color="tab:orange", linewidth=1, label="training loss")
    if data.eval_steps:
        ax.plot(data.eval_steps, data.eval_loss, marker="o", markersize=3, color="tab:purple", label="val loss")
    ax.set_ylabel("loss")
    ax.set_xlabel("training step")
    if panels == 1:
        ax.set_title(f"Loss over {name}")
    for i, ax in enumerate(axes):
        if data.window:
            lo, hi = data.window
            ax.axvspan(lo, hi, color="gold", alpha=0.2, label=f"decay (steps {lo}-{hi})" if i == 0 else None)
        ax.legend(loc="best", fontsize=7)
    return fig


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes (for a self-contained HTML page); closes the figure."""
    import io

    plt = _pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
