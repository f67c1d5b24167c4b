"""An interrupted run (Ctrl-C or kill -9) resumed with --resume ends with the same compact model."""
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
from dpm_cli.pipeline import prune
from dpm_cli.recipe import load_recipe
from dpm_cli.training.loop import TrainerHooks

STEPS = 40


def compact_weights(path):
    return torch.load(path, weights_only=False).state_dict()


def uninterrupted(tmp_path, capsys):
    recipe = write_recipe(tmp_path, steps=STEPS)
    ckpt = write_checkpoint(tmp_path)
    ref = tmp_path / "ref"
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--run-dir", ref, "-o", ref / "m", "--json", "-q"], capsys)
    assert code == 0, err
    return recipe, ckpt, json.loads(out)


def assert_same_model(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_after_ctrl_c_gives_the_same_model(tmp_path, capsys):
    recipe, ckpt, reference = uninterrupted(tmp_path, capsys)

    def interrupt(step, _loss):
        if step == 17:  # mid-decay of the later steps, between two checkpoints (every 5)
            raise KeyboardInterrupt

    run = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        prune(load_recipe(recipe), model_path=ckpt, run_dir=run, output=run / "m",
              hooks=TrainerHooks(on_step=interrupt))
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--run-dir", run, "-o", run / "m", "--resume",
                              "--json", "-q"], capsys)
    assert code == 0, err
    resumed = json.loads(out)
    assert_same_model(compact_weights(reference["outputs"]["module"]), compact_weights(resumed["outputs"]["module"]))
    events = lambda d: (d / "events.jsonl").read_text()  # noqa: E731
    assert events(run) == events(tmp_path / "ref")


def test_resume_after_kill_9_gives_the_same_model(tmp_path, capsys):
    recipe, ckpt = write_recipe(tmp_path, steps=STEPS), write_checkpoint(tmp_path)
    run = tmp_path / "k"
    cmd = [sys.executable, "-m", "dpm_cli", "prune", str(ckpt), "-r", str(recipe), "--run-dir", str(run),
           "-o", str(run / "m"), "-q", "training.steps=400"]
    # the killed run computes with this process's thread count (conftest pins it; OMP_NUM_THREADS may differ):
    # float sums are bit-identical only at equal thread counts
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    # Wait past a few periodic saves (state.pt itself is written at step 0 already).
    logged = lambda: (run / "metrics.jsonl").exists() and '"step": 15,' in (run / "metrics.jsonl").read_text()  # noqa: E731
    while not logged() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run / "state.pt").exists(), "the run saved resumable state before it was killed"
    # the killed run used 400 steps; finish it with the same recipe and overrides
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--run-dir", run, "-o", run / "m", "--resume",
                              "--json", "-q", "training.steps=400"], capsys)
    assert code == 0, err
    full = tmp_path / "full"
    code, out_full, err = run_cli(["prune", ckpt, "-r", recipe, "--run-dir", full, "-o", full / "m", "--json", "-q",
                                   "training.steps=400"], capsys)
    assert code == 0, err
    assert_same_model(compact_weights(json.loads(out)["outputs"]["module"]),
                      compact_weights(json.loads(out_full)["outputs"]["module"]))
