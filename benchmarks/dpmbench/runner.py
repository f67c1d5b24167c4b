"""One pruning run through the product: `dpm_cli.pipeline.prune` with a recipe and overrides.

The recipe is built as text and parsed with `parse_recipe(text, overrides=...)`, exactly as
`dpm prune model.pt -r recipe.yaml key=value ...` would; the run's mode is nothing but overrides.
Held-out numbers are measured on the compact model the pipeline wrote (so they are the product's
output, and the loss is plain cross-entropy even when the run distils).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from dpm_cli.pipeline.prune import prune
from dpm_cli.recipe import parse_recipe
from dpm_cli.training.loop import TrainerHooks

from .data import EVAL_BATCH, evaluate, loaders
from .modes import MODES
from .protocol import Protocol
from .setups import SETUPS, Setup


@dataclass(frozen=True)
class Job:
    setup: str
    budget: float  # pruning.budget.keep, fraction of the dense model's MACs
    mode: str
    seed: int  # training.seed: the batch order, shared by every mode of the same seed index
    protocol: Protocol
    variant: str = "main"  # "main" for the comparison grid, otherwise the ablation's name
    keep_model: str | None = None  # copy the compact model here (for the latency measurement)
    start: dict[str, str] = field(default_factory=dict)  # {"dense": path, "sparse": path}

    def label(self) -> str:
        return f"{self.setup}/{self.variant}/keep{self.budget}/{self.mode}/seed{self.seed}"


def base_recipe(setup: Setup, p: Protocol, budget: float, seed: int, run_dir: Path) -> str:
    """Everything the modes share, as a recipe file would say it."""
    recipe = {
        "version": 1,
        "model": {"factory": setup.factory, "kwargs": dict(setup.kwargs), "input_shape": list(setup.input_shape)},
        "data": {"source": setup.source, "batch_size": p.batch_size or setup.batch_size, "eval_batch_size": EVAL_BATCH},
        "objective": {"kind": "cross_entropy", "distill_weight": p.distill_weight},
        "pruning": {"budget": {"kind": "macs", "keep": budget}, "criterion": p.criterion,
                    "decay_shape": p.decay_shape,
                    "recalibrate_bn": {"enabled": p.recalibrate_bn, "batches": p.recalibrate_batches,
                                       "at_zero": p.bn_at_zero}},
        "training": {"optimizer": {"name": "sgd", "lr": p.lr, "momentum": 0.9, "weight_decay": 5.0e-4},
                     "schedule": {"name": "cosine", "decay_lr_scale": p.decay_lr_scale},
                     "eval_every": p.eval_every, "log_every": 10**6,
                     "checkpoint_every": 10**6, "seed": seed},
        "output": {"dir": str(run_dir), "name": "model", "formats": ["module"]},
    }
    return yaml.safe_dump(recipe, sort_keys=False)


def run(job: Job, workdir: Path) -> dict[str, Any]:
    setup, p, mode = SETUPS[job.setup], job.protocol, MODES[job.mode]
    run_dir = workdir / job.label().replace("/", "_")
    start_model = job.start["sparse" if mode.sparse else "dense"]
    offset = p.sparse_steps if mode.sparse else 0
    steps = p.steps - (offset if p.sparse_counted else 0)
    overrides = mode.overrides(p, steps)
    recipe = parse_recipe(base_recipe(setup, p, job.budget, job.seed, run_dir), f"<{job.label()}>", overrides)
    evals: list[dict[str, float]] = []
    hooks = TrainerHooks(on_eval=lambda step, m: evals.append({"step": step, "top1": m.get("top1"), "loss": m["loss"]}))
    began = time.perf_counter()
    summary = prune(recipe, model_path=start_model, run_dir=run_dir, force=True, hooks=hooks)
    seconds = time.perf_counter() - began
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    compact = torch.load(summary.outputs["module"], map_location="cpu", weights_only=False)
    held_out = evaluate(compact, loaders(setup, job.seed)[1])
    if job.keep_model:
        Path(job.keep_model).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(summary.outputs["module"], job.keep_model)
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "setup": job.setup, "variant": job.variant, "budget": job.budget, "mode": job.mode, "seed": job.seed,
        "protocol": p.to_dict(), "overrides": overrides,
        "top1": held_out["top1"], "loss": held_out["loss"], "pipeline_top1": summary.after,
        "dense_top1": summary.before,
        "macs_kept": summary.macs_after / summary.macs_before,
        "params_kept": summary.params_after / summary.params_before,
        "equivalence_error": summary.equivalence_error,
        "releases": summary.releases, "suppressed": summary.suppressed,
        "per_round": per_round(events),
        # With the dense cadence every mode is evaluated on the same steps up to p.decay_window_end,
        # and the pipeline's own figure is the one to quote (with the steps it covered).
        "anytime_top1": summary.min_decay_top1 if p.eval_every_decay else anytime(evals, events),
        "anytime_every": p.eval_every_decay or p.eval_every,
        "anytime_steps": summary.min_decay_steps if p.eval_every_decay else None,
        "min_top1_after_cut": lowest_after_selection(evals, events),
        "pipeline_min_decay_top1": summary.min_decay_top1,
        # Steps counted from the start of the run, the sparse pre-phase included.
        "evals": [{**e, "step": e["step"] + offset} for e in evals],
        "seconds": round(seconds, 2),
    }


def per_round(events: list[dict[str, Any]]) -> list[dict[str, int]]:
    """Targets selected, releases, suppressed releases and replacements in each round."""
    rounds: dict[int, dict[str, int]] = {}
    for e in events:
        r = rounds.setdefault(int(e["round"]), {"selected": 0, "release": 0, "suppressed": 0, "replacement": 0})
        if e["kind"] in r:
            r[e["kind"]] += 1
    return [rounds[k] for k in sorted(rounds)]


def anytime(evals: list[dict[str, float]], events: list[dict[str, Any]]) -> float | None:
    """Lowest held-out top-1 from the first selection to the first eval at or after the step the
    last channel reached zero.

    Every eval re-estimates BatchNorm statistics first (the trainer does it when training.eval_every
    is set). Unlike the pipeline's min_decay_top1, the eval that follows the last cut counts: for
    single-step pruning (and the last round of iterative pruning) it is the only eval that sees the cut.
    """
    chosen = [e["step"] for e in events if e["kind"] == "selected"]
    zeroed = [e["step"] for e in events if e["kind"] == "pruned"]
    if not chosen or not zeroed:
        return None
    after = [e["step"] for e in evals if e["step"] >= max(zeroed)]
    end = min(after) if after else max(zeroed)
    window = [e["top1"] for e in evals if min(chosen) <= e["step"] <= end and e["top1"] is not None]
    return min(window) if window else None


def lowest_after_selection(evals: list[dict[str, float]], events: list[dict[str, Any]]) -> float | None:
    """Lowest held-out top-1 from the first selection to the end of the run: catches a dip that comes
    after the decay phase (a high fine-tuning LR can cause one), which `anytime` would not see."""
    chosen = [e["step"] for e in events if e["kind"] == "selected"]
    seen = [e["top1"] for e in evals if chosen and e["step"] >= min(chosen) and e["top1"] is not None]
    return min(seen) if seen else None
