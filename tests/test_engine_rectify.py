"""Self-Rectifying: a target the loss needs is released and replaced; a useless one is not."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dpm_cli.engine import DecayPruner, DPMConfig
from dpm_cli.engine.state import ACTIVE, PRUNED

WIDTH = 8


def needed_and_useless():
    """fc1 channel 0 carries the signal but is under-scaled (small norm, large gradient);
    channel 1 is dead (small norm, no gradient); channels 2.. are dead with large norms."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 1))
    v = torch.tensor([1.0, -1.0, 0.5, 0.5])
    with torch.no_grad():
        fc1, fc2 = model[0], model[2]
        fc1.weight.normal_(0, 1.0)
        fc1.bias.fill_(-100.0)  # dead units: no gradient, large norm
        fc1.weight[0], fc1.bias[0] = 0.3 * v / v.norm(), 0.0
        fc1.weight[1], fc1.bias[1] = 0.1 * torch.randn(4), -0.5
        fc2.weight.zero_()
        fc2.weight[0, 0] = 0.3
        fc2.bias.zero_()
    x = torch.randn(256, 4)
    y = 2.0 * F.relu(x @ v / v.norm()).unsqueeze(1)
    return model, x, y


def run(rectify: dict, steps: int = 30, decay_steps: int = 12):
    model, x, y = needed_and_useless()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    cfg = DPMConfig(budget=0.75, budget_kind="channels", decay_steps=decay_steps, rectify=rectify)
    pruner = DecayPruner(model, x[:2], cfg, optimizer=opt)
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
        pruner.step()
    return model, pruner


def kinds(pruner, kind):
    return [e for e in pruner.events if e.kind == kind]


def test_needed_target_is_released_and_replaced_useless_one_is_pruned():
    model, pruner = run({"enabled": True, "rate_quantile": 0.5, "len_threshold": 1.0, "patience": 3})
    selected = {e.index for e in kinds(pruner, "selected")}
    assert selected == {0, 1}, "the base criterion picks the two smallest-norm channels"
    releases = kinds(pruner, "release")
    assert [e.index for e in releases] == [0]
    assert releases[0].c_rate > 0 and releases[0].c_len > 1.0
    assert releases[0].step == 1 + 3, "released after `patience` consecutive decay steps"
    replacements = kinds(pruner, "replacement")
    assert len(replacements) == 1 and replacements[0].index >= 2
    st = pruner.states[0]
    assert st.status[0] == ACTIVE and st.status[1] == PRUNED and st.status[replacements[0].index] == PRUNED
    assert pruner.progress().params_kept < 1.0
    assert int((st.status == PRUNED).sum()) == 2, "the budget still removes two channels"
    assert pruner.finished
    assert float(pruner.groups[0].norms()[0]) > 0.2, "the released channel regrew"


def test_without_rectifying_the_needed_target_is_lost():
    _, pruner = run({"enabled": False})
    assert kinds(pruner, "release") == []
    assert pruner.states[0].status[0] == PRUNED


def test_release_suppressed_when_no_replacement_fits():
    # Three channels, two must go. Both small channels carry signal; the first released takes the only
    # other channel as its replacement, so the second release has no eligible replacement.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    v = torch.tensor([1.0, -1.0, 0.5, 0.5]) / 1.5811
    with torch.no_grad():
        model[0].weight.copy_(torch.stack([0.3 * v, 0.25 * v, torch.ones(4)]))
        model[0].bias.copy_(torch.tensor([0.0, 0.0, -100.0]))
        model[2].weight.copy_(torch.tensor([[0.3, 0.25, 0.0]]))
    x = torch.randn(256, 4)
    y = 2.0 * F.relu(x @ v).unsqueeze(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    cfg = DPMConfig(budget=0.34, budget_kind="channels", decay_steps=12,
                    rectify={"rate_quantile": None, "rate_threshold": 0.0, "len_threshold": 0.5, "patience": 3})
    pruner = DecayPruner(model, x[:2], cfg, optimizer=opt)
    for _ in range(30):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
        pruner.step()
    assert {e.index for e in kinds(pruner, "selected")} == {0, 1}
    assert len(kinds(pruner, "release")) == 1
    assert [e.index for e in kinds(pruner, "replacement")] == [2]
    suppressed = kinds(pruner, "suppressed")
    assert suppressed and all("no eligible replacement" in e.note for e in suppressed)
    assert int((pruner.states[0].status == PRUNED).sum()) == 2


def test_thresholds_are_options():
    _, pruner = run({"enabled": True, "rate_quantile": None, "rate_threshold": 1e9})
    assert kinds(pruner, "release") == []


def test_replacement_costs_about_what_the_release_freed():
    """VGG-like: a wide early conv (expensive channels) and a hidden linear layer (cheap units). The
    criterion ranks a conv channel least important; a release of one cheap unit must still be
    replaced by a cheap unit, not by that conv channel, or the model ends far below its budget."""
    from dpm_cli.engine.selection import select

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 2))
    pruner = DecayPruner(model, torch.randn(1, 1, 8, 8), DPMConfig(budget=0.95, rectify={"enabled": False}))
    conv, fc = [next(i for i, g in enumerate(pruner.groups) if g.name == name) for name in ("0", "5")]
    unit = pruner.cost.unit_costs("macs")
    assert unit[conv] > 5 * unit[fc]
    scores = [torch.arange(g.channels, dtype=torch.float32) + 10 for g in pruner.groups]
    scores[conv][0] = 0.0  # the least important structure anywhere is an expensive conv channel
    removed = {(fc, c) for c in range(4)}  # four fc units decaying: about the budget's worth ...
    pruner.cost.reset()
    for key in removed:
        pruner.cost.remove(key)
    target = pruner.cost.kept("macs")
    pruner.cost.reset()
    released = (fc, 0)  # ... and one of them is released
    args = (pruner.groups, pruner.cost, pruner.config, target, removed - {released}, {released}, scores)
    assert select(*args) == [(conv, 0)], "unmatched: the globally least important channel"
    assert select(*args, cost_cap=unit[fc]) == [(fc, 4)], "cost-matched: the least important cheap unit"
