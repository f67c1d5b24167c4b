"""The pickle-free dpm artifact: enough to rebuild a compact model without unpickling any code.

It holds the model factory and its keyword arguments, the example input shape, the torch-pruning
pruning history of every dpm run the model went through (one stage per run, so a pruned model can be
pruned again), and the weights. `rebuild_artifact` builds the dense architecture from the factory,
replays each stage with torch-pruning, then loads the weights. Everything is read with
`torch.load(weights_only=True)`: tensors, strings, numbers, lists and dicts only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from .checkpoint import ARTIFACT_FORMAT, ARTIFACT_VERSION, build_from_factory, load_state_dict_strict
from .errors import CheckpointError


@dataclass
class Provenance:
    """How to rebuild a model's architecture: factory, arguments, input shape and pruning stages."""

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: list[int] | None = None
    stages: list[list] = field(default_factory=list)

    def with_stage(self, history: list) -> "Provenance":
        return Provenance(self.factory, dict(self.kwargs), self.input_shape, [*self.stages, history])


def make_artifact(model: nn.Module, provenance: Provenance, metadata: dict[str, Any] | None = None) -> dict:
    if provenance.input_shape is None:
        raise CheckpointError("an artifact needs the example input shape (recipe model.input_shape)")
    return {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "factory": provenance.factory,
        "factory_kwargs": dict(provenance.kwargs),
        "input_shape": list(provenance.input_shape),
        "stages": [[_entry(step) for step in stage] for stage in provenance.stages],
        "metadata": dict(metadata or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }


def _entry(step: list) -> list:
    """One pruning-history step as plain data: torch-pruning's [module, is_out, idxs], or dpm's head
    removal [HISTORY_TAG, module, heads] (see `engine.heads.head_history`)."""
    first, second, idxs = step
    second = str(second) if isinstance(second, str) else bool(second)
    return [str(first), second, [int(i) for i in idxs]]


def provenance_of(obj: dict) -> Provenance:
    return Provenance(obj["factory"], dict(obj.get("factory_kwargs", {})), list(obj["input_shape"]),
                      [list(stage) for stage in obj.get("stages", [])])


def rebuild_artifact(obj: dict, source: str = "<artifact>") -> nn.Module:
    if obj.get("version") != ARTIFACT_VERSION:
        raise CheckpointError(f"{source}: dpm artifact version {obj.get('version')} is not supported "
                              f"(this dpm reads version {ARTIFACT_VERSION})")
    prov = provenance_of(obj)
    model = build_from_factory(prov.factory, prov.kwargs)
    replay_stages(model, prov)
    load_state_dict_strict(model, obj["state_dict"], source)
    return model


def replay_stages(model: nn.Module, prov: Provenance) -> None:
    """Apply each recorded pruning stage, each on a graph traced from the model as it then was."""
    import torch_pruning as tp  # here, not at the top: loading a plain state_dict needs no tracer

    was_training = model.training
    example = torch.zeros(prov.input_shape)
    for stage in prov.stages:
        from .engine.heads import HISTORY_TAG, Unsupported, replay_heads

        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        try:
            graph.load_pruning_history([list(step) for step in stage if step[0] != HISTORY_TAG])
            for step in stage:  # attention heads: removed by dpm after torch-pruning's steps
                if step[0] == HISTORY_TAG:
                    replay_heads(model, step)
        except (AttributeError, IndexError, AssertionError, Unsupported) as err:
            raise CheckpointError(f"the pruning history does not fit the factory's model ({err}); "
                                  "was the artifact made with another version of the model code?") from err
    model.train(was_training)
