"""`dpm train`: train a dense model by itself (the starting point of `dpm prune`)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from .app import app
from .common import EXIT_CODES, emit_json, read_recipe


@app.command(epilog=f"Examples:\n\n  dpm train --recipe recipes/mnist-demo.yaml --run-dir runs/dense\n\n"
                    f"  dpm prune runs/dense/dense.pt --recipe recipes/mnist-demo.yaml\n\n{EXIT_CODES}")
def train(
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY.PATH=VALUE]...", help="Recipe overrides."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="YAML recipe (model.factory, data, pretrain)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run directory (default: output.dir)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run directory."),
    json_out: bool = typer.Option(False, "--json", help="Print a machine-readable summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Train model.factory's model densely as pretrain.* says; write RUN/dense.pt and RUN/metrics.jsonl."""
    from ..pipeline.pretrain import train_dense
    from ..training.progress import make_reporter

    r = read_recipe(recipe, list(overrides or []))
    summary = train_dense(r, run_dir=run_dir, force=force, reporter=make_reporter(quiet))
    if json_out:
        emit_json(summary.to_dict())
        return
    last = summary.evals[-1] if summary.evals else {}
    shown = f", val top1 {last['top1']:.2f}%" if "top1" in last else ""
    Console().print(f"trained {summary.steps} steps at batch {summary.batch_size}{shown}; wrote {summary.path}")
