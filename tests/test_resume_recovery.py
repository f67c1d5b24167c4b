"""A NaN stop leaves a finite state that --resume can continue with a lower learning rate; a run stopped
during dense pre-training resumes with --resume (and a plain rerun points there, not back)."""
from __future__ import annotations

import json

import pytest
import torch

from cli_helpers import run_cli, write_recipe
from dpm_cli.models import resnet_cifar
from dpm_cli.training.optim import build_scheduler, retarget_lr
from dpm_cli.training.rundir import RunDir

BN_MODEL = "model.factory=dpm_cli.models:resnet_cifar"
BN_KWARGS = "model.kwargs={depth: 8, width: 4, in_channels: 1}"


def bn_checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "bn.pt"
    torch.save(resnet_cifar(depth=8, width=4, in_channels=1).state_dict(), path)
    return path


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def all_finite(state: dict) -> bool:
    tensors = list(state["model"].values())
    tensors += [v for s in state["optimizer"]["state"].values() for v in s.values() if isinstance(v, torch.Tensor)]
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


def test_nan_stop_keeps_a_finite_state_and_resume_with_a_lower_lr_completes(tmp_path, capsys):
    """Finding: the "last good state" held infinite BatchNorm statistics and parameters near 4e14, and
    --resume with a lower learning rate was refused as "recipe differs"."""
    recipe, ckpt = write_recipe(tmp_path, steps=20), bn_checkpoint(tmp_path)
    args = ["prune", ckpt, "-r", recipe, "-q", BN_MODEL, BN_KWARGS, "training.checkpoint_every=1"]
    code, _, err = run_cli(args + ["training.optimizer.lr=1e6"], capsys)
    assert code == 1 and "loss became" in one_line(err) and "--resume" in one_line(err)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert all_finite(state), "every parameter, BatchNorm statistic and momentum buffer on disk is finite"
    assert max(v.abs().max().item() for v in state["model"].values() if v.is_floating_point()) < 1e6
    # the state after step 1 had finite weights, but the next loss was 8e9: it was not kept
    assert state["position"]["step"] == 0 and "state of step 0" in err
    code, out, err = run_cli(args + ["training.optimizer.lr=0.01", "--resume", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert any("training.optimizer.lr 1e+06 -> 0.01" in note for note in summary["notes"]), summary["notes"]
    assert summary["steps"] == 20
    assert summary["ce_after"] < 5.0, "the resumed model is usable (diverged weights give 1e16)"


def test_resume_refuses_changes_to_what_was_done_naming_the_keys(tmp_path, capsys):
    recipe = write_recipe(tmp_path, steps=10)
    run = RunDir(tmp_path / "run")
    run.prepare(resume=False, force=False, recipe_text="a: 1\ntraining: {steps: 10, log_every: 5}\n")
    run.release()
    run = RunDir(tmp_path / "run")
    run.prepare(resume=True, force=False, recipe_text="a: 1\ntraining: {steps: 10, log_every: 1}\n")
    assert run.changes == ["training.log_every 5 -> 1"]
    run.release()
    run = RunDir(tmp_path / "run")
    with pytest.raises(Exception, match=r"differs .* in a, training.steps; --resume accepts changes only to"):
        run.prepare(resume=True, force=False, recipe_text="a: 2\ntraining: {steps: 11, log_every: 1}\n")
    run.release()
    assert recipe.is_file()


def test_retarget_lr_keeps_the_schedule_position():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)

    class Cosine:
        name, warmup_steps, step_size, gamma, min_lr = "cosine", 0, 1, 1.0, 0.0

    sched = build_scheduler(opt, Cosine(), 10)
    for _ in range(5):
        opt.step()
        sched.step()
    factor = opt.param_groups[0]["lr"] / 1.0
    retarget_lr(opt, sched, 0.01)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * factor)
    sched.step()
    assert opt.param_groups[0]["lr"] < 0.01 * factor


def test_interrupted_dense_pretraining_resumes(tmp_path, capsys, monkeypatch):
    """Finding: after a kill during dense pre-training, --resume and a plain rerun each pointed at the other."""
    recipe = write_recipe(tmp_path, steps=10, extra="pretrain: {enabled: true, epochs: 1, lr: 0.05}\n")
    text = recipe.read_text()
    recipe.write_text(text)
    args = ["prune", "-r", recipe, "-q", "--json"]

    def killed(*_args, **_kwargs):  # the process dies after pre-training, before dense.pt is written
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(RunDir, "save_state_file", killed)
        code, _, err = run_cli(args, capsys)
    assert code == 130 and "--resume" in err
    run = tmp_path / "run"
    assert not (run / "state.pt").exists() and not (run / "dense.pt").exists()
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "--resume" in one_line(err), "a plain rerun points at --resume"
    code, out, err = run_cli(args + ["--resume"], capsys)
    assert code == 0, err
    assert json.loads(out)["steps"] == 10


def test_interrupted_dpm_train_says_how_to_start_again(tmp_path, capsys, monkeypatch):
    """Finding: Ctrl-C in any command said 'a dpm prune run keeps its state ... --resume'; dpm train has
    no --resume, and its stopped run directory is started again with --force."""
    recipe = write_recipe(tmp_path, steps=10, extra="pretrain: {enabled: true, epochs: 1, lr: 0.05}\n")
    args = ["train", "-r", recipe, "-q", "--json"]
    with monkeypatch.context() as m:
        m.setattr(RunDir, "save_state_file", lambda *_a, **_k: (_ for _ in ()).throw(KeyboardInterrupt))
        code, _, err = run_cli(args, capsys)
    assert code == 130
    assert err.strip().splitlines()[-1] == ("interrupted: dpm train wrote no model; start it again with --force "
                                            "(which replaces only dpm's files in the run directory)")
    assert not (tmp_path / "run" / "dense.pt").exists()
    code, out, err = run_cli(args + ["--force"], capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "dense.pt").exists() and json.loads(out)["steps"] > 0


def test_interrupted_command_that_writes_whole_outputs_does_not_mention_resume(tmp_path, capsys, monkeypatch):
    import dpm_cli.cli.prune_cmd as prune_cmd

    recipe = write_recipe(tmp_path, steps=10)
    monkeypatch.setattr(prune_cmd, "read_recipe", lambda *_a, **_k: (_ for _ in ()).throw(KeyboardInterrupt))
    code, _, err = run_cli(["validate", recipe], capsys)
    assert code == 130
    assert err.strip().splitlines()[-1] == ("interrupted: dpm validate stopped; it writes files only whole, so none "
                                            "was left half-written")
