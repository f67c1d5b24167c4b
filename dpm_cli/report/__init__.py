"""Measuring models: parameters, MACs and FLOPs per layer, CPU latency, comparisons and CI gates.

    from dpm_cli.report import count_model, compare, measure_latency
    a = count_model(original, torch.randn(1, 3, 32, 32), label="original")
    b = count_model(compact, torch.randn(1, 3, 32, 32), label="compact")
    run = measure_latency({"original": original, "compact": compact}, (1, 3, 32, 32), batch_sizes=(1, 32))
    cmp = compare(a, b, run)       # cmp.macs_ratio, cmp.params_ratio, cmp.speedups[1]
    q = measure_quality(compact, val_loader, baseline=original)   # q.accuracy_drop, q.cosine, q.samples
    write_html("r.html", report_html(Page(counts=[a, b], comparison=cmp, run_dir=Path("runs/x"))))

MACs are multiply-accumulates of conv, linear, matmul and attention; FLOPs = 2 x MACs. Ops with no
rule are listed in `ModelCount.unknown_ops`, never silently counted as zero. Measuring leaves the
model as it was (no buffers, no hooks, same training flags).
"""
from __future__ import annotations

from .compare import Comparison, LayerDiff, compare
from .counting import LayerCount, ModelCount, UnknownOp, count_model, example_input
from .gates import (
    CheckResult,
    GateFailure,
    GateResult,
    Limits,
    check_model,
    evaluate_gates,
)
from .evaldata import EvalData, resolve_eval_data
from .html import Page, report_html, write_html
from .latency import LatencyRun, LatencyStats, measure_latency
from .plots import plot_decay_history, plot_run, plot_training, plot_widths
from .quality import Quality, measure_quality
from .schema import SCHEMA_VERSION, check_to_dict, report_to_dict
from .series import decay_series, run_widths, training_series

__all__ = [
    "SCHEMA_VERSION",
    "CheckResult",
    "Comparison",
    "EvalData",
    "GateFailure",
    "GateResult",
    "LatencyRun",
    "LatencyStats",
    "LayerCount",
    "LayerDiff",
    "Limits",
    "Page",
    "ModelCount",
    "Quality",
    "UnknownOp",
    "check_model",
    "check_to_dict",
    "compare",
    "count_model",
    "decay_series",
    "evaluate_gates",
    "example_input",
    "measure_latency",
    "measure_quality",
    "plot_decay_history",
    "plot_run",
    "plot_training",
    "plot_widths",
    "report_html",
    "report_to_dict",
    "resolve_eval_data",
    "run_widths",
    "training_series",
    "write_html",
]
