"""The built-in training loop's pieces: schedules, objectives, optimizers, bf16, repeatability."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from cli_helpers import run_cli, write_checkpoint, write_recipe
from dpm_cli.training.objective import Objective
from dpm_cli.training.optim import lr_factor


def sched(name="cosine", warmup=0, step_size=10, gamma=0.5, min_lr=0.0):
    return SimpleNamespace(name=name, warmup_steps=warmup, step_size=step_size, gamma=gamma, min_lr=min_lr)


def test_warmup_then_cosine_to_min_lr():
    cfg = sched(warmup=10, min_lr=0.01)
    assert lr_factor(0, 110, cfg, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 110, cfg, 0.1) == pytest.approx(1.0)
    assert lr_factor(60, 110, cfg, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(110, 110, cfg, 0.1) == pytest.approx(0.1)  # min_lr / base_lr


def test_step_and_constant_schedules():
    assert [lr_factor(s, 100, sched("step"), 0.1) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    assert lr_factor(50, 100, sched("constant"), 0.1) == 1.0


def test_distillation_needs_no_labels_and_is_zero_for_the_teacher_itself():
    teacher = torch.nn.Linear(4, 3)
    objective = Objective("distill", teacher=teacher, temperature=2.0, labeled=False)
    x = torch.randn(8, 4)
    assert float(objective(teacher(x).detach(), None, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(objective(torch.zeros(8, 3), None, x)) > 0


@pytest.mark.parametrize("extra", [["training.optimizer.name=adamw", "training.optimizer.lr=0.003"],
                                   ["training.bf16=true"],
                                   ["training.schedule.name=step", "training.schedule.warmup_steps=3"]])
def test_prune_runs_with_other_training_settings(tmp_path, capsys, extra):
    recipe, ckpt = write_recipe(tmp_path), write_checkpoint(tmp_path)
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--json", "-q", *extra], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["equivalence_error"] <= 1e-4 and summary["macs_after"] < summary["macs_before"]


def test_unlabeled_data_with_distillation(tmp_path, capsys):
    data = tmp_path / "calib.pt"
    torch.save({"inputs": torch.randn(256, 1, 8, 8)}, data)
    recipe, ckpt = write_recipe(tmp_path), write_checkpoint(tmp_path)
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--json", "-q", "data.source=tensors", f"data.path={data}",
                              "data.num_samples=null", "objective.kind=distill"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["metric"] == "loss" and summary["before"] == pytest.approx(0.0, abs=1e-6)


def test_same_seed_same_model_bit_for_bit(tmp_path, capsys):
    recipe, ckpt = write_recipe(tmp_path), write_checkpoint(tmp_path)
    weights = []
    for run in ("a", "b"):
        code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--json", "-q", "--run-dir", tmp_path / run,
                                  "-o", tmp_path / run / "m"], capsys)
        assert code == 0, err
        weights.append(torch.load(json.loads(out)["outputs"]["module"], weights_only=False).state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
