"""`dpm report` and `dpm check`: thin wrappers that parse options, call `dpm_cli.report`, render."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..escaping import printable
from ..errors import ConfigError
from ..report import compare, count_model, example_input, measure_latency
from ..report.html import Page
from ..report import inputs as parse
from ..provenance import check_built_from
from ..report.gates import GateFailure, Limits, check_data, check_model
from .app import app
from .common import hf_folder

REPORT_HELP = (
    "Print parameters, MACs and FLOPs of a model, per layer; compare two models; time them.\n\n"
    "MACs are multiply-accumulates of conv, linear, matmul and attention in one forward pass at "
    "--input-shape; FLOPs = 2 x MACs. Ops the counter has no rule for are listed, not counted as zero. "
    "With --compare, ratios are MODEL / OTHER (2.00x: OTHER has half the MACs, or runs twice as fast).\n\n"
    "Examples:\n\n"
    "  dpm report m.pt --factory dpm_cli.models:resnet56 --input-shape 1,3,32,32\n"
    "  dpm report orig.pt --compare compact.pt --input-shape 1,3,32,32 --latency\n"
    "  dpm report orig.pt --compare compact.pt --recipe r.yaml --markdown > pr.md\n"
    "  dpm report m.pt --input-shape 1,3,224,224 --json > report.json\n"
    "  dpm report --run runs/resnet56 --plot plots/\n"
    "  dpm report orig.pt --compare runs/r/model.dpm.pt -r r.yaml --run runs/r --gates check.json --html r.html\n"
    "  dpm report my-encoder/ --compare runs/r/model-hf --input-shape 1,128   # Hugging Face folders, 128 tokens\n\n"
    "Exit codes: 0 success, 1 runtime failure, 2 bad input (options, shape, unreadable model)."
)

CHECK_HELP = (
    "Check a model against size, speed, accuracy and provenance gates, for CI: exit 0 if every gate "
    "passes, 1 if any fails.\n\n"
    "Reductions and speed-ups are BASELINE / MODEL: --min-macs-reduction 2.0 passes when MODEL has at "
    "most half the baseline's MACs; --min-speedup 1.5 when MODEL runs at least 1.5x as fast (median of "
    "paired, interleaved CPU timings at --batch-size). Counts accept K, M, G suffixes (125M, 1.2G). "
    "Accuracy gates evaluate MODEL and the baseline in the same run on the recipe's validation data "
    "(or --data). KEY.PATH=VALUE overrides change the recipe, as in dpm prune.\n\n"
    "Examples:\n\n"
    "  dpm check c.pt --input-shape 1,3,32,32 --max-macs 60M --max-params 0.5M\n"
    "  dpm check c.pt --recipe r.yaml --baseline orig.pt --min-macs-reduction 2\n"
    "  dpm check c.dpm.pt -r r.yaml --baseline orig.pt --max-accuracy-drop 1 --min-accuracy 90\n"
    "  dpm check c.dpm.pt -r r.yaml --built-from orig.pt --json > check.json\n"
    "  dpm check runs/r/model-hf -r r.yaml --baseline my-encoder/ --min-cosine 0.95 --built-from my-encoder/\n"
    "  dpm check runs/r/model-hf --baseline my-classifier/ --data test.jsonl --max-accuracy-drop 1\n"
    "  dpm check runs/r/model-hf --baseline my-encoder/ --data big.jsonl --max-samples 2000 --min-cosine 0.95\n\n"
    "Exit codes: 0 every gate passed, 1 a gate failed (or a runtime failure), 2 bad input (no gates "
    "given, unreadable model, bad shape or count, a gate without the data or labels it needs)."
)

_SHAPE = typer.Option(None, "--input-shape", help="Input shape, batch first, e.g. 1,3,32,32; for a token model "
                      "batch,tokens, e.g. 1,512 (default: the recipe's, or the one a dpm artifact recorded).")
_RECIPE = typer.Option(None, "--recipe", "-r", help="Recipe YAML: the model (model.hf, or model.factory and "
                      "model.kwargs), its input (model.input_shape, model.seq_len) and its data.")
_FACTORY = typer.Option(None, "--factory", help="Model factory 'package.module:callable', for state_dict checkpoints.")
_TRUST = typer.Option(False, "--trust-checkpoint", help="Allow pickled modules and any factory an artifact names "
                      "(both run code from the file); see README Security.")
_THREADS = typer.Option(None, "--threads", help="CPU threads for timing (default: torch's setting); pin it in CI.")


@app.command("report", help=REPORT_HELP)
def report(
    model: Optional[str] = typer.Argument(
        None, help="Checkpoint to measure (state_dict, dpm artifact, module) or a Hugging Face model folder."),
    input_shape: Optional[str] = _SHAPE,
    recipe: Optional[Path] = _RECIPE,
    factory: Optional[str] = _FACTORY,
    trust_checkpoint: bool = _TRUST,
    other: Optional[str] = typer.Option(None, "--compare", help="A second checkpoint to put side by side."),
    latency: bool = typer.Option(False, "--latency", help="Also time CPU inference (interleaved when comparing)."),
    batch_sizes: str = typer.Option("1", "--batch-sizes", help="Batch sizes to time, e.g. 1,32."),
    repeats: int = typer.Option(20, "--repeats", help="Timed runs per model and batch size."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed warm-up runs first."),
    threads: Optional[int] = _THREADS,
    layers: bool = typer.Option(True, "--layers/--no-layers", help="Show the per-layer table."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (schema_version 1) instead of tables."),
    markdown: bool = typer.Option(False, "--markdown", help="Print Markdown for a pull-request comment."),
    plot: Optional[Path] = typer.Option(
        None, "--plot", help="Write PNG plots (widths; with --run also decay history, accuracy and loss) into DIR."),
    run: Optional[Path] = typer.Option(None, "--run", help="A training run folder (dpm prune's run dir) to report on."),
    html: Optional[Path] = typer.Option(
        None, "--html", help="Also write one self-contained HTML page (tables, gates, plots) to FILE."),
    gates: Optional[Path] = typer.Option(
        None, "--gates", help="A `dpm check --json` result to show in the --html and --markdown report."),
) -> None:
    if as_json and markdown:
        raise ConfigError("--json and --markdown both print the report: choose one")
    if run is not None and plot is None and html is None and not markdown:
        raise ConfigError("--run reports on a training run: add --plot DIR, --html FILE or --markdown")
    if gates is not None and html is None and not markdown:
        raise ConfigError("--gates shows a check result in the report: add --html FILE or --markdown")
    # read and check the small inputs before loading any model
    check_doc = parse.read_check_json(gates) if gates is not None else None
    if html is not None:
        parse.check_html_path(html, [p for p in (model, other, recipe, gates) if p], run)
    if model is None and recipe is None and run is not None:
        _run_only(run, plot, html, markdown, check_doc)
        return
    setup = parse.resolve_setup(input_shape, recipe, factory, model_folder=hf_folder(parse.resolve_package(model)))
    sizes = parse.parse_batch_sizes(batch_sizes) if latency else ()
    paths = [parse.model_path(model, setup)] + ([other] if other else [])
    labels = parse.distinct_labels(*paths)
    loaded = [parse.load_for_measuring(p, setup, trust_checkpoint) for p in paths]
    shape = parse.require_shape(setup, *(s for _, s in loaded))
    models = {label: m for label, (m, _) in zip(labels, loaded, strict=True)}
    x = example_input(shape)
    counts = [count_model(m, x, label=label) for label, m in models.items()]
    timing = None
    if latency:
        timing = measure_latency(models, shape, batch_sizes=sizes, repeats=repeats, warmup=warmup, threads=threads)
    comparison = compare(counts[0], counts[1], timing) if other else None
    _print_report(counts, comparison, timing, layers, as_json, markdown)
    if markdown and (run is not None or check_doc is not None):
        typer.echo(_extra_markdown(run, check_doc))
    if plot is not None:
        _note(f"wrote {_plots().plot_widths(comparison or counts[0], plot)}")
        if run is not None:
            for path in _plots().plot_run(run, plot, widths=False):
                _note(f"wrote {path}")
    if html is not None:
        _write_page(html, Page(_title(run), counts, comparison, timing, run, check_doc))


def _run_only(run: Path, plot: Optional[Path], html: Optional[Path], markdown: bool, check_doc) -> None:
    """`dpm report --run DIR ...` without models: everything comes from the run's logs."""
    if markdown:
        typer.echo(_extra_markdown(run, check_doc))
    if plot is not None:
        for path in _plots().plot_run(run, plot):
            _note(f"wrote {path}")
    if html is not None:
        _write_page(html, Page(_title(run), run_dir=run, check=check_doc))


def _title(run: Optional[Path]) -> str:
    return f"dpm report: {run.name}" if run is not None else "dpm report"


def _extra_markdown(run: Optional[Path], check_doc) -> str:
    from ..report.markdown import gates_doc_markdown, run_markdown

    parts = [run_markdown(run)] if run is not None else []
    return "\n".join(parts + ([gates_doc_markdown(check_doc)] if check_doc is not None else []))


def _write_page(path: Path, page) -> None:
    from ..report.html import report_html, write_html

    text = report_html(page)
    if "Plots left out" in text:
        _note("note: the HTML report has no plots (matplotlib is not installed: pip install matplotlib)")
    _note(f"wrote {write_html(path, text)}")


@app.command("check", help=CHECK_HELP)
def check(
    model: str = typer.Argument(..., help="Checkpoint or Hugging Face model folder to check."),
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY.PATH=VALUE]...",
                                                    help="Recipe overrides, as given to dpm prune."),
    input_shape: Optional[str] = _SHAPE,
    recipe: Optional[Path] = _RECIPE,
    factory: Optional[str] = _FACTORY,
    trust_checkpoint: bool = _TRUST,
    max_macs: Optional[str] = typer.Option(None, "--max-macs", help="Most MACs allowed, e.g. 60M."),
    max_params: Optional[str] = typer.Option(None, "--max-params", help="Most parameters allowed, e.g. 0.5M."),
    max_latency_ms: Optional[float] = typer.Option(
        None, "--max-latency-ms", help="Slowest median CPU latency allowed, in ms."),
    batch_size: int = typer.Option(1, "--batch-size", help="Batch size of the latency gates."),
    baseline: Optional[str] = typer.Option(
        None, "--baseline", help="The original checkpoint, for the reduction and speed-up gates."),
    min_speedup: Optional[float] = typer.Option(
        None, "--min-speedup", help="Least speed-up over the baseline, e.g. 1.5 (baseline / model latency)."),
    min_macs_reduction: Optional[float] = typer.Option(
        None, "--min-macs-reduction", help="Least baseline/model MACs ratio, e.g. 2.0 = half the MACs."),
    min_params_reduction: Optional[float] = typer.Option(
        None, "--min-params-reduction", help="Least baseline/model parameters ratio."),
    max_accuracy_drop: Optional[float] = typer.Option(
        None, "--max-accuracy-drop", help="Most top-1 points lost against the baseline, e.g. 1.0."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="Least top-1 accuracy in %, e.g. 90."),
    max_loss_increase: Optional[float] = typer.Option(
        None, "--max-loss-increase", help="Most cross-entropy increase over the baseline, e.g. 0.05."),
    min_cosine: Optional[float] = typer.Option(
        None, "--min-cosine", help="Least mean cosine of MODEL's outputs to the baseline's (label-free models; a "
        "sentence encoder's embedding as its sentence-transformers pooling makes it)."),
    data: Optional[str] = typer.Option(
        None, "--data", help="Evaluate on this instead of the recipe's validation data: a .pt/.npz file, "
        "a text file for a Hugging Face model (every example is evaluated, or --max-samples), a source (mnist, digits, pydoc, "
        "local-docs, wordnet, english) or package.module:callable."),
    seq_len: Optional[int] = typer.Option(
        None, "--seq-len", min=1, help="Tokens per text of text data (default: the recipe's model.seq_len, else "
        "the sentence-transformers folder's max_seq_length, else 128)."),
    max_samples: Optional[int] = typer.Option(
        None, "--max-samples", min=1, help="Evaluate a fixed, seeded, class-balanced part of N samples of the data "
        "(the same N on every run), e.g. to gate quickly on a large file."),
    device: str = typer.Option("cpu", "--device", help="Device to evaluate on: cpu, cuda or auto."),
    built_from: Optional[str] = typer.Option(
        None, "--built-from", help="Pass only if MODEL (a *.dpm.pt, or the Hugging Face folder dpm prune wrote) "
        "was built by dpm prune from this checkpoint or folder with --recipe (and its data)."),
    repeats: int = typer.Option(20, "--repeats", help="Timed runs for the latency gates."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed warm-up runs first."),
    threads: Optional[int] = _THREADS,
    as_json: bool = typer.Option(False, "--json", help="Print JSON (schema_version 1) instead of a table."),
    markdown: bool = typer.Option(False, "--markdown", help="Print Markdown (e.g. for $GITHUB_STEP_SUMMARY)."),
    save_json: Optional[Path] = typer.Option(
        None, "--save-json", help="Also write the JSON result to FILE (for `dpm report --gates FILE --html`)."),
) -> None:
    if as_json and markdown:
        raise ConfigError("--json and --markdown both print the result: choose one")
    if save_json is not None and (save_json.is_dir() or not save_json.parent.is_dir()):
        raise ConfigError(f"--save-json {printable(save_json)}: name a file in an existing folder")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    limits = Limits(
        max_macs=parse.parse_count(max_macs, "--max-macs") if max_macs is not None else None,
        max_params=parse.parse_count(max_params, "--max-params") if max_params is not None else None,
        max_latency_ms=max_latency_ms, min_speedup=min_speedup,
        min_macs_reduction=min_macs_reduction, min_params_reduction=min_params_reduction,
        max_accuracy_drop=max_accuracy_drop, min_accuracy=min_accuracy, max_loss_increase=max_loss_increase,
        min_cosine=min_cosine,
    )
    # before loading any model: bad gates, missing data or labels fail fast with exit 2
    limits.validate(baseline is not None, other_gates=built_from is not None)
    _refuse_data_options(limits, data=data, seq_len=seq_len, max_samples=max_samples)
    where = _device(device)
    overrides = _overrides(overrides)
    # a folder on the command line names the model when the recipe does not: the original (baseline) first
    folder = hf_folder(parse.resolve_package(baseline), parse.resolve_package(model))
    setup = parse.resolve_setup(input_shape, recipe, factory, overrides, model_folder=folder)
    parse.check_exists(model, baseline)  # before the data: a missing MODEL is not a tokenizer problem
    eval_data, provenance, eval_batch = _data_and_provenance(limits, model, baseline, recipe, overrides, data,
                                                             built_from, folder, seq_len, max_samples)
    net, net_shape = parse.load_for_measuring(model, setup, trust_checkpoint)
    base, base_shape = parse.load_for_measuring(baseline, setup, trust_checkpoint) if baseline else (None, None)
    shape = parse.require_shape(setup, net_shape, base_shape)
    eval_data = eval_data.for_model(net) if eval_data is not None else None
    result = check_model(net, shape, limits, baseline=base, batch_size=batch_size, repeats=repeats,
                         warmup=warmup, threads=threads, data=eval_data, device=where,
                         eval_batch_size=eval_batch, built_from=provenance,
                         show_progress=not (as_json or markdown) and sys.stderr.isatty(),
                         log_progress=not sys.stderr.isatty())
    _print_check(result, as_json, markdown)
    if save_json is not None:
        from ..checkpoint import write_atomically
        from ..report.schema import check_to_dict, dumps

        text = dumps(check_to_dict(result)) + "\n"
        write_atomically(save_json, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if not result.passed:
        failed = ", ".join(g.name for g in result.failed())
        raise GateFailure(f"check failed: {len(result.failed())} of {len(result.gates)} gates ({failed})")


def _refuse_data_options(limits: Limits, **given: Any) -> None:
    """Options about the evaluation data are bad input when no gate evaluates on data."""
    if limits.needs_data:
        return
    if given["data"] is not None:
        raise ConfigError("--data given but no gate evaluates on it: add --max-accuracy-drop, --min-accuracy, "
                          "--max-loss-increase or --min-cosine, or drop --data")
    for key, what in (("seq_len", "sets the length of text data"), ("max_samples", "sets how many samples are evaluated")):
        if given[key] is not None:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{flag} {what}, but no gate evaluates on data: add --max-accuracy-drop, "
                              f"--min-accuracy, --max-loss-increase or --min-cosine, or drop {flag}")


def _overrides(args: Optional[List[str]]) -> list[str]:
    stray = [a for a in args or [] if "=" not in a]
    if stray:
        raise ConfigError(f"unexpected argument {stray[0]!r}: after MODEL only KEY.PATH=VALUE recipe overrides "
                          "may follow (the baseline goes in --baseline)")
    return list(args or [])


def _data_and_provenance(limits: Limits, model: str, baseline: Optional[str], recipe: Optional[Path],
                         overrides: list[str], data: Optional[str], built_from: Optional[str], model_folder: Any = None,
                         seq_len: Optional[int] = None, max_samples: Optional[int] = None):
    """The evaluation data (and its batch size) and the --built-from finding, before any model loads."""
    full = None
    if recipe is not None and (limits.needs_data or built_from):
        from ..recipe import load_recipe

        full = load_recipe(recipe, overrides, model_folder=model_folder)  # with its data section, files checked
    if built_from is not None and full is None:
        raise ConfigError("--built-from compares with the recipe the model was built with: pass --recipe r.yaml "
                          "(and the same KEY.PATH=VALUE overrides as dpm prune)")
    eval_data = None
    if limits.needs_data:
        from ..report.evaldata import resolve_eval_data

        eval_data = resolve_eval_data(data, full, parse.resolve_package(model), parse.resolve_package(baseline),
                                      seq_len, max_samples)
    check_data(limits, eval_data)
    provenance = check_built_from(model, full, built_from) if built_from is not None else None
    return eval_data, provenance, full.data.eval_batch_size if full else 256


def _device(name: str):
    import torch

    if name not in ("cpu", "cuda", "auto"):
        raise ConfigError(f"--device {name!r}: choose cpu, cuda or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA device is available; use cpu or auto")
    return torch.device(name)


def _print_report(counts, comparison, timing, layers: bool, as_json: bool, markdown: bool) -> None:
    if as_json:
        from ..report.schema import dumps, report_to_dict

        typer.echo(dumps(report_to_dict(counts, comparison, timing)))
    elif markdown:
        from ..report.markdown import report_markdown

        typer.echo(report_markdown(counts, comparison, timing, layers=layers))
    else:
        from ..report.render import print_report

        print_report(_console(), counts, comparison, timing, layers=layers)


def _print_check(result, as_json: bool, markdown: bool) -> None:
    if as_json:
        from ..report.schema import check_to_dict, dumps

        typer.echo(dumps(check_to_dict(result)))
    elif markdown:
        from ..report.markdown import check_markdown

        typer.echo(check_markdown(result))
    else:
        from ..report.render import gate_table

        console = _console()
        console.print(gate_table(result))
        verdict = "[green]all gates passed[/green]" if result.passed else "[red]some gates failed[/red]"
        console.print(verdict)


def _console():
    from rich.console import Console

    # made per call, so output goes to the sys.stdout of the moment (tests capture it); wide enough
    # for layer names when piped into a CI log
    return Console(width=None if sys.stdout.isatty() else 140)


def _plots():
    from ..report import plots

    return plots


def _note(message: str) -> None:
    """Side messages go to stderr, so --json and --markdown output on stdout stays clean."""
    typer.echo(message, err=True)
