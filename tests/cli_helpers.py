"""A tiny digits recipe and checkpoint, and a way to run the CLI in-process."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dpm_cli.cli.app import main
from dpm_cli.models import mlp

RECIPE = """\
version: 1
model:
  factory: dpm_cli.models:mlp
  kwargs: {{in_features: 64, hidden: [48, 32], num_classes: 10}}
  input_shape: [1, 1, 8, 8]
data:
  source: digits
  batch_size: 64
  num_samples: 640
pruning:
  budget: {{kind: macs, keep: 0.5}}
  decay_steps: 4
training:
  steps: {steps}
  checkpoint_every: 5
  log_every: 5
  optimizer: {{name: sgd, lr: 0.05}}
output:
  dir: {run}
"""


def write_recipe(tmp_path: Path, steps: int = 14, extra: str = "") -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(steps=steps, run=tmp_path / "run") + extra)
    return path


def write_checkpoint(tmp_path: Path, hidden=(48, 32)) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "dense.pt"
    torch.save(mlp(in_features=64, hidden=hidden, num_classes=10).state_dict(), path)
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `dpm ARGS` in-process; return (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def exit_code(args: list[str]) -> int:
    """Run `dpm ARGS` in-process through main(), which maps errors to exit codes; return the code."""
    try:
        main([str(a) for a in args])
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.fixture
def setup(tmp_path):
    return write_recipe(tmp_path), write_checkpoint(tmp_path)
