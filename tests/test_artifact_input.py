"""Broken checkpoints and malformed artifacts: exit 2, one line, checked before anything is imported."""
from __future__ import annotations

import os
import sys
import time
import uuid

import pytest
import torch

import dpm_cli
from artifact_helpers import MLP_KWARGS, plain_artifact, pruned_artifact, save, write_marker_module
from cli_helpers import run_cli, write_recipe
from dpm_cli.errors import CheckpointError


def _one_line_exit_2(args, capsys, *fragments: str) -> str:
    code, _, err = run_cli(args, capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("command", ["report", "check", "plan", "prune", "load"])
def test_random_bytes_named_pt(tmp_path, capsys, command):
    path = tmp_path / "model.pt"
    path.write_bytes(os.urandom(4096))
    recipe = write_recipe(tmp_path)
    args = {"report": ["report", path], "check": ["check", path, "--max-params", "1G"],
            "plan": ["plan", path, "-r", recipe], "prune": ["prune", path, "-r", recipe, "--quiet"]}
    if command == "load":
        with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
            dpm_cli.load(path)
        return
    err = _one_line_exit_2(args[command], capsys, "not a readable PyTorch checkpoint")
    assert "IndexError" not in err


@pytest.mark.parametrize("data", [b"", b"\x80\x02]q\x00.", b"PK\x03\x04" + b"\x00" * 40, b"\x80" * 100],
                         ids=["empty", "pickled-list", "zip-header", "protocol-128"])
def test_truncated_or_foreign_files(tmp_path, capsys, data):
    path = tmp_path / "m.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError):
        dpm_cli.load(path)
    _one_line_exit_2(["report", path, "--input-shape", "1,64"], capsys)


def test_checkpoint_argument_that_is_a_directory(tmp_path, capsys):
    _one_line_exit_2(["report", tmp_path], capsys, "is a directory")
    with pytest.raises(CheckpointError, match="is a directory"):
        dpm_cli.load(tmp_path)


def test_checkpoint_that_is_not_a_regular_file(tmp_path, capsys):
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)  # opening it would block forever
    _one_line_exit_2(["report", fifo], capsys, "not a regular file")
    _one_line_exit_2(["report", tmp_path / "missing.pt"], capsys, "no such checkpoint file")


def _drop(key):
    return lambda a: a.pop(key)


def _set(key, value):
    return lambda a: a.__setitem__(key, value)


MALFORMED = {
    "missing factory": (_drop("factory"), "'factory'"),
    "factory not a string": (_set("factory", ["dpm_cli.models", "mlp"]), "'factory'"),
    "kwargs not a mapping": (_set("factory_kwargs", [64, [12, 8], 10]), "'factory_kwargs'"),
    "kwargs keys not names": (_set("factory_kwargs", {"in features": 64}), "'factory_kwargs'"),
    "negative input_shape": (_set("input_shape", [1, -1, 8, 8]), "'input_shape'"),
    "float input_shape": (_set("input_shape", [1, 1.5, 8, 8]), "'input_shape'"),
    "bool input_shape": (_set("input_shape", [True, 1, 8, 8]), "'input_shape'"),
    "missing input_shape": (_drop("input_shape"), "'input_shape'"),
    "huge input_shape": (_set("input_shape", [1, 1, 100000, 100000]), "GiB"),
    "stages not a list": (_set("stages", {"0": []}), "'stages' must be a list"),
    "stage not a list": (_set("stages", ["body.1"]), "stage 0"),
    "stage step malformed": (_set("stages", [[["body.1", "yes", [0]]]]), "stage 0"),
    "unknown removal tag": (_set("stages", [[["dpm:other", "body.1", [0]]]]), "only a head or expert removal"),
    "negative channel index": (_set("stages", [[["body.1", True, [-1]]]]), "stage 0"),
    "state_dict value not a tensor": (lambda a: a["state_dict"].__setitem__("head.bias", [0.0] * 10), "head.bias"),
    "state_dict missing": (_drop("state_dict"), "'state_dict'"),
    "metadata not a mapping": (_set("metadata", [1, 2]), "'metadata'"),
    "version unknown": (_set("version", 99), "version 99"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_artifact_fields(tmp_path, capsys, monkeypatch, case):
    """Each field is checked before the factory is even looked at: here it names a module that would
    announce its import, and it is never imported."""
    module = f"evilpkg_test_marker_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "MARKER"
    write_marker_module(tmp_path, module, marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    art = plain_artifact(f"{module}:build")
    mutate, fragment = MALFORMED[case]
    mutate(art)
    path = save(art, tmp_path / "a.dpm.pt")
    _one_line_exit_2(["report", path, "--factory", f"{module}:build"], capsys, fragment)
    assert not marker.exists() and module not in sys.modules


def test_pruning_history_that_does_not_fit(tmp_path):
    art = pruned_artifact()
    art["stages"] = [[["body.7", True, [0]]]]  # no such layer
    with pytest.raises(CheckpointError, match="pruning history does not fit"):
        dpm_cli.load(save(art, tmp_path / "a.dpm.pt"))
    art["stages"] = [[["dpm:experts", "body.0", [0]]]]  # an expert removal naming a plain Linear
    with pytest.raises(CheckpointError, match="pruning history does not fit"):
        dpm_cli.load(save(art, tmp_path / "e.dpm.pt"))
    art = pruned_artifact()
    art["input_shape"] = [1, 3, 5]  # 15 features into a 64-feature MLP: the trace fails
    with pytest.raises(CheckpointError, match="input_shape"):
        dpm_cli.load(save(art, tmp_path / "b.dpm.pt"))


def test_weights_that_do_not_fit(tmp_path):
    art = plain_artifact()
    art["state_dict"]["head.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="head.weight has shape"):
        dpm_cli.load(save(art, tmp_path / "a.dpm.pt"))


@pytest.mark.parametrize("factory,kwargs", [
    ("dpm_cli.models:mlp", {**MLP_KWARGS, "hidden": [10**9]}),
    ("dpm_cli.models:mlp", {**MLP_KWARGS, "num_classes": 2**31}),
    ("dpm_cli.models:mlp", {**MLP_KWARGS, "hidden": [10**5, 10**5, 10**5]}),  # too big only in sum
    ("dpm_cli.models:resnet_cifar", {"depth": 2**31}),  # 357 million blocks: stopped while building
    ("dpm_cli.models:vit_tiny", {"depth": 10**8}),
], ids=["width", "classes", "sum", "resnet-depth", "vit-depth"])
def test_absurd_size_refused_before_allocating(tmp_path, capsys, monkeypatch, factory, kwargs):
    monkeypatch.setattr("dpm_cli.artifact.MAX_MODULES", 500)  # 20,000 in use: the same stop, sooner
    path = save(plain_artifact(factory, kwargs), tmp_path / "a.dpm.pt")
    start = time.monotonic()
    err = _one_line_exit_2(["report", path], capsys, "GiB", "modules")
    assert time.monotonic() - start < 10
    assert "more than this machine's" in err


def test_artifact_kwargs_that_the_builder_rejects(tmp_path):
    path = save(plain_artifact("dpm_cli.models:mlp", {**MLP_KWARGS, "hidden": [0]}), tmp_path / "a.dpm.pt")
    with pytest.raises(dpm_cli.errors.InputError):
        dpm_cli.load(path)
    path = save(plain_artifact("dpm_cli.models:mlp", {**MLP_KWARGS, "depth": 3}), tmp_path / "b.dpm.pt")
    with pytest.raises(dpm_cli.errors.InputError, match="rejected its arguments"):
        dpm_cli.load(path)
