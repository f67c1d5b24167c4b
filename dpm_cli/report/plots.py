"""PNG plots: per-layer widths (before and after) and the decay history of a training run.

matplotlib is optional (`pip install 'dpm-cli[plot]'`); it is imported only when a plot is asked
for, with the file-only Agg backend so plotting works on machines without a display.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, DpmError
from .compare import Comparison
from .counting import ModelCount
from .runlog import NormHistory, read_events, read_norms

# how each event kind is marked on the decay plot; releases stand out
_MARKERS = {"release": ("x", "red", 60), "replacement": ("^", "tab:green", 30), "pruned": ("o", "black", 14)}


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


def plot_widths(data: ModelCount | Comparison, out_dir: str | Path) -> Path:
    """widths.png: the width of every layer that does multiply-accumulates, a and b side by side."""
    plt = _pyplot()
    if isinstance(data, Comparison):
        rows = [(d.name, d.width_a, d.width_b) for d in data.layers
                if (d.macs_a or d.macs_b) and (d.width_a or d.width_b)]
        labels = (data.a.label, data.b.label)
    else:
        rows = [(r.name, r.width, None) for r in data.layers if r.macs and r.width]
        labels = (data.label, None)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(rows) + 2), 4))
    x = list(range(len(rows)))
    ax.bar([i - 0.2 if labels[1] else i for i in x], [a or 0 for _, a, _ in rows],
           width=0.4 if labels[1] else 0.8, label=labels[0], color="tab:gray")
    if labels[1]:
        ax.bar([i + 0.2 for i in x], [b or 0 for _, _, b in rows], width=0.4, label=labels[1], color="tab:blue")
    ax.set_xlabel("layer (in model order)")
    ax.set_ylabel("width (output channels or features)")
    ax.set_title("Per-layer widths" + (" before and after" if labels[1] else ""))
    if len(rows) <= 40:  # names only while they stay readable
        ax.set_xticks(x, [name or "(model)" for name, _, _ in rows], rotation=90, fontsize=6)
    ax.legend()
    return _save(plt, fig, _out_dir(out_dir) / "widths.png")


def plot_decay_history(run_dir: str | Path, out_dir: str | Path) -> Path:
    """decay_history.png: norm of each decaying structure over the training steps, releases marked.

    Structures named in events.jsonl are drawn in colour, the others thin and grey.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"{run}: no such run folder; --run expects the folder a training run wrote")
    history = read_norms(run / "norms.jsonl")
    events = read_events(run / "events.jsonl")
    if not history.steps:
        raise ConfigError(f"{run / 'norms.jsonl'} is empty: the run logged no norms yet")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _draw_norms(ax, history, {e.key for e in events})
    _draw_events(ax, history, events)
    ax.set_xlabel("training step")
    ax.set_ylabel("structure norm")
    ax.set_title(f"Decay history of {run.name}")
    ax.legend(loc="upper right", fontsize=7)
    return _save(plt, fig, _out_dir(out_dir) / "decay_history.png")


def _draw_norms(ax: Any, history: NormHistory, eventful: set[str]) -> None:
    highlighted = [k for k in history.series if k in eventful] or list(history.series)
    dots = "." if len(history.steps) <= 50 else None  # a short log would be invisible as lines alone
    for key, values in history.series.items():
        if key in highlighted:
            ax.plot(history.steps, values, linewidth=1.2, marker=dots, label=key if len(highlighted) <= 10 else None)
        else:
            ax.plot(history.steps, values, linewidth=0.5, color="lightgray")


def _draw_events(ax: Any, history: NormHistory, events: list[Any]) -> None:
    # every release gets a vertical line, so it shows even when its structure's norm was not logged
    releases = sorted({e.step for e in events if e.kind == "release"})
    count = sum(e.kind == "release" for e in events)
    for i, step in enumerate(releases):
        ax.axvline(step, color="red", linestyle="--", linewidth=0.8, alpha=0.6,
                   label=f"release ({count})" if i == 0 else None)
    for kind, (marker, color, size) in _MARKERS.items():
        points = [(e.step, history.at(e.key, e.step)) for e in events if e.kind == kind]
        points = [(s, v) for s, v in points if v is not None]
        if points:
            ax.scatter([s for s, _ in points], [v for _, v in points], marker=marker, color=color, s=size,
                       zorder=3, label=None if kind == "release" else f"{kind} ({len(points)})")


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
