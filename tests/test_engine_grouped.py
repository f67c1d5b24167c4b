"""Grouped convolutions are pruned in structures that keep every conv group the same width.

Found on torchvision resnext50_32x4d / regnet_x_400mf and timm regnetx_002: the grouped conv's output
group was pruned channel by channel and compaction failed with `Given groups=32, expected weight to
be divisible by 32`; its input group was skipped altogether.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dpm_cli.engine import DecayPruner, DPMConfig
from dpm_cli.engine.state import DECAYING, PRUNED

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")


def _decay_and_compact(model: nn.Module, x: torch.Tensor, budget: float = 0.5, steps: int = 2):
    torch.manual_seed(0)
    pruner = DecayPruner(model, x, DPMConfig(budget=budget, decay_steps=steps, rectify={"enabled": False}))
    for _ in range(steps + 1):
        pruner.step()
    projected = pruner.progress().macs_kept
    return pruner, projected, pruner.compact()


def _grouped(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and 1 < m.groups < m.out_channels]


def _check_grouped(model: nn.Module, pruner: DecayPruner, result, widths: list[int]) -> None:
    assert result.max_rel_error <= 1e-5
    assert abs(result.macs_kept - 0.5) <= 0.02
    # every group touching a grouped conv was kept prunable, in multi-channel structures
    assert not any("grouped" in why for why in pruner.skipped.values())
    blocks = [g for g in pruner.groups if g.unit_of is not None]
    assert blocks and all(g.n_units < g.channels for g in blocks)
    convs = _grouped(model)
    for conv in convs:
        assert conv.out_channels % conv.groups == 0 and conv.in_channels % conv.groups == 0
        assert conv.weight.shape[1] == conv.in_channels // conv.groups
    # most grouped convs were narrowed (their blocks are prunable, and chosen)
    assert sum(c.in_channels < w for c, w in zip(convs, widths)) > len(convs) // 2
    assert model(torch.randn(2, 3, 32, 32)).shape[0] == 2  # runs at another input size


def test_reduced_resnext_reaches_budget_with_exact_compaction():
    from torchvision.models.resnet import Bottleneck, ResNet

    model = ResNet(Bottleneck, [1, 1, 1, 1], groups=8, width_per_group=4, num_classes=10).eval()
    before = {id(c): c.groups for c in _grouped(model)}
    widths = [c.in_channels for c in _grouped(model)]
    pruner, projected, result = _decay_and_compact(model, torch.randn(1, 3, 64, 64))
    _check_grouped(model, pruner, result, widths)
    assert abs(projected - result.macs_kept) < 1e-6  # the cost model counts grouped convs exactly
    # torch-pruning's scheme: the same in-group positions leave every conv group, `groups` is kept
    assert {id(c): c.groups for c in _grouped(model)} == before


@pytest.mark.slow
def test_torchvision_regnet_x_400mf():
    model = torchvision.models.regnet_x_400mf(num_classes=10).eval()
    widths = [c.in_channels for c in _grouped(model)]
    pruner, _, result = _decay_and_compact(model, torch.randn(1, 3, 32, 32))
    _check_grouped(model, pruner, result, widths)


@pytest.mark.slow
def test_timm_regnetx_002():
    model = timm.create_model("regnetx_002", num_classes=10).eval()
    widths = [c.in_channels for c in _grouped(model)]
    pruner, _, result = _decay_and_compact(model, torch.randn(1, 3, 32, 32))
    _check_grouped(model, pruner, result, widths)


class GroupedBlock(nn.Module):
    """1x1 -> grouped 3x3 (4 groups of 4) -> 1x1: the two inner groups touch the grouped conv."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.b = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.c = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.c(F.relu(self.b(F.relu(self.a(x)))))
        return self.fc(x.mean(dim=(2, 3)))


def test_grouped_block_structures_decay_on_one_joint_ramp_and_stay_aligned():
    torch.manual_seed(0)
    model = GroupedBlock()
    x = torch.randn(2, 3, 8, 8)
    pruner = DecayPruner(model, x, DPMConfig(budget=0.7, decay_steps=4, rectify={"enabled": False}))
    groups = pruner.groups
    by_name = {g.name: g for g in groups}
    # input side of b (group rooted at a): structure k = channels {k, k+4, k+8, k+12}
    a = by_name["a"]
    assert a.n_units == 4
    assert [a.channels_of([u]) for u in range(4)] == [[u, u + 4, u + 8, u + 12] for u in range(4)]
    # output side of b: same in-group positions of b's 4 output groups
    assert by_name["b"].n_units == 4
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the norms follow the ramp exactly
    pruner.optimizer = opt
    pruner.step()  # selection at step 1
    gi = next(i for i, g in enumerate(groups) if pruner.states[i].mask(DECAYING).any())
    st, g = pruner.states[gi], groups[gi]
    unit = int(torch.nonzero(st.mask(DECAYING))[0])
    channels = g.channels_of([unit])
    l_init = float(st.l_init[unit])
    joint = lambda: float(g.norms()[channels].square().sum().sqrt())  # noqa: E731
    assert joint() == pytest.approx(l_init, rel=1e-6)
    for n in range(1, 4):
        pruner.step()
        assert joint() == pytest.approx(l_init * (4 - n) / 4, rel=1e-5)
    pruner.step()
    assert st.status[unit] == PRUNED and float(g.norms()[channels].abs().max()) == 0.0
    for _ in range(3):
        pruner.step()
    result = pruner.compact()
    assert result.max_rel_error <= 1e-5
    assert model.b.groups == 4 and model.b.in_channels % 4 == 0 and model.b.out_channels % 4 == 0


def test_units_in_the_resume_state_round_trip():
    torch.manual_seed(0)
    model = GroupedBlock()
    x = torch.randn(2, 3, 8, 8)
    cfg = DPMConfig(budget=0.7, decay_steps=4, rectify={"enabled": False})
    pruner = DecayPruner(model, x, cfg)
    pruner.step(), pruner.step()
    state = pruner.state_dict()
    assert state["units"]["a"] == [c % 4 for c in range(16)]
    again = DecayPruner(model, x, cfg)
    again.load_state_dict(state)
    assert torch.equal(again.state.status, pruner.state.status)
    assert torch.equal(again.state.l_init, pruner.state.l_init)
    state["units"]["a"] = list(range(16))
    with pytest.raises(Exception, match="multi-channel structures"):
        again.load_state_dict(state)


def test_plain_cnn_has_only_single_channel_structures():
    """Units of size 1 cost what channels cost: no unit map, one flat entry per channel."""
    from dpm_cli.models import resnet20

    pruner = DecayPruner(resnet20(num_classes=10, in_channels=1, width=8), torch.randn(1, 1, 16, 16),
                         DPMConfig(budget=0.5, decay_steps=2))
    assert all(g.unit_of is None for g in pruner.groups)
    assert pruner.layout.channels == sum(g.channels for g in pruner.groups)
    assert "units" in pruner.state_dict() and pruner.state_dict()["units"] == {}
