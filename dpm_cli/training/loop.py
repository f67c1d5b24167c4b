"""The fine-tuning loop with DPM: forward, backward, optimizer step, then `pruner.step()`.

Written for one process; `dist` (see distributed.py) is the seam where DistributedDataParallel plugs
in: the model may be wrapped, metrics are reduced across ranks, and only the main rank writes files.
A CPU run with a fixed seed is repeatable bit for bit, also across an interruption and `resume()`.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from typing import Any

import torch
import torch.nn as nn

from ..data import set_epoch
from ..engine import DecayPruner, recalibrate_batchnorm
from ..engine.activation import fallback_note
from ..engine.state import DECAYING, PRUNED
from ..errors import TrainingError
from ..termination import Terminated, held, stop_if_asked
from .distributed import SINGLE, DistContext
from .evaluate import evaluate
from ..batch import move
from .calibration import calibration_batches, calibration_count, collect_activations, reconstruct
from .normlog import NORM_POINTS, log_decaying_norms, norm_stride  # noqa: F401  (NORM_POINTS: old import path)
from .objective import Objective, split_batch
from .options import LoopOptions, Position, TrainerHooks, TrainResult  # noqa: F401  (import path of old)
from .progress import Reporter, SilentReporter, refresh
from .rundir import RunDir



# A loss this many times the first one (at least 1) means training diverged: the weights are not kept.
DIVERGED = 100.0


class Trainer:
    def __init__(self, model: nn.Module, train_loader: Any, val_loader: Any, objective: Objective,
                 optimizer: torch.optim.Optimizer, scheduler: Any, options: LoopOptions, *,
                 pruner: DecayPruner | None = None, device: torch.device = torch.device("cpu"),
                 run_dir: RunDir | None = None, reporter: Reporter | None = None,
                 dist: DistContext = SINGLE, hooks: TrainerHooks | None = None,
                 reference: nn.Module | None = None):
        self.model, self.train_loader, self.val_loader = model, train_loader, val_loader
        self.reference = reference  # the original model, frozen: set to reconstruct when structures reach zero
        self.objective, self.optimizer, self.scheduler = objective, optimizer, scheduler
        self.options, self.pruner, self.device = options, pruner, device
        self.run_dir = run_dir if dist.is_main else None
        self.reporter = reporter if (reporter is not None and dist.is_main) else SilentReporter()
        self.dist, self.hooks = dist, hooks or TrainerHooks()
        self.position = Position()
        self.recalibrated_at: int | None = None  # the step of the last BatchNorm re-estimation
        self.result = TrainResult(0)
        self._events_written = 0
        self._saved_step: int | None = None  # step of the state on disk (all finite), None before the first save
        self._pending_step: int | None = None  # step of a saved state not yet confirmed by the next loss
        self._reference_loss: float | None = None  # the first loss this process saw
        self._mid_step = False
        self._resumed_rng: torch.Tensor | None = None  # set again once the resumed run's data iterator exists
        self._shown: tuple[int, dict[str, Any]] | None = None  # the step and fields last shown
        self._zero_step: int | None = None  # last step on which every decaying structure reached zero
        self._zeroed_now = False  # this step made the last decaying structures zero
        self._pruned_now = False  # this step made some structures zero
        self._fallback_said: list[str] = []  # the groups the last note said a criterion could not rank

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.dist.unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "pruner": self.pruner.state_dict() if self.pruner else None,
            "position": vars(self.position).copy(),
            "result": {"evals": self.result.evals, "min_decay_top1": self.result.min_decay_top1,
                       "decay_evals_done": self.result.decay_evals_done,
                       "decay_eval_steps": self.result.decay_eval_steps, "zero_step": self._zero_step},
            "rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dist.unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.pruner is not None:
            self.pruner.load_state_dict(state["pruner"])
        self.position = Position(**state["position"])
        self.result.evals = list(state["result"]["evals"])
        self.result.min_decay_top1 = state["result"]["min_decay_top1"]
        self.result.decay_evals_done = bool(state["result"].get("decay_evals_done", False))
        self.result.decay_eval_steps = list(state["result"].get("decay_eval_steps", []))
        self._zero_step = state["result"].get("zero_step")
        torch.set_rng_state(state["rng"])
        self._resumed_rng = state["rng"]
        self._events_written = len(self.pruner.events) if self.pruner else 0
        self._saved_step = self.position.step

    def save(self) -> bool:
        """Write the resumable state, unless a parameter, buffer or optimizer value is not finite: then the
        previous (finite) state stays on disk, so that a divergence never replaces the last good state."""
        if self.run_dir is None:
            return False
        if not self._finite():
            self.reporter.log(f"note: state at step {self.position.step} not saved: it holds NaN or infinite values; "
                              f"{self.run_dir.state} keeps {self._describe_saved()}")
            return False
        self.run_dir.save_state(self.state_dict())
        self.run_dir.discard_pending()
        self._saved_step, self._pending_step = self.position.step, None
        return True

    # A periodic state is written beside state.pt and replaces it only once the next step's loss shows the
    # weights still work: finite weights can already be diverged (4e14, with a loss of 1e10 on the next step).
    def _save_pending(self) -> None:
        if self.run_dir is None:
            return
        if not self._finite():
            self.reporter.log(f"note: state at step {self.position.step} not saved: it holds NaN or infinite values; "
                              f"{self.run_dir.state} keeps {self._describe_saved()}")
            return
        self.run_dir.save_pending(self.state_dict())
        self._pending_step = self.position.step

    def _validate_pending(self, loss: float) -> None:
        if self._reference_loss is None and math.isfinite(loss):
            self._reference_loss = loss
        if self._pending_step is None or self.run_dir is None:
            return
        step, self._pending_step = self._pending_step, None
        if math.isfinite(loss) and loss <= DIVERGED * max(1.0, self._reference_loss or 0.0):
            self.run_dir.promote_pending()
            self._saved_step = step
        else:
            self.run_dir.discard_pending()
            self.reporter.log(f"note: state at step {step} not kept: the next loss was {loss:.4g}; "
                              f"{self.run_dir.state} keeps {self._describe_saved()}")

    def _finite(self) -> bool:
        model = self.dist.unwrap(self.model)
        tensors = [*model.parameters(), *model.buffers()]
        tensors += [v for per_param in self.optimizer.state.values() for v in per_param.values()
                    if isinstance(v, torch.Tensor)]
        return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point() or t.is_complex())

    def _describe_saved(self) -> str:
        return "no state yet" if self._saved_step is None else f"the state of step {self._saved_step}"

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        opts, pos = self.options, self.position
        self.model.train()
        self.reporter.start(opts.total_steps, opts.description, pos.step)
        if self._saved_step is None and pos.step == 0:
            self.save()  # a last good state from the start: a divergence or a kill before step checkpoint_every resumes
        try:
            with held():  # SIGTERM: this step finishes, then its state is kept as on Ctrl-C
                while pos.step < opts.total_steps:
                    self._run_epoch()
        except KeyboardInterrupt as stop:
            # Between two steps the state is consistent: keep it, so --resume loses nothing.
            if not self._mid_step:
                self._flush_events()
                if self.save():
                    why = "SIGTERM" if isinstance(stop, Terminated) else "interrupted"
                    self.reporter.log(f"{why}: stopped after step {pos.step}, its state saved in {self.run_dir.state}")
            raise
        finally:
            self.reporter.stop()
        self.result.steps = pos.step
        return self.result

    def _run_epoch(self) -> None:
        opts, pos = self.options, self.position
        set_epoch(self.train_loader, pos.epoch)
        batches = iter(self.train_loader)
        if self._resumed_rng is not None:
            # Creating a DataLoader iterator draws its base seed from the global generator, which dropout
            # also draws from: the run that was not interrupted drew none between the saved state and the
            # next step, so the resumed run must not either (else a model with dropout resumed differently).
            torch.set_rng_state(self._resumed_rng)
            self._resumed_rng = None
        batches = itertools.islice(batches, pos.batch, None)
        for batch in batches:
            stop_if_asked()
            self._mid_step = True
            loss = self._train_step(batch)
            pos.step += 1
            pos.batch += 1
            self._after_step(loss)
            self._mid_step = False  # logs, evaluation and checkpoint of this step are done
            if self.hooks.on_step:
                self.hooks.on_step(pos.step, loss)
            if pos.step >= opts.total_steps:
                break
        else:
            pos.epoch, pos.batch = pos.epoch + 1, 0
            if opts.eval_every is None:
                self._evaluate_once()
            return
        if opts.eval_every is None:
            self._evaluate_once()

    def _autocast(self) -> Any:
        if not self.options.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _train_step(self, batch: Any) -> float:
        inputs, labels = split_batch(batch)
        inputs = move(inputs, self.device)
        labels = labels.to(self.device) if labels is not None else None
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            outputs = self.objective.forward(self.model, inputs)
        loss = self.objective(outputs, labels, inputs)
        value = float(self.dist.mean(loss.detach()))
        self._validate_pending(value)
        if not math.isfinite(value):
            # Not saved now: the weights that gave this loss may already be huge and BatchNorm statistics
            # infinite. The state on disk is the last periodic one, checked finite when it was written.
            where = (f"; the last good state ({self._describe_saved()}, every parameter and buffer finite) is in "
                     f"{self.run_dir.state}: continue with --resume and a lower training.optimizer.lr=..."
                     if self.run_dir and self._saved_step is not None else
                     "; lower training.optimizer.lr or set training.grad_clip")
            raise TrainingError(f"the loss became {value} at step {self.position.step + 1}; stopped{where}")
        loss.backward()
        if self.options.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
        if self.hooks.before_step:
            self.hooks.before_step(self.position.step + 1, self.dist.unwrap(self.model))
        self.optimizer.step()
        self.scheduler.step()
        if self.pruner is not None:
            collected = self.pruner.needs_activations()
            if collected:
                self.collect_activations()
            before = self._counts()
            self.pruner.step()
            fallback = self.pruner.activation_fallback
            if fallback and (collected or fallback != self._fallback_said):  # taylor: said once per change
                self.reporter.log("note: " + fallback_note(self.pruner.config.criterion, fallback))
                self._fallback_said = list(fallback)
            after = self._counts()
            self._pruned_now = after[1] > before[1]
            self._zeroed_now = before[0] > 0 and after[0] == 0
            if self._zeroed_now:
                self._zero_step = self.position.step + 1
                if self.reference is not None:
                    self.reconstruct()
        return value

    def _counts(self) -> tuple[int, int]:
        """(decaying, pruned) structures: the step where decaying drops to 0 is where the decay ends."""
        st = self.pruner.state
        return int(st.mask(DECAYING).sum()), int(st.mask(PRUNED).sum())

    def _decay_eval_due(self, step: int) -> bool:
        """The dense cadence: every eval_every_decay steps (counted from the first selection) while
        structures decay and for eval_after_decay steps after they are zero, and on the step they are."""
        k, p = self.options.eval_every_decay, self.pruner
        if k is None or p is None or p.round < 0:
            return False
        if self._zeroed_now:
            return True
        within = self._counts()[0] > 0 or (self._zero_step is not None
                                           and step - self._zero_step <= self.options.eval_after_decay)
        return within and (step - p.selection_steps[0]) % k == 0

    def _after_step(self, loss: float) -> None:
        opts, step = self.options, self.position.step
        if step % opts.log_every == 0 or step == opts.total_steps:
            self._log(step, loss)
        log_decaying_norms(self.pruner, self.run_dir, step)
        if self._pruned_now and opts.recalibrate_at_zero:
            self.recalibrate()  # fresh running statistics for any eval or state saved from now on
        if (opts.eval_every and (step % opts.eval_every == 0 or step == opts.total_steps)) \
                or self._decay_eval_due(step):
            self._evaluate()
        if step % opts.checkpoint_every == 0:
            self._flush_events()
            self._save_pending()

    # ------------------------------------------------------------------ logging and evaluation
    def _fields(self) -> dict[str, Any]:
        if self.pruner is None:
            return {}
        p = self.pruner.progress()
        return {"macs_kept": round(p.macs_kept, 4), "decaying": p.decaying, "released": p.released,
                "pruned": p.pruned}

    def _log(self, step: int, loss: float) -> None:
        fields = {"loss": loss, "lr": self.scheduler.get_last_lr()[0], **self._fields()}
        last = self.result.evals[-1] if self.result.evals else {}
        if "top1" in last:
            fields["val_top1"] = last["top1"]
        self.reporter.update(step, fields)
        self._shown = (step, fields)
        if self.run_dir is not None:
            self.run_dir.append(self.run_dir.metrics, {"step": step, "epoch": self.position.epoch, **fields})
        self._flush_events()

    def norm_stride(self) -> int:
        return norm_stride(self.pruner)

    def _flush_events(self) -> None:
        if self.pruner is None or self.run_dir is None:
            return
        for event in self.pruner.events[self._events_written:]:
            self.run_dir.append(self.run_dir.events, event.to_dict())
        self._events_written = len(self.pruner.events)

    def recalibrate(self) -> int:
        """Re-estimate BatchNorm statistics on the first training batches (a fixed, repeatable set)."""
        batches = (move(split_batch(b)[0], self.device) for b in self._calibration_batches())
        # The bare model: every rank sees the same batches, so no DDP buffer broadcast is needed.
        self.recalibrated_at = self.position.step
        return recalibrate_batchnorm(self.dist.unwrap(self.model), batches, self.options.recalibrate_batches)

    def collect_activations(self) -> None:
        """The activation criterion's statistics on the calibration batches, right before a step that selects."""
        # minutes on a transformer (96 batches of 32 sequences): said first, or the run looks stuck at this step
        self.reporter.log(f"step {self.position.step + 1}: {self.pruner.config.criterion} criterion: reading "
                          f"{calibration_count(self.train_loader, self.options.recalibrate_batches)} calibration batches")
        collect_activations(self.pruner, self.dist.unwrap(self.model), self._calibration_batches(), self.device,
                            self._autocast)

    def reconstruct(self) -> None:
        """Refit the linear layers reading the structures that just reached zero (`pruning.reconstruct`)."""
        self.reporter.log(f"step {self.position.step + 1}: refitting the layers that read the pruned structures "
                          f"on {calibration_count(self.train_loader, self.options.recalibrate_batches)} calibration batches "
                          "(pruning.reconstruct)")
        message, record = reconstruct(self.pruner, self.dist.unwrap(self.model), self.reference,
                                      self._calibration_batches, self.device, self.position.step + 1)
        self.reporter.log(message)
        if self.run_dir is not None:
            self.run_dir.append(self.run_dir.metrics, record)

    def _calibration_batches(self) -> Any:
        return calibration_batches(self.train_loader, self.options.recalibrate_batches)

    def _track_anytime(self, metrics: dict[str, float]) -> None:
        p, result = self.pruner, self.result
        if p is None or p.round < 0 or result.decay_evals_done or "top1" not in metrics:
            return
        low = result.min_decay_top1
        result.min_decay_top1 = metrics["top1"] if low is None else min(low, metrics["top1"])
        result.decay_eval_steps.append(self.position.step)
        # Close the window at the phase's last step, not when every target is zero: with Self-Rectifying
        # that can happen N steps earlier, and the evals in between belong to the decay phase too. With
        # the dense cadence it also covers the eval_after_decay steps after the last structure is zero.
        end = p.decay_phase_end
        if self.options.eval_every_decay is not None and self._zero_step is not None:
            end = max(end, self._zero_step + self.options.eval_after_decay)
        result.decay_evals_done = self.position.step >= end

    def _evaluate_once(self) -> None:
        """The per-epoch eval, unless the dense cadence already evaluated this step."""
        if not (self.result.evals and self.result.evals[-1]["step"] == self.position.step):
            self._evaluate()

    def _evaluate(self) -> dict[str, float]:
        progress = self.pruner.progress() if self.pruner is not None else None
        touched = progress is not None and (progress.pruned or progress.decaying)
        if touched and self.options.recalibrate_bn:
            self.recalibrate()
        metrics = evaluate(self.dist.unwrap(self.model), self.val_loader, self.objective, self.device,
                           self._autocast if self.options.bf16 else None)
        record = {"step": self.position.step, "kind": "eval", **metrics, **self._fields()}
        self.result.evals.append(record)
        self._track_anytime(metrics)
        if self.run_dir is not None:
            self.run_dir.append(self.run_dir.metrics, record)
        if self._shown is not None and self._shown[0] == self.position.step and "top1" in metrics:
            refresh(self.reporter, self.position.step, {**self._shown[1], "val_top1": metrics["top1"]})
        shown = f"top1 {metrics['top1']:.2f}%" if "top1" in metrics else f"loss {metrics['loss']:.4f}"
        if "cosine" in metrics:
            shown += f", embedding cosine to the original {metrics['cosine']:.4f}"
        self.reporter.log(f"eval @ step {self.position.step}: {shown}")
        if self.hooks.on_eval:
            self.hooks.on_eval(self.position.step, metrics)
        return metrics
