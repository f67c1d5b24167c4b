"""`plan`: what pruning would remove, without training (what `dpm plan` shows).

The selection runs on the checkpoint's weights with the final budget in one go; the chosen structures
are zeroed on a copy of the model and removed, so widths, MACs and parameters are measured, not guessed.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..batch import call_model, logits_of, move, output_fields
from ..data.labels import class_loss, scorable
from ..engine import DecayPruner
from ..engine.activation import CALIBRATED, fallback_note
from ..engine.selection import needs_gradients, select
from ..recipe import Recipe
from ..training.calibration import calibration_batches, calibration_count, collect_activations
from ..training.objective import split_batch
from .context import decay_overrun, dpm_config, folder_groups_problem, load_context, total_steps
from .data_size import data_size_notes


@dataclass
class PlanReport:
    groups: int
    skipped: dict[str, str]
    classifier: str | None
    structures: int  # channels selected for removal
    macs_before: float
    macs_after: float
    params_before: float
    params_after: float
    budget_kind: str
    budget: float
    total_steps: int
    decay_phase_end: int
    decay_steps: int  # N, resolved from pruning.decay_steps or decay_fraction
    widths: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(recipe: Recipe, model_path: str | Path | None = None, *, trust: bool = False,
         log: Callable[[str], None] = lambda message: None) -> PlanReport:
    """What `dpm prune` would remove, without training. `log` hears of the slow parts before they start."""
    ctx = load_context(recipe, model_path, trust=trust, log=log)
    model = copy.deepcopy(ctx.model).cpu()
    example = move(ctx.example_inputs, "cpu")
    steps = total_steps(recipe, ctx.train_loader)
    cfg = dpm_config(recipe, steps, ctx.protect)
    pruner = DecayPruner(model, example, cfg)
    notes = list(ctx.notes) + data_size_notes(recipe, ctx.data, steps)  # what dpm prune will say of the data
    refusal = decay_overrun(recipe, pruner.decay_phase_end, steps) or folder_groups_problem(recipe, model, pruner.groups)
    if refusal:  # a dry run should say what `dpm prune` will refuse
        notes.append(f"dpm prune will refuse this recipe: {refusal}")
    if needs_gradients(cfg.criterion):
        _gradients_on_one_batch(model, ctx.train_loader)
    if cfg.criterion in CALIBRATED:  # the calibration batches `dpm prune` collects on, at the checkpoint's weights
        batches = calibration_count(ctx.train_loader, recipe.pruning.recalibrate_bn.batches)
        log(f"{cfg.criterion} criterion: reading {batches} calibration batches")
        collect_activations(pruner, model, calibration_batches(ctx.train_loader, recipe.pruning.recalibrate_bn.batches),
                            "cpu")
    keys = select(pruner.groups, pruner.cost, cfg, cfg.budget, set(), set(), pruner.scores())
    if pruner.activation_fallback:
        notes.append(fallback_note(cfg.criterion, pruner.activation_fallback))
    pruner.prune_now(keys)  # zero the chosen structures, as the decay would
    result = pruner.compact()
    return PlanReport(len(pruner.groups), pruner.skipped, pruner.classifier, len(keys), result.macs_before,
                      result.macs_after, result.params_before, result.params_after, cfg.budget_kind, cfg.budget,
                      steps, pruner.decay_phase_end, cfg.decay_steps, [asdict(w) for w in result.widths], notes)


def _gradients_on_one_batch(model: torch.nn.Module, loader: Any) -> None:
    inputs, labels = split_batch(next(iter(loader)))
    model.zero_grad()
    out = call_model(model, inputs)
    logits = logits_of(out)
    if labels is not None and logits is not None and scorable(logits, labels):
        loss = class_loss(logits, labels)
    else:  # no labels: any scalar of the output gives the criterion gradients to rank by
        loss = sum(t.float().pow(2).mean() for t in output_fields(out).values())
    loss.backward()
