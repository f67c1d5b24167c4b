"""The built-in training loop's pieces: schedules, objectives, optimizers, bf16, repeatability."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from cli_helpers import run_cli, write_checkpoint, write_recipe
from dpm_cli.training.objective import Forward, Objective
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


def test_logit_distillation_of_a_token_model_leaves_padding_out():
    """A causal LM's logits are (batch, tokens, vocab): KL is averaged over the tokens the attention
    mask keeps (it used to be summed over every position, padding included)."""
    objective = Objective("distill", teacher=torch.nn.Linear(4, 5), temperature=2.0, labeled=False, targets=("logits",))
    torch.manual_seed(0)
    teacher, student = torch.randn(2, 6, 5), torch.randn(2, 6, 5)
    inputs = {"input_ids": torch.zeros(2, 6, dtype=torch.long),
              "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])}
    loss = float(objective.distill(Forward(student), Forward(teacher), inputs))
    noisy = student.clone()
    noisy[1, 3:] = 100.0  # padded positions only
    assert float(objective.distill(Forward(noisy), Forward(teacher), inputs)) == pytest.approx(loss, rel=1e-6)
    kept = torch.cat([student[0], student[1, :3]]), torch.cat([teacher[0], teacher[1, :3]])
    expected = F.kl_div(F.log_softmax(kept[0] / 2, -1), F.log_softmax(kept[1] / 2, -1), reduction="batchmean",
                        log_target=True) * 4
    assert loss == pytest.approx(float(expected), rel=1e-5)
    flat = float(objective.distill(Forward(student[:, 0]), Forward(teacher[:, 0]), inputs))  # (batch, classes)
    expected = F.kl_div(F.log_softmax(student[:, 0] / 2, -1), F.log_softmax(teacher[:, 0] / 2, -1),
                        reduction="batchmean", log_target=True) * 4
    assert flat == pytest.approx(float(expected), rel=1e-5)


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
