"""The pickle-free dpm artifact of a transformers model: its class name and plain config, its example
token inputs and its pruning history, so that a shape no standard config can hold (a different head
count or FFN width per layer) still ships without pickle.

The artifact names the allow-listed `dpm_cli.models.hf_config:from_config` with
`{"architecture": class name, "config": config dict}`; the dict is stored without the keys that say
where the model came from (`_name_or_path`, ...), and a config that would make a loader read a file,
fetch from the hub or run remote code (`dpm_cli.trust`) is not stored at all: the caller says why.
Token ids cannot be made up from a shape, so the example inputs are stored as tensors.
"""
from __future__ import annotations

import json
from typing import Any

import torch
import torch.nn as nn

from ..artifact import Provenance
from ..batch import move
from ..errors import CheckpointError
from ..models.hf_config import REFUSED, config_problem
from ..trust import check_plain, load_in_kwargs

HF_FACTORY = "dpm_cli.models.hf_config:from_config"
# Keys of a config's dict that record where and with what it was saved, not what the model is.
DROPPED = REFUSED | {"transformers_version", "architectures"}


def stored_config(config: Any) -> dict[str, Any]:
    """The config as plain JSON data (label ids as string keys), without DROPPED keys at any depth."""
    return _drop(json.loads(config.to_json_string(use_diff=False)))


def _drop(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop(v) for k, v in value.items() if k not in DROPPED}
    if isinstance(value, list):
        return [_drop(v) for v in value]
    return value


def hf_provenance(model: nn.Module, example_inputs: Any) -> tuple[Provenance | None, str | None]:
    """How a dpm artifact rebuilds `model` (its config as it is now, before pruning), or why it cannot."""
    from .load import import_transformers

    transformers = import_transformers()  # transformers 5, or one line

    name = type(model).__name__
    if getattr(transformers, name, None) is not type(model):
        return None, f"{name} is not a class of the transformers package, which is all an artifact may name"
    kwargs = {"architecture": name, "config": stored_config(model.config)}
    try:
        check_plain(kwargs, "its config")
    except CheckpointError as err:
        return None, str(err)
    why = load_in_kwargs(kwargs) or config_problem(kwargs["config"])
    if why:
        return None, f"its config holds {why}, which an artifact may not name (it could make a loader read files)"
    example = move(example_inputs, "cpu")
    if torch.is_tensor(example) and example.is_floating_point():
        return Provenance(HF_FACTORY, kwargs, list(example.shape)), None
    if torch.is_tensor(example) or (isinstance(example, dict) and all(torch.is_tensor(v) for v in example.values())):
        return Provenance(HF_FACTORY, kwargs, None, [], example), None
    return None, "its example input is neither a tensor nor a mapping of names to tensors"
