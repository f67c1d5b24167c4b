"""Groups, selection against budgets of the ORIGINAL model, rounds, and bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dpm_cli.engine import DecayPruner, DPMConfig
from dpm_cli.engine.groups import discover_groups
from dpm_cli.errors import BudgetError, ConfigError, TraceError
from dpm_cli.models import resnet20
from engine_helpers import Residual, TwoStage, batch, train_steps


def run_to_end(model, cfg: DPMConfig, data=None):
    data = data or batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pruner = DecayPruner(model, data[0][:2], cfg, optimizer=opt)
    train_steps(model, opt, pruner, pruner.decay_phase_end, data)
    assert pruner.finished
    return pruner, pruner.compact()


def test_groups_follow_residual_coupling_and_skip_classifier():
    model = Residual()
    found = discover_groups(model, batch()[0][:2])
    assert found.classifier == "fc"
    names = {g.name for g in found.groups}
    # one residual group (stem + both block outputs + fc input) and one internal group per block
    assert len(found.groups) == 3
    residual = max(found.groups, key=lambda g: len(g.slices))
    covered = {s.name for s in residual.slices}
    assert {"stem.0.weight", "blocks.0.3.weight", "blocks.1.3.weight", "fc.weight"} <= covered
    assert "fc" not in names


def test_ignore_patterns_protect_groups():
    model = Residual()
    # blocks.0.3 writes into the residual stream, so ignoring it protects that whole group too
    found = discover_groups(model, batch()[0][:2], ignore=["blocks.0.*"])
    assert [g.name for g in found.groups] == ["blocks.1.0"]
    found = discover_groups(model, batch()[0][:2], ignore=["blocks.0.0"])
    assert len(found.groups) == 2
    with pytest.raises(ConfigError, match="matches no module"):
        discover_groups(model, batch()[0][:2], ignore=["nonexistent.*"])
    with pytest.raises(BudgetError, match="nothing left to prune"):
        discover_groups(model, batch()[0][:2], ignore=["*"])


def test_layernorm_groups_are_skipped_with_a_reason():
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    found = discover_groups(model, torch.randn(2, 8))
    assert [g.name for g in found.groups] == ["2"]
    assert "normalises across channels" in found.skipped["0"]


@pytest.mark.parametrize("kind,keep", [("macs", 0.5), ("params", 0.5), ("channels", 0.6)])
def test_budget_reached_within_two_percent(kind, keep):
    torch.manual_seed(0)
    model = TwoStage(width=32)
    cfg = DPMConfig(budget=keep, budget_kind=kind, decay_steps=2, rectify={"enabled": False})
    pruner, result = run_to_end(model, cfg)
    assert result.max_rel_error <= 1e-4
    reached = {"macs": result.macs_kept, "params": result.params_kept}.get(kind)
    if kind == "channels":
        total = sum(g.channels for g in pruner.groups)
        pruned = sum(len(c) for c in pruner.pruned_channels().values())
        reached = (total - pruned) / total
    assert reached <= keep + 1e-9
    assert abs(reached - keep) / keep <= 0.02


def test_rounds_do_not_compound():
    torch.manual_seed(0)
    cfg = DPMConfig(budget=0.5, rounds=3, decay_steps=2, rectify={"enabled": False})
    pruner, result = run_to_end(resnet20(in_channels=1), cfg)
    rounds = sorted({e.round for e in pruner.events if e.kind == "selected"})
    assert rounds == [0, 1, 2]
    assert abs(result.macs_kept - 0.5) / 0.5 <= 0.02  # not 0.5 ** 3


def test_layerwise_ranking_limits_and_round_to():
    torch.manual_seed(0)
    cfg = DPMConfig(budget=0.6, ranking="layer", round_to=4, min_channels=8, max_layer_ratio=0.5,
                    decay_steps=1, rectify={"enabled": False})
    pruner, result = run_to_end(TwoStage(width=32), cfg)
    for g in pruner.groups:
        removed = len(pruner.pruned_channels().get(g.name, []))
        assert removed % 4 == 0
        assert removed <= 0.5 * g.channels and g.channels - removed >= 8
    assert result.macs_kept <= 0.6


def test_unreachable_budget_is_reported_before_training():
    with pytest.raises(BudgetError, match="cannot be reached"):
        DecayPruner(TwoStage(), batch()[0][:2], DPMConfig(budget=0.05, max_layer_ratio=0.5))


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.1])
def test_budget_out_of_range(bad):
    with pytest.raises(ConfigError, match=r"budget must be in \(0, 1\]"):
        DPMConfig(budget=bad)


def test_untraceable_model_names_the_cause():
    with pytest.raises(TraceError, match="input shape"):
        DecayPruner(TwoStage(), torch.randn(2, 3, 8, 8), DPMConfig())


def test_taylor_needs_gradients_and_works_with_them():
    torch.manual_seed(0)
    model = TwoStage()
    data = batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = DecayPruner(model, data[0][:2], DPMConfig(criterion="taylor", decay_steps=2), optimizer=opt)
    train_steps(model, opt, pruner, pruner.decay_phase_end, data)
    assert pruner.compact().macs_kept <= 0.5


def test_taylor_ranks_a_group_no_gradient_reaches_by_magnitude_with_a_note():
    """A branch whose output the loss never reads (SigLIP's pooling head when the objective reads the hidden
    states) has no gradients: torch-pruning's Taylor importance crashed on it mid-training ("'NoneType'
    object has no attribute 'data'"). Its parameters count with a zero gradient (the loss's derivative);
    a group no gradient reaches at all is ranked by magnitude and named, like activation's fallback."""
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.used, self.unused = nn.Linear(4, 8), nn.Linear(8, 2), nn.Sequential(nn.Linear(8, 6),
                                                                                                  nn.ReLU(), nn.Linear(6, 2))

        def forward(self, x):
            h = torch.relu(self.body(x))
            return self.used(h), self.unused(h)

    torch.manual_seed(0)
    model, x = TwoHeads(), torch.randn(8, 4)
    pruner = DecayPruner(model, x[:2], DPMConfig(criterion="taylor", budget=0.8, budget_kind="channels", decay_steps=1))
    model(x)[0].square().mean().backward()  # the loss reads the first output only
    scores = pruner.scores()
    names = [g.name for g in pruner.groups]
    assert pruner.activation_fallback == ["unused.0"] and torch.isfinite(scores[names.index("unused.0")]).all()
    assert torch.isfinite(scores[names.index("body")]).all()


@pytest.mark.parametrize("criterion", ["bn_scale", "lamp", "random"])
def test_every_criterion_reaches_the_budget(criterion):
    torch.manual_seed(0)
    cfg = DPMConfig(criterion=criterion, budget=0.6, decay_steps=2, rectify={"enabled": False})
    _, result = run_to_end(TwoStage(width=32), cfg)
    assert result.macs_kept <= 0.6 and result.max_rel_error <= 1e-4


def test_building_a_pruner_does_not_change_the_model():
    torch.manual_seed(0)
    model = TwoStage()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    DecayPruner(model, batch()[0][:2], DPMConfig())
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_torch_pruning_failing_while_it_maps_channels_is_one_trace_error(monkeypatch):
    """An index mapping torch-pruning cannot build (HunYuan v4's split rotary raised IndexError from
    get_pruning_group) escaped group discovery as a raw exception: now a TraceError saying where."""
    import dpm_cli.engine.groups as groups

    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(groups, "protected_roots", broken)
    with pytest.raises(TraceError, match=r"torch-pruning failed while finding the layers that feed the outputs "
                                         r"\(IndexError: list index out of range\)"):
        discover_groups(TwoStage(), batch()[0][:2])
