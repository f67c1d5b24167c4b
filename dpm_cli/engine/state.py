"""Per-structure decay state and the event log, both serialisable for resume."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

ACTIVE, DECAYING, PRUNED = 0, 1, 2


class GroupState:
    """Status, decay counter and initial norm of every channel of one group (kept on the CPU).

    The engine keeps one GroupState over all channels of all groups (see `FlatLayout`) and hands out
    per-group views of it, so both per-group and whole-model code update the same numbers.
    """

    FIELDS = ("status", "n", "l_init", "selected_round", "released_round", "streak")

    def __init__(self, channels: int):
        self.status = torch.zeros(channels, dtype=torch.int8)
        self.n = torch.zeros(channels, dtype=torch.int32)
        self.l_init = torch.zeros(channels, dtype=torch.float32)
        self.selected_round = torch.full((channels,), -1, dtype=torch.int32)
        self.released_round = torch.full((channels,), -1, dtype=torch.int32)
        self.streak = torch.zeros(channels, dtype=torch.int32)

    def view(self, start: int, size: int) -> "GroupState":
        """A GroupState whose fields are views of channels [start, start + size) of this one."""
        part = GroupState.__new__(GroupState)
        for f in self.FIELDS:
            setattr(part, f, getattr(self, f)[start:start + size])
        return part

    def mask(self, status: int) -> torch.Tensor:
        return self.status == status

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f: getattr(self, f).clone() for f in self.FIELDS}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for f in self.FIELDS:
            if state[f].shape != getattr(self, f).shape:
                raise ValueError(f"state for {f} has shape {tuple(state[f].shape)}")
            getattr(self, f).copy_(state[f])  # in place: the fields may be views of a larger state


@dataclass
class Event:
    """One decision of the engine. kind: selected | release | replacement | suppressed | pruned."""

    step: int
    kind: str
    group: str
    index: int
    round: int
    c_rate: float | None = None
    c_len: float | None = None
    note: str = ""
    # The structure's joint norm right after the event's step: L_init for selected and replacement,
    # the free norm at a release, exactly 0.0 when pruned. Plots rebuild each ramp from it.
    norm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Progress:
    """What the training loop shows: counts of structures per status and the projected cost."""

    step: int
    round: int
    decaying: int
    pruned: int
    released: int
    macs_kept: float  # projected fraction of the original, counting decaying structures as removed
    params_kept: float
    finished: bool
