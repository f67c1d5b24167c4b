"""Every reference architecture decays to exact zeros, compacts, stays equivalent, reaches its budget."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from dpm_cli.engine import DecayPruner, DPMConfig
from dpm_cli.engine.cost import count_macs_params
from dpm_cli.models import build_model

CASES = [  # (model, kwargs, input shape, MACs kept)
    ("resnet56", {}, (2, 3, 32, 32), 0.5),  # residual coupling
    ("vgg16_bn", {}, (2, 3, 32, 32), 0.5),  # conv -> flatten -> linear
    ("mobilenetv2", {}, (2, 3, 32, 32), 0.5),  # depthwise convs, inverted residuals
    ("densenet_small", {}, (2, 3, 32, 32), 0.5),  # concatenation
    ("vit_tiny", {}, (2, 3, 32, 32), 0.6),  # attention + LayerNorm: only the MLP hidden width is decayable
]


@pytest.mark.parametrize("name,kwargs,shape,keep", CASES, ids=[c[0] for c in CASES])
def test_architecture_decays_compacts_and_meets_budget(name, kwargs, shape, keep):
    warnings.filterwarnings("ignore", message="Unwrapped parameters")
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    x, y = torch.randn(*shape), torch.randint(0, 10, (shape[0],))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pruner = DecayPruner(model, x[:1], DPMConfig(budget=keep, decay_steps=2), optimizer=opt)
    macs_before, _ = count_macs_params(model, x[:1])
    for _ in range(pruner.decay_phase_end):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        pruner.step()
    assert pruner.finished
    for group in pruner.groups:
        channels = pruner.pruned_channels().get(group.name, [])
        assert torch.all(group.norms()[channels] == 0.0)
    result = pruner.compact()
    assert result.max_rel_error <= 1e-4
    macs_after, _ = count_macs_params(result.model, x[:1])
    assert macs_after == result.macs_after
    assert abs(macs_after / macs_before - keep) / keep <= 0.02
    assert any(w.out_after < w.out_before for w in result.widths)
    model.eval()
    assert model(x).shape == (shape[0], 10)
