"""FlatLayout, the per-step hot path, agrees with the per-group definitions it fuses."""
from __future__ import annotations

import torch

from dpm_cli.engine import DecayPruner, DPMConfig
from dpm_cli.engine.rectify import StepSums
from dpm_cli.models import resnet20

from engine_helpers import batch


def pruner_for_resnet() -> DecayPruner:
    torch.manual_seed(0)
    model = resnet20(num_classes=10, in_channels=1, width=8)
    return DecayPruner(model, batch(2)[0], DPMConfig(budget=0.5))


def test_norms_equal_the_per_group_joint_norms():
    pruner = pruner_for_resnet()
    flat = pruner.layout.split(pruner.layout.norms())
    for g, norms in zip(pruner.groups, flat):
        torch.testing.assert_close(norms, g.norms(), rtol=1e-5, atol=1e-7)


def test_scale_multiplies_every_slice_of_a_channel_and_nothing_else():
    pruner = pruner_for_resnet()
    layout = pruner.layout
    before = [g.norms() for g in pruner.groups]
    factors = torch.ones(layout.channels)
    gi = max(range(len(pruner.groups)), key=lambda i: len(pruner.groups[i].slices))  # a residual group
    factors[layout.offsets[gi] + 1] = 0.0
    layout.scale(factors)
    after = pruner.groups[gi].norms()
    assert after[1] == 0.0
    assert torch.equal(after[0], before[gi][0]) and torch.equal(after[2:], before[gi][2:])
    others = [i for i in range(len(pruner.groups)) if i != gi]
    # Other groups' norms change only through weights they share with the zeroed channel (in-channels).
    assert all(torch.all(pruner.groups[i].norms() <= before[i] + 1e-6) for i in others)


def test_step_sums_match_their_definitions():
    pruner = pruner_for_resnet()
    layout = pruner.layout
    before = layout.values()
    x, y = batch(8)
    torch.nn.functional.cross_entropy(pruner.model(x), y).backward()
    with torch.no_grad():
        for p in layout.params:
            p.add_(0.01 * torch.randn_like(p))
    sums = StepSums(layout, before)
    now = layout.values()
    torch.testing.assert_close(sums.norm_sq, layout.channel_sums(now.square()))
    torch.testing.assert_close(sums.before_sq, layout.channel_sums(before.square()))
    torch.testing.assert_close(sums.outward, layout.channel_sums((now - before) * before))
    torch.testing.assert_close(sums.grad_sq, layout.channel_sums(layout.grads().square()))
    assert float(sums.grad_sq.sum()) > 0
