"""The Trainer with a DecayPruner: the anytime metric and the hook between backward and step."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dpm_cli.engine import DecayPruner, DPMConfig
from dpm_cli.training.loop import LoopOptions, Trainer, TrainerHooks
from dpm_cli.training.objective import Objective

from engine_helpers import TwoStage


def trainer(decay_steps: int, hooks: TrainerHooks | None = None, steps: int = 12,
            rectify: dict | None = None) -> Trainer:
    torch.manual_seed(0)
    model = TwoStage(width=8)
    data = TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    train, val = DataLoader(data, batch_size=16), DataLoader(data, batch_size=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    cfg = DPMConfig(budget=0.5, decay_steps=decay_steps, start_step=3, rectify=rectify or {"enabled": False})
    pruner = DecayPruner(model, data.tensors[0][:2], cfg, optimizer=opt)
    options = LoopOptions(total_steps=steps, eval_every=2, recalibrate_batches=2)
    return Trainer(model, train, val, Objective("cross_entropy"), opt, sched, options, pruner=pruner, hooks=hooks)


@pytest.mark.parametrize("decay_steps", [1, 4])
def test_anytime_top1_counts_the_first_eval_after_the_decay(decay_steps):
    seen: list[tuple[int, float]] = []
    t = trainer(decay_steps, TrainerHooks(on_eval=lambda step, m: seen.append((step, m["top1"]))))
    result = t.run()
    end = t.pruner.decay_phase_end  # single-step: selected after step 4, zero after step 5
    first = t.pruner.selection_steps[0]
    closing = min(step for step, _ in seen if step >= end)
    counted = [top1 for step, top1 in seen if first <= step <= closing]
    assert result.min_decay_top1 is not None
    assert result.min_decay_top1 == min(counted)
    assert result.decay_evals_done


def test_before_step_sees_gradients_before_the_optimizer_step():
    calls = []

    def before(step: int, model: torch.nn.Module) -> None:
        weight = model.conv1.weight
        calls.append((step, weight.grad is not None, weight.detach().clone()))

    t = trainer(4, TrainerHooks(before_step=before), steps=3)
    t.run()
    assert [c[0] for c in calls] == [1, 2, 3] and all(c[1] for c in calls)
    assert not torch.equal(calls[0][2], calls[1][2]), "the optimizer stepped between the two calls"


# Self-Rectifying on but unable to release: the decay phase lasts 2N steps while every target is
# already zero after N, which is where "all targets zero" and "end of the decay phase" differ.
NO_RELEASE = {"enabled": True, "rate_quantile": None, "rate_threshold": 1e9}


@pytest.mark.parametrize("decay_steps, rectify, closing", [(1, None, 6), (4, None, 8), (4, NO_RELEASE, 12)])
def test_anytime_window_ends_with_the_first_eval_at_or_after_the_decay_phase(monkeypatch, decay_steps, rectify,
                                                                               closing):
    # Each eval's top-1 falls with its step, so the minimum names the last eval the window counted.
    t = trainer(decay_steps, steps=16, rectify=rectify)
    monkeypatch.setattr("dpm_cli.training.loop.evaluate", lambda *a, **k: {"loss": 0.0, "top1": 100.0 - t.position.step})
    result = t.run()
    assert t.pruner.decay_phase_end <= closing < t.pruner.decay_phase_end + 2  # evals every 2 steps
    assert result.min_decay_top1 == 100.0 - closing


def test_anytime_window_starts_at_the_first_selection(monkeypatch):
    t = trainer(4, steps=16)
    monkeypatch.setattr("dpm_cli.training.loop.evaluate", lambda *a, **k: {"loss": 0.0, "top1": float(t.position.step)})
    result = t.run()
    assert t.pruner.selection_steps[0] == 4
    assert result.min_decay_top1 == 4.0  # the eval at step 2 came before any selection


def test_live_bar_shows_the_eval_that_ran_after_the_last_log_line():
    import io

    from rich.console import Console

    from dpm_cli.training.progress import RichReporter

    class Recording(RichReporter):
        def __init__(self):
            super().__init__(Console(file=io.StringIO()))
            self.shown: list[tuple[int, dict]] = []

        def update(self, step, fields):
            self.shown.append((step, dict(fields)))
            super().update(step, fields)

    t = trainer(4, steps=6)
    t.reporter = Recording()
    t.options.log_every = 3
    result = t.run()
    last_step, last_fields = t.reporter.shown[-1]
    assert last_step == 6 and last_fields["val_top1"] == result.evals[-1]["top1"]
