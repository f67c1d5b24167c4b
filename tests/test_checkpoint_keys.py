"""State dicts as training frameworks save them load into the factory's model.

A PyTorch Lightning checkpoint (`last.ckpt`: {"state_dict": {"model.conv1.weight": ...}, "epoch": ...})
was refused with "does not fit the model factory: missing ['conv1.weight', ...] (128 missing, 128
unexpected keys)": every key carried the attribute the LightningModule held the model in. DataParallel
(`module.`) and torch.compile (`_orig_mod.`) do the same. The one prefix is removed when the keys are
then exactly the model's, and a note says so; anything less than an exact match is still refused.
"""
from __future__ import annotations

import json

import pytest
import torch

from cli_helpers import mlp, run_cli, write_recipe
from dpm_cli.checkpoint import load_checkpoint, without_prefix
from dpm_cli.errors import CheckpointError

FACTORY = {"factory": "dpm_cli.models:mlp", "factory_kwargs": {"in_features": 64, "hidden": [48, 32], "num_classes": 10}}


def _state(prefix: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {f"{prefix}{k}": v for k, v in mlp(in_features=64, hidden=(48, 32), num_classes=10).state_dict().items()}


@pytest.mark.parametrize("prefix", ["model.", "module.", "_orig_mod.", "model._orig_mod."])
def test_the_one_prefix_every_key_carries_is_removed_when_the_rest_is_the_model(tmp_path, prefix):
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "global_step": 90, "pytorch-lightning_version": "2.4.0", "state_dict": _state(prefix),
                "optimizer_states": [], "hyper_parameters": {"lr": 0.1}}, path)
    loaded = load_checkpoint(path, **FACTORY)
    assert prefix in loaded.note and "read without it" in loaded.note
    for key, value in _state("").items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_a_prefix_is_only_removed_for_an_exact_match():
    own = list(_state(""))
    partial = {k: v for k, v in _state("model.").items() if not k.endswith("bias")}
    assert without_prefix(partial, own) == (partial, None)  # keys missing after it: not guessed
    mixed = {**_state("model."), "other.weight": torch.zeros(1)}
    assert without_prefix(mixed, own)[1] is None
    assert without_prefix(_state(""), own)[1] is None  # no prefix: as it is


def test_prune_and_report_say_they_removed_the_prefix(tmp_path, capsys):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": _state("model."), "epoch": 1}, path)
    recipe = write_recipe(tmp_path)
    code, out, err = run_cli(["prune", path, "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    assert any("carry the prefix 'model.'" in n for n in json.loads(out)["notes"])
    code, out, err = run_cli(["report", path, "-r", recipe, "--json"], capsys)
    assert code == 0 and "note: the checkpoint's keys carry the prefix 'model.'" in err, err
    json.loads(out)  # stdout stays JSON


def test_keys_that_do_not_fit_are_still_refused(tmp_path):
    path = tmp_path / "other.ckpt"
    state = _state("model.")
    state.pop(next(iter(state)))
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match="does not fit the model factory"):
        load_checkpoint(path, **FACTORY)


def test_a_lightning_checkpoint_with_pickled_hyper_parameters_names_them_and_loads_only_with_trust(tmp_path):
    """Its hyper_parameters were an argparse.Namespace: refused as "a pickled module" (it is a dict), and
    with --trust-checkpoint "unpickled a dict, not a torch.nn.Module": its state_dict was never read."""
    import argparse

    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": _state("model."), "hyper_parameters": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match=r"holds pickled objects \(argparse\.Namespace\): loading it runs code"
                                              r".*torch\.save\(ckpt\['state_dict'\], path\)"):
        load_checkpoint(path, **FACTORY)
    loaded = load_checkpoint(path, **FACTORY, trust=True)
    assert loaded.kind == "state_dict" and "'model.'" in loaded.note


@pytest.mark.parametrize("key", ["model_state_dict", "model"])
def test_the_weights_under_a_training_scripts_key_are_read_with_a_note(tmp_path, key):
    """PyTorch's own checkpoint tutorial saves {"epoch", "model_state_dict", "optimizer_state_dict", "loss"};
    DeiT/MAE-style scripts {"model", "optimizer", "epoch"}: both were "holds dict, not a state_dict"."""
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 5, key: _state(""), "optimizer_state_dict": {}, "loss": 0.3}, path)
    loaded = load_checkpoint(path, **FACTORY)
    assert loaded.note == f"read the weights under the checkpoint's {key!r} key"
    for name, value in _state("").items():
        assert torch.equal(loaded.model.state_dict()[name], value), name
    torch.save({"epoch": 5, "optimizer": {}}, path)  # no weights under any key: still one line
    with pytest.raises(CheckpointError, match="holds dict, not a state_dict"):
        load_checkpoint(path, **FACTORY)


def test_a_trusted_checkpoint_dict_holding_the_module_itself_gives_that_module(tmp_path):
    torch.manual_seed(0)
    model = mlp(in_features=64, hidden=(48, 32), num_classes=10)
    path = tmp_path / "whole.pt"
    torch.save({"model": model, "epoch": 2}, path)
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(path, **FACTORY)
    loaded = load_checkpoint(path, trust=True)
    assert loaded.kind == "module" and all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(),
                                                                              model.state_dict().values()))
