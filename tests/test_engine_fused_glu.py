"""A projection whose output is split in halves that are combined again (a fused gated FFN: Phi-3's
`gate, up = gate_up_proj(x).chunk(2)`, then `down(act(gate) * up)`) decays and is removed in units of
two rows, row i of each half, as torch-pruning removes them.

Found on Phi-3 / ModernBERT, refused before as "gate and up fused in one Linear": torch-pruning couples
row i with row i + I, but keeps only one root index per column of the down projection, so each row
looked like a channel of its own.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dpm_cli.engine import DecayPruner, DPMConfig

HIDDEN, WIDTH = 12, 8


class FusedGLU(nn.Module):
    def __init__(self, parts: int = 2):
        super().__init__()
        self.parts = parts
        self.gate_up = nn.Linear(HIDDEN, parts * WIDTH)
        self.down = nn.Linear(WIDTH, HIDDEN)
        self.head = nn.Linear(HIDDEN, 3)

    def forward(self, x):
        pieces = self.gate_up(x).chunk(self.parts, dim=-1)
        inner = F.silu(pieces[0])
        for p in pieces[1:]:
            inner = inner * p
        return self.head(F.relu(self.down(inner)))


def _pruner(model: nn.Module, steps: int = 3, budget: float = 0.5) -> DecayPruner:
    torch.manual_seed(0)
    return DecayPruner(model, torch.randn(2, HIDDEN), DPMConfig(budget=budget, budget_kind="channels",
                                                                decay_steps=steps, ranking="layer",
                                                                rectify={"enabled": False}))


@pytest.mark.parametrize("parts", [2, 3])
def test_rows_of_every_part_form_one_unit(parts):
    torch.manual_seed(0)
    pruner = _pruner(FusedGLU(parts))
    group = next(g for g in pruner.groups if g.name == "gate_up")
    assert group.channels == parts * WIDTH and group.n_units == WIDTH
    assert group.unit_of.tolist() == list(range(WIDTH)) * parts


def test_units_decay_together_and_compact_exactly():
    torch.manual_seed(0)
    model = FusedGLU().eval()
    pruner = _pruner(model, steps=3)
    x = torch.randn(5, HIDDEN)
    for _ in range(4):
        pruner.step()
    rows = model.gate_up.weight.detach().norm(dim=1)
    zero = (rows == 0).nonzero().flatten().tolist()
    half = [r for r in zero if r < WIDTH]
    assert len(half) == WIDTH // 2 and zero == half + [r + WIDTH for r in half]  # both halves of a unit
    assert all(model.down.weight[:, r].abs().sum() == 0 for r in half)
    with torch.no_grad():
        decayed = model(x)
    result = pruner.compact()
    assert result.max_rel_error <= 1e-6
    assert model.gate_up.out_features == WIDTH and model.down.in_features == WIDTH // 2
    assert model.down.out_features == HIDDEN // 2  # the down projection's own group, half by ranking: layer
    with torch.no_grad():
        assert torch.allclose(model(x), decayed, atol=1e-6)


def test_mid_decay_both_rows_of_a_unit_carry_the_same_factor():
    torch.manual_seed(0)
    model = FusedGLU().eval()
    before = model.gate_up.weight.detach().norm(dim=1).clone()
    pruner = _pruner(model, steps=4)
    for _ in range(3):  # selection, then two of four decay steps
        pruner.step()
    ratio = model.gate_up.weight.detach().norm(dim=1) / before
    decaying = (ratio < 1 - 1e-6).nonzero().flatten().tolist()
    assert decaying and all(torch.isclose(ratio[r], ratio[(r + WIDTH) % (2 * WIDTH)]) for r in decaying)
