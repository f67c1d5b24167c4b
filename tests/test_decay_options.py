"""Issue 15: single-step as one setting, dense training by itself, the anytime cadence, and the
decay ingredients (LR during the decay, BN re-estimation at zero) as recipe options."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli_helpers import run_cli, write_checkpoint, write_recipe
from dpm_cli.pipeline.context import dpm_config
from dpm_cli.recipe import load_recipe, parse_recipe
from dpm_cli.training.optim import build_scheduler

from test_training_loop import trainer

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_single_step_is_one_override_on_every_shipped_recipe(path):
    recipe = load_recipe(path, ["pruning.mode=single_step", "pruning.decay_steps=7"])
    cfg = dpm_config(recipe, 200)
    assert cfg.decay_steps == 1 and not cfg.rectify.enabled


def test_smooth_mode_still_refuses_both_decay_keys(tmp_path, capsys):
    recipe = write_recipe(tmp_path)  # decay_steps: 4
    code, _, err = run_cli(["validate", recipe, "pruning.decay_fraction=0.3"], capsys)
    assert code == 2 and "are set; keep one of them" in err


def test_single_step_mode_prunes_at_once_and_says_so(tmp_path, capsys):
    recipe, ckpt = write_recipe(tmp_path), write_checkpoint(tmp_path)
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "pruning.mode=single_step", "pruning.decay_fraction=0.5",
                              "training.eval_every=100", "training.eval_every_decay=1", "training.eval_after_decay=2",
                              "--json", "--quiet"], capsys)
    assert code == 0, err
    s = json.loads(out)
    assert s["releases"] == 0
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    selected = {e["step"] for e in events if e["kind"] == "selected"}
    pruned = {e["step"] for e in events if e["kind"] == "pruned"}
    assert selected == {1} and pruned == {2}  # selected after step 1, zero after step 2: N = 1
    # The dense cadence: the selection step, the cut, and 2 steps after it; the window then closes.
    assert s["min_decay_steps"] == [1, 2, 3, 4] and s["min_decay_eval_every"] == 1
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if '"kind": "eval"' in x]
    assert [e["step"] for e in evals] == [1, 2, 3, 4, 14]
    assert s["min_decay_top1"] == min(e["top1"] for e in evals[:4])


@pytest.mark.parametrize("decay_steps, closing", [(1, 7), (4, 10)])
def test_dense_cadence_evaluates_on_the_step_structures_reach_zero(monkeypatch, decay_steps, closing):
    t = trainer(decay_steps, steps=16)
    t.options.eval_every, t.options.eval_every_decay, t.options.eval_after_decay = 100, 3, 2
    monkeypatch.setattr("dpm_cli.training.loop.evaluate", lambda *a, **k: {"loss": 0.0, "top1": 100.0 - t.position.step})
    result = t.run()
    first, zero = t.pruner.selection_steps[0], t.pruner.selection_steps[0] + decay_steps
    steps = [e["step"] for e in result.evals]
    assert zero in steps, "the step the channels reach zero is always evaluated"
    expected = sorted({s for s in range(first, zero + 2 + 1) if (s - first) % 3 == 0} | {zero, 16})
    assert steps == expected
    assert result.decay_eval_steps == [s for s in expected if s <= max(zero + 2, t.pruner.decay_phase_end) and s != 16]
    assert result.min_decay_top1 == 100.0 - result.decay_eval_steps[-1]


def test_recalibrate_at_zero_refreshes_running_statistics_on_that_step(monkeypatch):
    calls: list[int] = []
    t = trainer(4, steps=12)
    t.options.recalibrate_at_zero, t.options.eval_every = True, 100
    monkeypatch.setattr(type(t), "recalibrate", lambda self: calls.append(self.position.step) or 0)
    t.run()
    assert calls == [t.pruner.selection_steps[0] + 4, 12]  # at zero, then before the final eval


def test_decay_lr_scale_multiplies_exactly_the_decay_steps():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = parse_recipe("version: 1\ntraining: {steps: 10, schedule: {name: constant, decay_lr_scale: 0.5}}\n",
                       "<t>").training.schedule
    sched = build_scheduler(opt, cfg, 10, decay_window=(3, 6))
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])  # the rate optimizer step len(rates) runs with
        opt.step()
        sched.step()
    assert rates == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.1, 0.1, 0.1, 0.1]  # steps 4..6 decay


def test_dpm_train_writes_dense_checkpoint_and_its_evals(tmp_path, capsys):
    recipe = write_recipe(tmp_path, extra="pretrain: {epochs: 2, lr: 0.05, batch_size: 32}\n")
    code, out, err = run_cli(["train", "-r", recipe, "--run-dir", tmp_path / "dense", "--json", "--quiet"], capsys)
    assert code == 0, err
    s = json.loads(out)
    # data.num_samples 640 to train: 20 batches of 32 per epoch (not 10 of data.batch_size 64).
    assert s["batch_size"] == 32 and s["steps"] == 40
    lines = [json.loads(x) for x in (tmp_path / "dense" / "metrics.jsonl").read_text().splitlines()]
    assert [(e["phase"], e["step"]) for e in lines] == [("pretrain", 20), ("pretrain", 40)]
    assert lines[-1]["top1"] > 50
    code, out, err = run_cli(["prune", s["path"], "-r", recipe, "--json", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads(out)["before"] == lines[-1]["top1"]  # the saved model is the one evaluated


def test_dpm_train_refuses_an_existing_run_and_writes_nothing(tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    (tmp_path / "dense").mkdir()
    (tmp_path / "dense" / "keep.txt").write_text("x")
    code, _, err = run_cli(["train", "-r", recipe, "--run-dir", tmp_path / "dense"], capsys)
    assert code == 2 and "not a dpm run directory" in err
    assert sorted(p.name for p in (tmp_path / "dense").iterdir()) == ["keep.txt"]


def test_batchnorm_is_re_estimated_once_at_the_last_step(tmp_path, capsys, monkeypatch):
    """The last evaluation re-estimates the statistics; finishing the run must not do it again."""
    from cli_helpers import run_cli, write_checkpoint, write_recipe

    from dpm_cli.training.loop import Trainer

    calls = []
    real = Trainer.recalibrate
    monkeypatch.setattr(Trainer, "recalibrate", lambda self: calls.append(self.position.step) or real(self))
    code, _, err = run_cli(["prune", write_checkpoint(tmp_path), "-r", write_recipe(tmp_path, steps=14)], capsys)
    assert code == 0, err
    assert calls and calls[-1] == 14 and calls.count(14) == 1
