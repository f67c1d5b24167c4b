"""SIGTERM (a CI timeout, `docker stop`, `timeout`, Kubernetes) stops `dpm prune` as Ctrl-C does.

Measured before: `timeout -s TERM 20 dpm prune --recipe recipes/mnist-demo.yaml` died at step 45 with
no message, left its lock files, and `--resume` started again from step 0 (the only state on disk).
Now the step in progress finishes, its state is saved, the run says so and exits 143, and `--resume`
continues from that step to the model an uninterrupted run gives.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cli_helpers import run_cli, write_checkpoint, write_recipe
from dpm_cli import termination
from dpm_cli.pipeline import prune
from dpm_cli.recipe import load_recipe
from dpm_cli.training.loop import Trainer, TrainerHooks
from test_resume import STEPS, assert_same_model, compact_weights, uninterrupted


def _sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_a_sigterm_within_a_held_block_waits_for_the_step_and_a_second_one_does_not():
    with termination.graceful_stop():
        with pytest.raises(termination.Terminated):  # outside a step: at once
            _sigterm()
        with pytest.raises(termination.Terminated):
            with termination.held():
                _sigterm()
                ran_on = True  # the step goes on
                assert ran_on
                termination.stop_if_asked()  # between two steps: now
                pytest.fail("stop_if_asked did not stop")
        with pytest.raises(termination.Terminated):
            with termination.held():
                _sigterm()
                _sigterm()  # asked twice: at once
        with pytest.raises(termination.Terminated):
            with termination.held():  # it came during the last step: raised when the block ends
                _sigterm()
        assert termination.received() == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is not termination._on_signal  # the previous handler is back


def test_a_signal_the_process_ignores_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as nohup or a script's background job starts it
    try:
        with termination.graceful_stop():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is termination._on_signal
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum, raised", [(signal.SIGTERM, termination.Terminated),
                                            (signal.SIGINT, KeyboardInterrupt)])
def test_a_signal_mid_step_saves_that_step_and_resume_gives_the_same_model(tmp_path, capsys, monkeypatch,
                                                                           signum, raised):
    """Ctrl-C mid-step (most of a step's time) kept nothing either: the state on disk was the last
    periodic one. Both signals now let the step finish and keep its state."""
    recipe, ckpt, reference = uninterrupted(tmp_path, capsys)
    real = Trainer._train_step

    def step_that_gets_signalled(self, batch):
        if self.position.step == 17:  # the 18th step, between two periodic checkpoints (every 5: 15, 20)
            os.kill(os.getpid(), signum)
        return real(self, batch)

    monkeypatch.setattr(Trainer, "_train_step", step_that_gets_signalled)
    run = tmp_path / "t"
    # a test run as a shell's background job starts with SIGINT ignored, which graceful_stop leaves so
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with termination.graceful_stop(), pytest.raises(raised) as stopped:
            prune(load_recipe(recipe), model_path=ckpt, run_dir=run, output=run / "m")
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert isinstance(stopped.value, termination.Terminated) == (signum == signal.SIGTERM)
    assert torch.load(run / "state.pt", weights_only=False)["position"]["step"] == 18  # that step, finished
    monkeypatch.setattr(Trainer, "_train_step", real)
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--run-dir", run, "-o", run / "m", "--resume",
                              "--json", "-q"], capsys)
    assert code == 0, err
    assert_same_model(compact_weights(reference["outputs"]["module"]),
                      compact_weights(json.loads(out)["outputs"]["module"]))


def test_dpm_prune_sent_sigterm_says_so_exits_143_and_leaves_no_lock(tmp_path):
    recipe, ckpt = write_recipe(tmp_path, steps=STEPS), write_checkpoint(tmp_path)
    run = tmp_path / "k"
    cmd = [sys.executable, "-m", "dpm_cli", "prune", str(ckpt), "-r", str(recipe), "--run-dir", str(run),
           "-o", str(run / "m"), "training.steps=400"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    logged = lambda: (run / "metrics.jsonl").exists() and '"step": 15,' in (run / "metrics.jsonl").read_text()  # noqa: E731
    while not logged() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == termination.EXIT_CODE, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("terminated (SIGTERM): a dpm prune run keeps the state of its last finished step")
    stopped = next(line for line in lines if line.startswith("SIGTERM: stopped after step "))
    step = int(stopped.split("step ")[1].split(",")[0])
    assert 15 <= step < 400 and torch.load(run / "state.pt", weights_only=False)["position"]["step"] == step
    assert not [p.name for p in run.iterdir() if "lock" in p.name]


def _stopped_run(tmp_path, recipe, ckpt, at: int = 17):
    """A run stopped between two steps (as SIGTERM leaves it), its state that of step `at`."""
    def stop(step, _loss):
        if step == at:
            raise termination.Terminated

    run = tmp_path / "ci"
    with pytest.raises(termination.Terminated):
        prune(load_recipe(recipe), model_path=ckpt, run_dir=run, output=run / "m",
              hooks=TrainerHooks(on_step=stop))
    return run


def test_reuse_continues_a_run_of_the_same_inputs_that_a_timeout_stopped(tmp_path, capsys):
    """A CI job whose prune outlives the job's time limit is stopped by SIGTERM; the next job, with the
    run directory in its cache, ran `--reuse --force`, which started over: it never finished. Now an
    unfinished run of exactly these inputs is continued, to the model an uninterrupted run gives."""
    recipe, ckpt, reference = uninterrupted(tmp_path, capsys)
    run = _stopped_run(tmp_path, recipe, ckpt)
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--run-dir", run, "-o", run / "m", "--reuse", "--force",
                              "--json"], capsys)
    assert code == 0, err
    assert "holds an unfinished run of these inputs; continuing it" in err and "resuming at step 17" in err
    assert_same_model(compact_weights(reference["outputs"]["module"]),
                      compact_weights(json.loads(out)["outputs"]["module"]))


def test_reuse_starts_over_when_the_unfinished_run_had_other_inputs(tmp_path, capsys):
    recipe, ckpt = write_recipe(tmp_path, steps=STEPS), write_checkpoint(tmp_path)
    run = _stopped_run(tmp_path, recipe, ckpt)
    args = ["prune", ckpt, "-r", recipe, "--run-dir", run, "-o", run / "m", "--reuse", "training.steps=30"]
    code, out, err = run_cli(args, capsys)
    assert code == 2 and "already holds a run" in err  # without --force: refused, nothing touched
    code, out, err = run_cli([*args, "--force", "-q"], capsys)
    assert code == 0 and "continuing it" not in err and "resuming" not in err, err


def test_resume_refuses_another_checkpoint_than_the_run_started_from(tmp_path, capsys):
    recipe, ckpt = write_recipe(tmp_path), write_checkpoint(tmp_path)
    run = _stopped_run(tmp_path, recipe, ckpt, at=5)
    other = tmp_path / "other"
    other.mkdir()
    other_ckpt = write_checkpoint(other, hidden=(48, 32))
    state = torch.load(other_ckpt, weights_only=True)
    torch.save({k: v + 1 for k, v in state.items()}, other_ckpt)  # same shapes, other weights
    code, out, err = run_cli(["prune", other_ckpt, "-r", recipe, "--run-dir", run, "-o", run / "m", "--resume"], capsys)
    assert code == 2 and "was started from other inputs (checkpoint: sha256" in err, err
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--run-dir", run, "-o", run / "m", "--resume", "-q",
                              "training.optimizer.lr=0.02"], capsys)  # a recipe change resuming allows
    assert code == 0, err
