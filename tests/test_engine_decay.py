"""Smooth Pruning: exact ramps, exact zeros, optimizer state, single-step mode, resume."""
from __future__ import annotations

import copy

import pytest
import torch

from dpm_cli.engine import DecayPruner, DPMConfig
from dpm_cli.engine.state import DECAYING, PRUNED
from engine_helpers import TwoStage, batch, train_steps

N = 6


def make(opt_name: str, **options):
    torch.manual_seed(0)
    model = TwoStage()
    data = batch()
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    cfg = dict(budget=0.6, decay_steps=N, rectify={"enabled": False}, ignore=["conv2"])
    cfg.update(options)
    pruner = DecayPruner(model, data[0][:2], DPMConfig(**cfg), optimizer=opt)
    return model, opt, pruner, data


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_norm_follows_linear_ramp_then_exact_zero(opt_name):
    model, opt, pruner, data = make(opt_name)
    train_steps(model, opt, pruner, 1, data)  # step 1 selects
    (group,) = pruner.groups
    st = pruner.states[0]
    targets = torch.nonzero(st.status == DECAYING).flatten()
    assert len(targets) > 0
    l_init = st.l_init[targets].clone()
    for n in range(1, N + 1):
        train_steps(model, opt, pruner, 1, data)
        norms = group.norms()[targets]
        expected = l_init * (N - n) / N
        if n < N:
            torch.testing.assert_close(norms, expected, rtol=1e-5, atol=0)
        else:
            assert torch.all(norms == 0.0)
    assert torch.all(st.status[targets] == PRUNED)
    # stays exactly zero, weights and optimizer state, while training continues
    train_steps(model, opt, pruner, 10, data)
    assert torch.all(group.norms()[targets] == 0.0)
    for s in group.slices:
        zero = s.local[torch.isin(s.root, targets)]
        assert torch.all(s.param.detach().index_select(s.dim, zero) == 0)
        for value in opt.state[s.param].values():
            if torch.is_tensor(value) and value.shape == s.param.shape:
                assert torch.all(value.index_select(s.dim, zero) == 0)


def test_single_step_mode_zeroes_at_once():
    model, opt, pruner, data = make("sgd", decay_steps=1)
    train_steps(model, opt, pruner, 1, data)
    targets = torch.nonzero(pruner.states[0].status == DECAYING).flatten()
    train_steps(model, opt, pruner, 1, data)
    assert torch.all(pruner.groups[0].norms()[targets] == 0.0)
    assert pruner.finished


def test_overlapping_structures_stay_at_or_below_ramp():
    model, opt, pruner, data = make("sgd", ignore=[], budget=0.4)
    train_steps(model, opt, pruner, 1, data)
    inits = [st.l_init.clone() for st in pruner.states]
    masks = [st.status == DECAYING for st in pruner.states]
    assert all(m.any() for m in masks), "both groups decay, so conv2.weight entries are shared"
    for n in range(1, N + 1):
        train_steps(model, opt, pruner, 1, data)
        for g, l_init, m in zip(pruner.groups, inits, masks):
            assert torch.all(g.norms()[m] <= l_init[m] * (N - n) / N * (1 + 1e-5) + 1e-7)
    assert pruner.finished


def test_resume_mid_decay_is_bit_identical():
    model_a, opt_a, pruner_a, data = make("sgd", rounds=2)
    train_steps(model_a, opt_a, pruner_a, 4, data)
    saved = copy.deepcopy((model_a.state_dict(), opt_a.state_dict(), pruner_a.state_dict()))
    train_steps(model_a, opt_a, pruner_a, 12, data)

    model_b, opt_b, pruner_b, _ = make("sgd", rounds=2)
    model_b.load_state_dict(saved[0])
    opt_b.load_state_dict(saved[1])
    pruner_b.load_state_dict(saved[2])
    train_steps(model_b, opt_b, pruner_b, 12, data)
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        assert torch.equal(a, b)
    assert [e.to_dict() for e in pruner_a.events] == [e.to_dict() for e in pruner_b.events]


def test_resume_refuses_other_options():
    _, _, pruner_a, _ = make("sgd")
    _, _, pruner_b, _ = make("sgd", budget=0.5)
    with pytest.raises(Exception, match="other pruning options"):
        pruner_b.load_state_dict(pruner_a.state_dict())


def test_cosine_shape_follows_its_exact_norms_then_exact_zero():
    import math

    model, opt, pruner, data = make("sgd", decay_shape="cosine")
    train_steps(model, opt, pruner, 1, data)  # step 1 selects
    (group,) = pruner.groups
    st = pruner.states[0]
    targets = torch.nonzero(st.status == DECAYING).flatten()
    l_init = st.l_init[targets].clone()
    for n in range(1, N + 1):
        train_steps(model, opt, pruner, 1, data)
        norms = group.norms()[targets]
        if n < N:
            expected = l_init * 0.5 * (1 + math.cos(math.pi * n / N))
            torch.testing.assert_close(norms, expected, rtol=1e-5, atol=0)
        else:
            assert torch.all(norms == 0.0)
    assert torch.all(st.status[targets] == PRUNED)


def test_remaining_fraction_exact_values_and_bad_shape():
    from dpm_cli.engine.schedule import remaining_fraction
    from dpm_cli.errors import ConfigError

    n = torch.tensor([0, 1, 2, 3, 4], dtype=torch.int32)
    assert remaining_fraction(n, 4, "linear").tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    cos = remaining_fraction(n, 4, "cosine")
    torch.testing.assert_close(cos, torch.tensor([1.0, 0.8535534, 0.5, 0.1464466, 0.0]), rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="decay_shape must be one of linear, cosine"):
        DPMConfig(decay_shape="exp")
