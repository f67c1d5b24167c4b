"""Bad input through the CLI: one clear line, the documented exit code, no traceback, nothing written."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cli_helpers import run_cli, write_checkpoint, write_recipe
from dpm_cli.models import mlp


def expect_error(args, capsys, code: int, *phrases: str) -> str:
    got, out, err = run_cli(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, err
    assert len(lines) == 1, f"expected one line, got: {err}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def no_outputs(tmp_path) -> bool:
    return not list((tmp_path / "run").glob("model.*")) if (tmp_path / "run").exists() else True


@pytest.fixture
def recipe(tmp_path):
    return write_recipe(tmp_path)


@pytest.fixture
def ckpt(tmp_path):
    return write_checkpoint(tmp_path)


def test_missing_checkpoint(tmp_path, recipe, capsys):
    expect_error(["prune", tmp_path / "nope.pt", "-r", recipe], capsys, 2, "no such checkpoint")
    assert no_outputs(tmp_path)


def test_corrupt_checkpoint(tmp_path, recipe, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    expect_error(["prune", bad, "-r", recipe], capsys, 2, "not a readable PyTorch checkpoint")
    assert no_outputs(tmp_path)


def test_wrong_factory_module(tmp_path, ckpt, capsys):
    recipe = write_recipe(tmp_path)
    expect_error(["prune", ckpt, "-r", recipe, "model.factory=no_such_pkg.models:net"], capsys, 2,
                 "cannot import module")


def test_wrong_factory_attribute(tmp_path, ckpt, recipe, capsys):
    expect_error(["prune", ckpt, "-r", recipe, "model.factory=dpm_cli.models:resnet9000"], capsys, 2,
                 "has no attribute")


def test_state_dict_does_not_fit_factory(tmp_path, recipe, capsys):
    other = write_checkpoint(tmp_path, hidden=(40, 32))
    expect_error(["prune", other, "-r", recipe], capsys, 2, "does not fit the model factory", "shape")


def test_pickled_module_refused_without_trust(tmp_path, recipe, capsys):
    path = tmp_path / "module.pt"
    torch.save(mlp(in_features=64, hidden=(48, 32)), path)
    expect_error(["prune", path, "-r", recipe], capsys, 2, "pickled module", "--trust-checkpoint")
    code, out, err = run_cli(["prune", path, "-r", recipe, "--trust-checkpoint", "--quiet", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert "artifact" not in summary["outputs"] and "module" in summary["outputs"]
    assert any("artifact not written" in note for note in summary["notes"])


def test_malformed_yaml(tmp_path, ckpt, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\npruning: [unclosed\n")
    expect_error(["prune", ckpt, "-r", bad], capsys, 2, "bad.yaml")


def test_unknown_key_suggests(tmp_path, ckpt, capsys):
    recipe = write_recipe(tmp_path, extra="objective:\n  kindd: distill\n")
    expect_error(["prune", ckpt, "-r", recipe], capsys, 2, "objective.kindd", "did you mean 'kind'")


def test_out_of_range_budget(tmp_path, ckpt, recipe, capsys):
    expect_error(["prune", ckpt, "-r", recipe, "pruning.budget.keep=1.5"], capsys, 2, "pruning.budget.keep",
                 "out of range")


def test_wrong_type(tmp_path, ckpt, recipe, capsys):
    expect_error(["prune", ckpt, "-r", recipe, "training.optimizer.lr=fast"], capsys, 2,
                 "training.optimizer.lr", "expected a number")


def test_missing_recipe_file(tmp_path, ckpt, capsys):
    expect_error(["prune", ckpt, "-r", tmp_path / "none.yaml"], capsys, 2, "no such recipe")


def test_missing_recipe_option(ckpt, capsys):
    expect_error(["prune", ckpt], capsys, 2, "--recipe")


def test_missing_data_file(tmp_path, ckpt, recipe, capsys):
    expect_error(["prune", ckpt, "-r", recipe, "data.source=tensors", f"data.path={tmp_path / 'x.pt'}"],
                 capsys, 2, "data.path")


def test_empty_dataset(tmp_path, ckpt, recipe, capsys):
    data = tmp_path / "empty.npz"
    np.savez(data, inputs=np.zeros((0, 1, 8, 8), np.float32), labels=np.zeros((0,), np.int64))
    expect_error(["prune", ckpt, "-r", recipe, "data.source=tensors", f"data.path={data}", "data.num_samples=null"],
                 capsys, 2, "empty")


def test_labels_do_not_fit_model(tmp_path, ckpt, recipe, capsys):
    data = tmp_path / "many.npz"
    rng = np.random.default_rng(0)
    np.savez(data, inputs=rng.normal(size=(200, 1, 8, 8)).astype(np.float32),
             labels=rng.integers(0, 20, size=200))
    expect_error(["prune", ckpt, "-r", recipe, "data.source=tensors", f"data.path={data}", "data.num_samples=null"],
                 capsys, 2, "20 classes", "10 logits")


def test_input_shape_mismatch(tmp_path, ckpt, recipe, capsys):
    expect_error(["prune", ckpt, "-r", recipe, "model.input_shape=[1,3,8,8]"], capsys, 2, "input_shape")


def test_decay_longer_than_training(tmp_path, ckpt, recipe, capsys, monkeypatch):
    """Said before the checkpoint is hashed or loaded and the data read (with a 70 MB text file, after
    2.5 minutes), and by `dpm validate`, which said "ok"."""
    import importlib

    pipeline = importlib.import_module("dpm_cli.pipeline.prune")  # the module; dpm_cli.pipeline.prune is a function

    def never(*args, **kwargs):
        raise AssertionError("loaded the model and data before refusing the schedule")

    monkeypatch.setattr(pipeline, "load_context", never)
    monkeypatch.setattr(pipeline.prov, "record", never)
    expect_error(["prune", ckpt, "-r", recipe, "pruning.decay_steps=500"], capsys, 2, "decay phase ends")
    assert no_outputs(tmp_path)
    expect_error(["validate", recipe, "pruning.decay_steps=500"], capsys, 2, "decay phase ends at step")


def test_unreachable_budget(tmp_path, ckpt, recipe, capsys):
    expect_error(["prune", ckpt, "-r", recipe, "pruning.budget.keep=0.01", "pruning.max_layer_ratio=0.3"],
                 capsys, 2, "cannot be reached")


def test_ignore_pattern_matches_nothing(tmp_path, ckpt, recipe, capsys):
    expect_error(["prune", ckpt, "-r", recipe, "pruning.ignore=[encoder.*]"], capsys, 2, "matches no module")


def test_ignore_everything(tmp_path, ckpt, recipe, capsys):
    expect_error(["prune", ckpt, "-r", recipe, "pruning.ignore=['*']"], capsys, 2, "nothing left to prune")


def test_output_exists_is_not_overwritten(tmp_path, ckpt, recipe, capsys):
    out = tmp_path / "out"
    out.with_name("out.pt").write_text("precious")
    expect_error(["prune", ckpt, "-r", recipe, "--output", out], capsys, 2, "exists", "--force")
    assert out.with_name("out.pt").read_text() == "precious"
    assert not (tmp_path / "run").exists()


def test_output_over_input_refused(tmp_path, ckpt, recipe, capsys):
    expect_error(["prune", ckpt, "-r", recipe, "--output", tmp_path / "dense", "--force"], capsys, 2,
                 "never overwrites its input")


def test_output_folder_not_writable(tmp_path, ckpt, recipe, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    expect_error(["prune", ckpt, "-r", recipe, "--output", blocker / "model"], capsys, 2, "not a folder")


def test_existing_run_needs_resume_or_force(tmp_path, ckpt, recipe, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".dpm-run").write_text("{}")
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    expect_error(["prune", ckpt, "-r", recipe], capsys, 2, "--resume", "--force")


def test_folder_of_other_files_is_not_a_run(tmp_path, ckpt, recipe, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old.txt").write_text("x")
    expect_error(["prune", ckpt, "-r", recipe, "--force"], capsys, 2, "is not a dpm run directory")
    assert (tmp_path / "run" / "old.txt").read_text() == "x"


def test_resume_without_state(tmp_path, ckpt, recipe, capsys):
    expect_error(["prune", ckpt, "-r", recipe, "--resume"], capsys, 2, "no resumable state")


def test_cross_entropy_without_labels(tmp_path, ckpt, recipe, capsys):
    data = tmp_path / "unlabeled.pt"
    torch.save({"inputs": torch.randn(100, 1, 8, 8)}, data)
    expect_error(["prune", ckpt, "-r", recipe, "data.source=tensors", f"data.path={data}", "data.num_samples=null"],
                 capsys, 2, "needs labels", "distill")


def test_cuda_requested_without_cuda(tmp_path, ckpt, recipe, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    expect_error(["prune", ckpt, "-r", recipe, "training.device=cuda"], capsys, 2, "no CUDA device")


def test_two_model_paths(tmp_path, ckpt, recipe, capsys):
    expect_error(["prune", ckpt, ckpt, "-r", recipe], capsys, 2, "expected one MODEL")


def test_nan_loss_stops_and_keeps_last_good_state(tmp_path, ckpt, recipe, capsys):
    line = expect_error(["prune", ckpt, "-r", recipe, "--quiet", "training.optimizer.lr=1.0e+6",
                         "training.optimizer.momentum=0.0"], capsys, 1, "loss became", "last good state")
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert no_outputs(tmp_path)
    assert "lr" in line


def test_unknown_option_is_a_usage_error(capsys):
    code, _, err = run_cli(["prune", "--no-such-option"], capsys)
    assert code == 2 and "No such option" in err and "Traceback" not in err
