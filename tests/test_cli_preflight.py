"""`dpm prune` / `dpm plan` stop before training when removal would break the model, and
prune_through_norm fine-tunes after removal instead of refusing."""
from __future__ import annotations

import json
import time

import torch
from engine_helpers import HardcodedSplit, NormResidual

from cli_helpers import run_cli

RECIPE = """\
version: 1
model:
  factory: engine_helpers:{factory}
  input_shape: [1, 1, 8, 8]
data:
  source: digits
  batch_size: 64
  num_samples: 640
pruning:
  budget: {{kind: macs, keep: {keep}}}
  decay_steps: 2
training:
  steps: 12
  log_every: 4
  optimizer: {{name: sgd, lr: 0.05}}
output:
  dir: {run}
"""


def _setup(tmp_path, model, keep: float):
    torch.manual_seed(0)
    ckpt = tmp_path / "dense.pt"
    torch.save(model.state_dict(), ckpt)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(factory=type(model).__name__, keep=keep, run=tmp_path / "run"))
    return ckpt, recipe


def test_prune_fails_in_seconds_before_training_naming_the_ignore(tmp_path, capsys):
    ckpt, recipe = _setup(tmp_path, HardcodedSplit(), 0.6)
    start = time.monotonic()
    code, _, err = run_cli(["prune", ckpt, "-r", recipe], capsys)
    assert time.monotonic() - start < 30
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert code == 2 and "Traceback" not in err
    assert lines[-1].startswith("error: preflight: removing channels of group fc2 breaks the model")
    assert "add 'fc2' to pruning.ignore" in lines[-1]
    assert not any("step" in line for line in lines[:-1])  # no training step ran
    run = tmp_path / "run"
    assert not (run / "state.pt").exists() and not list(run.glob("model.*"))
    # The suggested ignore works.
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "pruning.ignore=[fc2]", "--json", "--force"], capsys)
    assert code == 0, err
    assert json.loads(out)["equivalence_error"] <= 1e-5


def test_plan_runs_the_preflight_too(tmp_path, capsys):
    ckpt, recipe = _setup(tmp_path, HardcodedSplit(), 0.6)
    code, _, err = run_cli(["plan", ckpt, "-r", recipe], capsys)
    assert code == 2 and "add 'fc2' to pruning.ignore" in err


def test_prune_through_norm_reports_drift_and_fine_tunes_after_removal(tmp_path, capsys):
    ckpt, recipe = _setup(tmp_path, NormResidual(), 0.5)
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "pruning.prune_through_norm=true",
                              "pruning.post_removal_steps=3", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["equivalence_error"] > 1e-6  # the measured drift, not a refusal
    assert any(n.startswith("pruned through normalisation layers: removal drift") and n.endswith("then 3 fine-tuning steps")
               for n in summary["notes"])
    assert "fine-tuning the compact model for 3 steps" in err
    assert abs(summary["macs_after"] / summary["macs_before"] - 0.5) <= 0.01


def test_a_refusal_before_training_leaves_the_run_folder_reusable_without_force(tmp_path, capsys):
    """The preflight needs the built pruner, so it came after the run folder was prepared: the marker
    and recipe it left made the next run there need --force. They are taken back on a refusal."""
    ckpt, recipe = _setup(tmp_path, HardcodedSplit(), 0.6)
    code, _, err = run_cli(["prune", ckpt, "-r", recipe], capsys)
    assert code == 2 and "preflight" in err
    run = tmp_path / "run"
    assert not [p.name for p in run.iterdir() if not p.name.endswith(".dpm-lock")] if run.exists() else True
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "pruning.ignore=[fc2]", "--json"], capsys)
    assert code == 0, err
