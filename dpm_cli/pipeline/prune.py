"""`prune`: checkpoint + recipe in, fine-tuned compact model out (what `dpm prune` runs)."""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .. import provenance as prov
from ..engine import DecayPruner
from ..batch import move
from ..engine.cost import count_macs_params
from ..errors import ConfigError, DpmError, InputError
from ..outputs import OutputPlan, write_outputs
from ..recipe import Recipe, dump_recipe
from ..recipe.schema import describe_decay
from ..training import Objective, build_optimizer, build_scheduler
from ..training.optim import retarget_lr
from ..training.distributed import SINGLE, DistContext
from ..training.evaluate import evaluate
from ..training.loop import LoopOptions, Trainer, TrainerHooks
from ..training.progress import Reporter, SilentReporter
from ..training.rundir import RunDir
from .context import (RunContext, decay_overrun, dpm_config, folder_groups_problem, load_context, resolve_device,
                      check_model_input, schedule_problem, total_steps)
from .data_size import data_size_notes
from .memory import check_memory
from .pretrain import pretrain_dense
from .reuse import output_hashes, record_start, resume_problem, reusable, summary_from, unfinished


@dataclass
class PruneSummary:
    """The before/after record `dpm prune` prints (and emits with --json)."""

    params_before: float
    params_after: float
    macs_before: float
    macs_after: float
    metric: str  # "top1" (%) or "loss"
    before: float
    after: float
    decayed: float  # the decayed model before compaction (same function as `after`)
    equivalence_error: float
    steps: int
    releases: int
    suppressed: int
    min_decay_top1: float | None
    run_dir: str
    ce_before: float | None = None  # held-out cross-entropy of the dense and the compact model (labelled data)
    ce_after: float | None = None
    # a language model scored on its next tokens: exp of ce_before / ce_after, what decoders are judged by
    perplexity_before: float | None = None
    perplexity_after: float | None = None
    ranks: int = 1  # processes that trained (torchrun); their parameters and event logs agreed
    outputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    widths: list[dict[str, Any]] = field(default_factory=list)
    # What min_decay_top1 covered: the steps of its evals and their cadence inside the decay window
    # (training.eval_every_decay; null: the regular eval_every, or once per epoch when that is null too).
    min_decay_steps: list[int] = field(default_factory=list)
    min_decay_eval_every: int | None = None
    # what produced the outputs (dpm_cli.provenance), their sha256, and whether --reuse found them
    provenance: dict[str, Any] | None = None
    output_formats: list[str] = field(default_factory=list)
    output_sha256: dict[str, str] = field(default_factory=dict)
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dense_model(run_dir: RunDir, reporter: Reporter, resume: bool, prepare, dist_enabled: bool = False):
    """For demos: train the factory's model densely first, cached in the run directory."""
    def build(ctx: RunContext) -> nn.Module:
        from ..trust import build_from_factory

        model = build_from_factory(ctx.recipe.model.factory, dict(ctx.recipe.model.kwargs))
        prepare()
        cache = run_dir.path / "dense.pt"
        if resume and cache.is_file():
            model.load_state_dict(torch.load(cache, map_location="cpu", weights_only=True))
            return model
        pre = ctx.recipe.pretrain
        if dist_enabled:
            raise ConfigError("pretraining a dense model is not supported under torchrun; "
                              "pass a checkpoint (train it with one process first)")
        if not pre.enabled:
            raise ConfigError("no checkpoint given and pretrain.enabled is false; pass MODEL or enable pretrain")
        reporter.log(f"no checkpoint given: training a dense {ctx.recipe.model.factory} for {pre.epochs} epochs")
        pretrain_dense(model, ctx, reporter, run_dir)
        run_dir.save_state_file(cache, model.state_dict())
        return model
    return build


LARGE_INPUT = 256 * 2**20  # a model this large takes seconds to hash and to load: say so before starting


def prune(recipe: Recipe, *, model_path: str | Path | None = None, run_dir: str | Path | None = None,
          output: str | Path | None = None, resume: bool = False, force: bool = False, trust: bool = False,
          reporter: Reporter | None = None, dist: DistContext = SINGLE, hooks: TrainerHooks | None = None,
          recipe_path: str | Path | None = None, reuse: bool = False) -> PruneSummary:
    """`recipe_path` (the recipe's file, if any) is an input like the checkpoint: a run directory holding
    it is never cleared. The run directory and the output base stay locked until this returns.
    `reuse`: return the earlier result when the run directory holds one built from the same inputs
    (see `pipeline/reuse.py`); a mismatch is refused unless `force`, which rebuilds it."""
    reporter = reporter or SilentReporter()
    run = RunDir(run_dir or recipe.output.dir)
    outputs = OutputPlan(Path(output) if output else run.path / recipe.output.name, list(recipe.output.formats), force,
                         hf=recipe.output.hf)
    if problem := schedule_problem(recipe):  # before minutes of hashing, loading and tokenising
        raise ConfigError(problem)
    check_model_input(recipe, model_path)
    model_input = model_path or recipe.model.checkpoint or recipe.model.hf.path
    if model_input and (size := prov.path_bytes(model_input)) >= LARGE_INPUT:  # minutes of silence otherwise
        reporter.log(f"reading {model_input} ({size / 2**30:.1f} GiB): its hash for the provenance record, "
                     "then the model")
    record = prov.record(recipe, model_path or recipe.model.checkpoint)
    if reuse and not resume and unfinished(record, run):  # e.g. a CI job's timeout stopped it (SIGTERM)
        reporter.log(f"--reuse: {run.name} holds an unfinished run of these inputs; continuing it (as --resume)")
        resume = True
    if resume and (problem := resume_problem(record, run)):
        raise InputError(problem)
    # Before outputs.check: that refuses existing outputs without --force, and a match reuses them.
    if reuse and (earlier := reusable(record, run, outputs, force=force)) is not None:
        summary = summary_from(earlier, PruneSummary)
        reporter.log(summary.notes[-1])
        return summary
    # a reused result needs no memory; one that will train is refused here when it cannot fit
    if note := check_memory(recipe, model_input, resolve_device(recipe.training.device, dist).type):
        reporter.log(f"note: {note}")
    inputs = [Path(p) for p in (model_path, recipe.model.checkpoint, recipe.model.hf.path, recipe.data.path,
                                recipe_path) if p]
    try:
        outputs.check(inputs)
        if dist.is_main:
            run.check(resume=resume, force=force, inputs=inputs)
        return _prune(recipe, model_path, run, outputs, inputs, resume, force, trust, reporter, dist, hooks,
                      record)
    except DpmError:  # refused before training: the folder is left as it was found (less any old run --force cleared)
        run.discard_unstarted()
        raise
    finally:
        run.release()
        outputs.release()


def _prune(recipe: Recipe, model_path: str | Path | None, run: RunDir, outputs: OutputPlan, inputs: list[Path],
           resume: bool, force: bool, trust: bool, reporter: Reporter, dist: DistContext,
           hooks: TrainerHooks | None, record: dict[str, Any]) -> PruneSummary:
    def prepare() -> None:
        outputs.lock()  # first: a second run writing the same outputs stops before touching its run dir
        run.prepare(resume=resume, force=force, recipe_text=dump_recipe(recipe), inputs=inputs)
        if not resume:
            record_start(run, record)

    # The run directory is created only once the model and data have loaded: bad input leaves nothing.
    ctx = load_context(recipe, model_path, trust=trust, dist=dist, log=reporter.log,
                       dense_model=_dense_model(run, reporter, resume, prepare if dist.is_main else lambda: None,
                                                dist.enabled))
    if dist.is_main:
        prepare()
    dist.barrier()
    for note in ctx.notes + [f"resume: changed {change}" for change in run.changes]:
        reporter.log(f"note: {note}")
    model, example = ctx.model, move(ctx.example_inputs, ctx.device)
    dense = copy.deepcopy(model).eval()
    macs_before, params_before = count_macs_params(model, example)
    objective = Objective(recipe.objective.kind, teacher=dense, temperature=recipe.objective.temperature,
                          distill_weight=recipe.objective.distill_weight, labeled=ctx.data.labeled,
                          targets=recipe.objective.targets, loss=recipe.objective.loss).to(ctx.device)
    steps = total_steps(recipe, ctx.train_loader)
    for note in data_size_notes(recipe, ctx.data, steps):
        reporter.log(f"note: {note}")
        ctx.notes.append(note)  # in the summary too, as the context's own notes
    before = evaluate(dense, ctx.val_loader, objective, ctx.device, is_teacher=True)  # one forward per batch

    optimizer = build_optimizer(model.parameters(), recipe.training.optimizer)
    pruner = DecayPruner(model, example, dpm_config(recipe, steps, ctx.protect), optimizer=optimizer,
                         progress=reporter.log)
    problem = decay_overrun(recipe, pruner.decay_phase_end, steps) or folder_groups_problem(recipe, model, pruner.groups)
    if problem:
        raise ConfigError(problem)
    reporter.log(f"decay: {describe_decay(recipe.pruning, steps)}, decay phase ends at step {pruner.decay_phase_end}")
    scheduler = build_scheduler(optimizer, recipe.training.schedule, steps,
                                decay_window=(pruner.selection_steps[0], pruner.decay_phase_end))
    t = recipe.training
    trainer = Trainer(dist.wrap(model, ctx.device), ctx.train_loader, ctx.val_loader, objective, optimizer, scheduler,
                      LoopOptions(total_steps=steps, eval_every=t.eval_every, log_every=t.log_every,
                                  checkpoint_every=t.checkpoint_every, grad_clip=t.grad_clip, bf16=t.bf16,
                                  recalibrate_bn=recipe.pruning.recalibrate_bn.enabled,
                                  recalibrate_batches=recipe.pruning.recalibrate_bn.batches,
                                  recalibrate_at_zero=recipe.pruning.recalibrate_bn.at_zero,
                                  eval_every_decay=t.eval_every_decay, eval_after_decay=t.eval_after_decay),
                      pruner=pruner, device=ctx.device, run_dir=run, reporter=reporter, dist=dist, hooks=hooks,
                      reference=dense if recipe.pruning.reconstruct else None)
    if resume and run.state.is_file():
        trainer.load_state_dict(run.load_state())
        run.truncate_logs(trainer.position.step) if dist.is_main else None
        if any(c.startswith("training.optimizer.lr ") for c in run.changes):
            retarget_lr(optimizer, scheduler, recipe.training.optimizer.lr)
    elif resume:  # stopped before its first save (e.g. during dense pre-training): nothing to lose
        reporter.log("note: the run saved no fine-tuning state yet; starting fine-tuning from step 0")
    result = trainer.run()
    trainer.save()
    dist.agree(model, [e.to_dict() for e in pruner.events])
    return _finish(recipe, ctx, trainer, pruner, objective, outputs, run, dist, reporter,
                   (macs_before, params_before, before), result, record)


def _finish(recipe: Recipe, ctx: RunContext, trainer: Trainer, pruner: DecayPruner, objective: Objective,
            outputs: OutputPlan, run: RunDir, dist: DistContext, reporter: Reporter, dense: tuple,
            result: Any, record: dict[str, Any]) -> PruneSummary:
    macs_before, params_before, before = dense
    model = pruner.model
    if recipe.pruning.recalibrate_bn.enabled and trainer.recalibrated_at != trainer.position.step:
        trainer.recalibrate()  # stale BatchNorm statistics would hide the real accuracy (the fixed
        # batches give the same statistics again, so a re-estimation at this step is not repeated)
    decayed = evaluate(model, ctx.val_loader, objective, ctx.device)
    compacted = pruner.compact()
    notes = list(ctx.notes)
    if not compacted.exact:  # pruned through LayerNorm/GroupNorm: removal moved the outputs; train on
        notes.append(_finetune_after_removal(recipe, ctx, compacted, objective, reporter, dist, result.steps))
    after = evaluate(compacted.model, ctx.val_loader, objective, ctx.device)
    metric = next(m for m in ("top1", "cosine", "loss") if m in after)
    events = pruner.events
    summary = PruneSummary(
        params_before, compacted.params_after, macs_before, compacted.macs_after, metric, before[metric],
        after[metric], decayed[metric], compacted.max_rel_error, result.steps,
        sum(e.kind == "release" for e in events), sum(e.kind == "suppressed" for e in events),
        result.min_decay_top1, str(run.path), before.get("ce"), after.get("ce"), ranks=dist.world_size,
        notes=notes + [f"resume: changed {change}" for change in run.changes],
        widths=[asdict(w) for w in compacted.widths], min_decay_steps=list(result.decay_eval_steps),
        min_decay_eval_every=recipe.training.eval_every_decay or recipe.training.eval_every,
        provenance=record, output_formats=list(outputs.formats))
    if ctx.data.next_token and summary.ce_before is not None and summary.ce_after is not None:
        summary.perplexity_before, summary.perplexity_after = math.exp(summary.ce_before), math.exp(summary.ce_after)
    if dist.is_main:
        provenance = ctx.provenance.with_stage(compacted.history) if ctx.provenance else None
        brief = {k: v for k, v in summary.to_dict().items() if k not in ("widths", "provenance")}
        written = write_outputs(compacted.model.cpu(), move(ctx.example_inputs, "cpu"), outputs, provenance,
                                {"summary": brief, "provenance": record})
        summary.outputs = written.files
        summary.notes += [note for note in written.notes if note not in summary.notes]  # some are said before training
        if recipe.output.hf:
            _write_hf(ctx, compacted.model, outputs, summary, record)
        summary.output_sha256 = output_hashes(summary.outputs)
        run.write_text(run.path / "summary.json", _json(summary))
    dist.barrier()
    return summary


def _write_hf(ctx: RunContext, model: nn.Module, outputs: OutputPlan, summary: PruneSummary,
              record: dict[str, Any]) -> None:
    """BASE-hf/: save_pretrained + tokenizer, checked by loading it back; a shape the architecture's
    config cannot hold is a note here (the other outputs hold the model); the CLI then exits 1 (prune_cmd)."""
    from ..hf import HFFormatError, save_hf
    from ..hf.card import model_card

    try:
        folder = save_hf(model, ctx.tokenizer, outputs.hf_path(), move(ctx.example_inputs, "cpu"),
                         force=outputs.force, source=ctx.model_path, provenance=record,
                         card=model_card(ctx.model_path, summary))
    except HFFormatError as err:
        kept = [summary.outputs[f] for f in ("artifact", "export") if f in summary.outputs]
        where = f"; the compact model is in {' and '.join(kept)}" if kept else ""
        summary.notes.append(f"Hugging Face folder not written: {err}{where}")
        return
    summary.outputs["hf"] = str(folder)


def _finetune_after_removal(recipe: Recipe, ctx: RunContext, compacted: Any, objective: Objective,
                            reporter: Reporter, dist: DistContext, steps: int) -> str:
    """Fine-tune the compact model with a fresh optimizer (its Parameters are new objects). Not
    checkpointed: an interrupted run resumes from the end of the decay training and redoes this."""
    k = recipe.pruning.post_removal_steps or max(1, steps // 10)
    drift = compacted.max_rel_error
    reporter.log(f"removing channels through normalisation layers moved the outputs by {drift:.2e} "
                 f"(relative); fine-tuning the compact model for {k} steps")
    model, t = compacted.model, recipe.training
    model.train()
    optimizer = build_optimizer(model.parameters(), t.optimizer)
    Trainer(dist.wrap(model, ctx.device), ctx.train_loader, ctx.val_loader, objective, optimizer,
            build_scheduler(optimizer, t.schedule, k),
            LoopOptions(total_steps=k, eval_every=k, log_every=t.log_every, checkpoint_every=10**9,
                        grad_clip=t.grad_clip, bf16=t.bf16, recalibrate_bn=False),
            device=ctx.device, reporter=reporter, dist=dist).run()
    model.eval()
    return f"pruned through normalisation layers: removal drift {drift:.2e} (relative), then {k} fine-tuning steps"


def _json(summary: PruneSummary) -> str:
    import json

    return json.dumps(summary.to_dict(), indent=2, default=float) + "\n"
