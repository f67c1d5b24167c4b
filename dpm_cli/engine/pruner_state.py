"""A DecayPruner's resumable state: what `state_dict()` saves and `load_state_dict()` checks and restores.

Everything that decides the rest of a run is saved (per-group states, round, events, the round's
activations), and a state is refused when it belongs to another model, other structures or other options.
"""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .state import Event


def pruner_state(pruner: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "config": pruner.config.to_dict(),
        "steps_done": pruner.steps_done,
        "round": pruner.round,
        "groups": {g.name: st.state_dict() for g, st in zip(pruner.groups, pruner.states)},
        # the structures of multi-channel groups (grouped-conv blocks, heads): unit of each channel
        "units": {g.name: g.unit_of.tolist() for g in pruner.groups if g.unit_of is not None},
        "events": [e.to_dict() for e in pruner.events],
        # the round's activations, which its Self-Rectifying replacements rank by after a resume
        "activations": pruner.activations.state_dict(),
    }


def load_pruner_state(pruner: Any, state: dict[str, Any]) -> None:
    """Check `state` against the pruner's model and options, then restore it (not the weights)."""
    names = [g.name for g in pruner.groups]
    if sorted(state["groups"]) != sorted(names):
        raise ConfigError("the saved DPM state belongs to a different model or ignore list")
    units = {g.name: g.unit_of.tolist() for g in pruner.groups if g.unit_of is not None}
    if state.get("units", {}) != units:
        raise ConfigError("the saved DPM state has other multi-channel structures (grouped-conv blocks or "
                          "attention heads) than this model; resume with the same model and dpm version")
    if state["config"] != pruner.config.to_dict():
        raise ConfigError("the saved DPM state was made with other pruning options; resume with the same recipe")
    for g, st in zip(pruner.groups, pruner.states):
        st.load_state_dict(state["groups"][g.name])
    pruner.steps_done, pruner.round = int(state["steps_done"]), int(state["round"])
    pruner.events = [Event(**e) for e in state["events"]]
    pruner.activations.load_state_dict(state.get("activations"))
