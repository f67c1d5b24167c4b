"""`dpm prune`, `dpm plan` and `dpm validate`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .app import app
from ..errors import ConfigError, DpmError, InputError
from ..escaping import printable
from .common import EXIT_CODES, emit_json, human, read_recipe, split_args

RECIPE = typer.Option(None, "--recipe", "-r", help="YAML recipe (see recipes/).", exists=False)
ARGS = typer.Argument(None, metavar="[MODEL] [KEY.PATH=VALUE]...",
                      help="Checkpoint or Hugging Face model folder to prune (else the recipe's model.checkpoint or "
                           "model.hf.path), then recipe overrides.")


@app.command(epilog=f"Examples:\n\n  dpm prune model.pt --recipe r.yaml\n\n"
                    f"  dpm prune --recipe recipes/mnist-demo.yaml pruning.budget.keep=0.25 --json\n\n"
                    f"  dpm prune model.pt -r r.yaml --run-dir runs/a --resume\n\n"
                    f"  dpm prune model.pt -r r.yaml --reuse --force   # CI: train only when an input changed\n\n"
                    f"  dpm prune my-encoder/ -r recipes/minilm-distill.yaml   # a Hugging Face folder: "
                    f"writes BASE-hf/ too\n\n"
                    f"  torchrun --nproc_per_node=2 -m dpm_cli prune model.pt -r r.yaml\n\n{EXIT_CODES}")
def prune(
    args: Optional[List[str]] = ARGS,
    recipe: Optional[Path] = RECIPE,
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run directory (default: output.dir)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Base path of the outputs: BASE.pt, BASE.dpm.pt, BASE.pt2 "
                                          "(and BASE-hf/ with output.hf: true)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in the run directory."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs and an existing run."),
    reuse: bool = typer.Option(False, "--reuse", help="Skip training when the run directory holds outputs built "
                               "from the same checkpoint, recipe, data and versions (seconds, for CI); a "
                               "different earlier result is refused, or rebuilt with --force."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint",
                                          help="Allow a pickled module, or any factory an artifact names "
                                               "(both run code from the file)."),
    json_out: bool = typer.Option(False, "--json", help="Print a machine-readable summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Fine-tune with DPM decay and self-rectification, remove the zeroed channels, save the compact model."""
    from ..pipeline import prune as prune_job  # heavy imports only for the command that runs
    from ..training.distributed import init_from_env
    from ..training.progress import make_reporter

    model, overrides = split_args(args)
    r = read_recipe(recipe, overrides, model)
    dist = init_from_env(r.training.device)  # a no-op unless started by torchrun
    try:
        summary = prune_job(r, model_path=model, run_dir=run_dir, output=output, resume=resume, force=force,
                            trust=trust_checkpoint, reporter=make_reporter(quiet or not dist.is_main), dist=dist,
                            recipe_path=recipe, reuse=reuse)
    finally:
        dist.shutdown()
    if not dist.is_main:
        return
    if json_out:
        emit_json(summary.to_dict())
    else:
        _show_summary(summary)
    _refuse_missing_folder(r, summary)


def _refuse_missing_folder(r, summary) -> None:
    """Exit 1 when the recipe asked for a Hugging Face folder and it could not be written (its config
    could not describe the compact model): the other outputs and the summary are kept, but a release
    step must not go on as if the folder were there."""
    if r.output.hf and "hf" not in summary.outputs:
        why = next((n for n in summary.notes if n.startswith("Hugging Face folder not written")),
                   "Hugging Face folder not written")
        raise DpmError(f"{why} (output.hf: true asked for it)")


def _show_summary(s) -> None:
    console = Console()
    table = Table(title="dpm prune: before / after")
    for col in ("", "before", "after", "ratio"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("parameters", human(s.params_before), human(s.params_after), f"{s.params_after / s.params_before:.3f}")
    table.add_row("MACs", human(s.macs_before), human(s.macs_after), f"{s.macs_after / s.macs_before:.3f}")
    unit = "%" if s.metric == "top1" else ""
    # top-1 in % to 2 decimals; an embedding cosine (0.9xxx) or a distillation loss (0.00xx) to 4
    digits = 2 if s.metric == "top1" else 4
    table.add_row(f"val {s.metric}", f"{s.before:.{digits}f}{unit}", f"{s.after:.{digits}f}{unit}",
                  f"{s.after - s.before:+.{digits}f}")
    if s.ce_before is not None and s.ce_after is not None:
        table.add_row("val cross-entropy", f"{s.ce_before:.4f}", f"{s.ce_after:.4f}", f"{s.ce_after - s.ce_before:+.4f}")
    if s.perplexity_before is not None and s.perplexity_after is not None:  # a language model, on its next tokens
        table.add_row("val perplexity", f"{s.perplexity_before:.2f}", f"{s.perplexity_after:.2f}",
                      f"{s.perplexity_after / s.perplexity_before:.3f}")
    console.print(table)
    console.print(f"equivalence error (compact vs decayed, relative): {s.equivalence_error:.2e}")
    console.print(f"steps {s.steps}, releases {s.releases}, suppressed releases {s.suppressed}"
                  + (f", lowest val top1 during decay {s.min_decay_top1:.2f}%{_cadence(s)}"
                     if s.min_decay_top1 is not None else ""))
    for fmt, path in s.outputs.items():
        console.print(f"wrote {fmt}: {path}")
    for note in s.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def _cadence(s) -> str:
    """' (4 evals, steps 18-40, every 2 steps)': the figure depends on when evaluation happened."""
    steps = s.min_decay_steps
    if not steps:
        return ""
    every = f"every {s.min_decay_eval_every} steps" if s.min_decay_eval_every else "once per epoch"
    return f" ({len(steps)} evals, steps {steps[0]}-{steps[-1]}, {every})"


@app.command(epilog=f"Examples:\n\n  dpm plan model.pt --recipe r.yaml\n\n"
                    f"  dpm plan my-encoder/ -r recipes/minilm-heads.yaml --json\n\n{EXIT_CODES}")
def plan(
    args: Optional[List[str]] = ARGS,
    recipe: Optional[Path] = RECIPE,
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint",
                                          help="Allow a pickled module, or any factory an artifact names."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Dry run: groups found, widths before and after, projected MACs and parameters. No training."""
    from ..pipeline import plan as plan_job
    from ..recipe.schema import describe_decay

    model, overrides = split_args(args)
    r = read_recipe(recipe, overrides, model)
    status = Console(stderr=True)  # stderr: --json on stdout stays machine-readable
    report = plan_job(r, model, trust=trust_checkpoint, log=lambda message: status.print(message, highlight=False))
    if json_out:
        emit_json(report.to_dict())
        return
    console = Console()
    table = Table(title=f"dpm plan: {report.groups} prunable groups, {report.structures} channels to remove")
    for col in ("layer", "type", "out before", "out after"):
        table.add_column(col)
    for w in report.widths:
        if w["out_before"] != w["out_after"] or w["in_before"] != w["in_after"]:
            table.add_row(w["name"], w["kind"], str(w["out_before"]), str(w["out_after"]))
    console.print(table)
    console.print(f"MACs {human(report.macs_before)} -> {human(report.macs_after)} "
                  f"({report.macs_after / report.macs_before:.3f} kept), params {human(report.params_before)} -> "
                  f"{human(report.params_after)} ({report.params_after / report.params_before:.3f} kept); "
                  f"budget {report.budget_kind} keep={report.budget:g}")
    console.print(f"training: {report.total_steps} steps; decay: {describe_decay(r.pruning, report.total_steps)}, "
                  f"decay phase ends at step {report.decay_phase_end}")
    for name, why in report.skipped.items():
        console.print(f"[yellow]skipped group[/yellow] {name}: {why}")
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


@app.command(epilog=f"Examples:\n\n  dpm validate recipes/mnist-demo.yaml training.epochs=1\n\n"
                    f"  dpm validate -r r.yaml my-encoder/   # a recipe that names no model, for this folder\n\n{EXIT_CODES}")
def validate(
    args: Optional[List[str]] = typer.Argument(None, metavar="[RECIPE] [MODEL] [KEY.PATH=VALUE]...",
                                               help="The recipe (or --recipe), the MODEL dpm prune would get "
                                                    "(a Hugging Face folder serves a recipe that names no "
                                                    "model), then overrides."),
    recipe: Optional[Path] = RECIPE,
    show: bool = typer.Option(False, "--show", help="Print the resolved recipe with every default."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON: the recipe, MODEL (which prune takes over "
                                  "the recipe's model), the decay steps and the resolved recipe with every default (errors stay one line on stderr, exit 2)."),
) -> None:
    """Check a recipe without running it: keys, types, ranges, files."""
    from ..recipe import dump_recipe
    from ..recipe.schema import describe_decay

    args = list(args or [])
    if recipe is None:  # `dpm validate r.yaml`, as before, or `dpm validate -r r.yaml` as prune and plan take it
        first = next((i for i, a in enumerate(args) if "=" not in a), None)
        recipe = Path(args.pop(first)) if first is not None else None
    model, overrides = split_args(args)
    if model is not None and not Path(model).exists():
        raise InputError(f"MODEL {printable(model)}: no such file or folder")
    r = read_recipe(recipe, overrides, model)
    from ..pipeline.context import schedule_problem

    if problem := schedule_problem(r):  # what dpm prune would refuse once it had loaded everything
        raise ConfigError(problem)
    # N is a fraction by default; with training.epochs the steps depend on the data, not loaded here.
    decay = f"decay: {describe_decay(r.pruning, r.training.steps)}"
    if json_out:
        import yaml

        emit_json({"recipe": str(recipe), "model": model, "valid": True, "decay": decay.partition(": ")[2],
                   "resolved": yaml.safe_load(dump_recipe(r))})
    elif show:
        typer.echo(dump_recipe(r) + f"# {decay}")
    else:
        typer.echo(f"{recipe}: ok\n{decay}")
