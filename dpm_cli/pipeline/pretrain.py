"""Dense training: the model a pruning run starts from, for demos and for benchmarks' baselines.

`dpm train -r r.yaml` runs `train_dense` and writes RUN/dense.pt (a state_dict for model.factory);
`dpm prune` without a checkpoint and with pretrain.enabled runs the same training first. Either way
the evaluations (once per epoch) go to RUN/metrics.jsonl with "phase": "pretrain".
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..data import make_loaders
from ..errors import ConfigError
from ..recipe import Recipe, dump_recipe
from ..training import Objective
from ..training.loop import LoopOptions, Trainer, TrainerHooks
from ..training.progress import Reporter, SilentReporter
from ..training.rundir import RunDir

DENSE_FILE = "dense.pt"


def pretrain_dense(model: nn.Module, ctx: Any, reporter: Reporter,
                   run_dir: RunDir | None) -> tuple[int, list[dict[str, Any]]]:
    """Train `model` densely as recipe.pretrain says (SGD, one-cycle); return its steps and evaluations."""
    pre, d = ctx.recipe.pretrain, ctx.recipe.data
    train_loader = ctx.train_loader
    if pre.batch_size is not None and pre.batch_size != d.batch_size:
        train_loader, _ = make_loaders(ctx.data, batch_size=pre.batch_size, eval_batch_size=d.eval_batch_size,
                                       seed=ctx.recipe.training.seed)
    model.to(ctx.device)
    opt = torch.optim.SGD(model.parameters(), lr=pre.lr, momentum=0.9, weight_decay=5e-4)
    steps = pre.epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=pre.lr, total_steps=steps)
    objective = Objective("cross_entropy", labeled=ctx.data.labeled)
    evals: list[dict[str, Any]] = []

    def record(step: int, metrics: dict[str, float]) -> None:
        evals.append({"phase": "pretrain", "step": step, "kind": "eval", **metrics})
        if run_dir is not None:
            run_dir.append(run_dir.metrics, evals[-1])
    Trainer(model, train_loader, ctx.val_loader, objective, opt, sched,
            LoopOptions(total_steps=steps, log_every=max(1, steps // 20), checkpoint_every=10**9,
                        description="dense pre-training"),
            device=ctx.device, reporter=reporter, hooks=TrainerHooks(on_eval=record)).run()
    return steps, evals


@dataclass
class TrainSummary:
    path: str  # RUN/dense.pt, a state_dict for model.factory
    steps: int
    batch_size: int
    evals: list[dict[str, Any]]
    run_dir: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_dense(recipe: Recipe, *, run_dir: str | Path | None = None, force: bool = False,
                reporter: Reporter | None = None) -> TrainSummary:
    """Train model.factory's model densely (pretrain.*) and save it as RUN/dense.pt; nothing is pruned."""
    from .context import load_context

    reporter = reporter or SilentReporter()
    if recipe.model.factory is None:
        raise ConfigError("dpm train builds the model from model.factory; set it, e.g. 'dpm_cli.models:resnet20'")
    run = RunDir(run_dir or recipe.output.dir)
    run.check(resume=False, force=force)
    # Trained from scratch: a model.checkpoint in the recipe is for pruning, not for this.
    fresh = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, checkpoint=None),
                                pretrain=dataclasses.replace(recipe.pretrain, enabled=True))
    evals: list[dict[str, Any]] = []
    steps = [0]

    def build(ctx: Any) -> nn.Module:
        from ..trust import build_from_factory

        model = build_from_factory(ctx.recipe.model.factory, dict(ctx.recipe.model.kwargs))
        run.prepare(resume=False, force=force, recipe_text=dump_recipe(recipe))  # inputs loaded: now write
        steps[0], done = pretrain_dense(model, ctx, reporter, run)
        evals.extend(done)
        return model
    try:
        ctx = load_context(fresh, None, dense_model=build)
        path = run.path / DENSE_FILE
        run.save_state_file(path, ctx.model.cpu().state_dict())
        batch = recipe.pretrain.batch_size or recipe.data.batch_size
        summary = TrainSummary(str(path), steps[0], batch, evals, str(run.path))
        run.write_text(run.path / "summary.json", _json(summary.to_dict()))
        return summary
    finally:
        run.release()  # the run directory's lock


def _json(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2, default=float) + "\n"
