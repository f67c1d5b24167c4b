"""criterion: obs — the output error a channel's removal leaves after least-squares compensation by the
channels that remain, ||W[:, j]||^2 / [H^-1]_jj (engine/obs.py)."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn

from cli_helpers import run_cli, write_checkpoint
from dpm_cli import DecayPruner, DPMConfig
from dpm_cli.batch import call_model
from dpm_cli.engine.obs import column_scores
from dpm_cli.engine.reconstruct import consumers, refit
from dpm_cli.engine.selection import select
from dpm_cli.errors import ConfigError

from test_activation_criterion import activation_recipe, collect, group, hook_count


def duplicated_mlp() -> nn.Sequential:
    """Hidden units 0..3 are independent; 4 and 5 copy units 0 and 1 at twice the scale, so either
    member of a pair can stand in for the other after a refit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        model[0].weight[4:] = 2.0 * model[0].weight[:2]
        model[0].bias[4:] = 2.0 * model[0].bias[:2]
        model[2].weight[:, :4] *= 0.5  # the copies also carry the largest outgoing weights
    return model


def pruner_for(model: nn.Module, x: torch.Tensor, criterion: str, **options) -> DecayPruner:
    options = {"budget": 4 / 6, "budget_kind": "channels", "decay_steps": 1, "ignore": ["2"],
               "rectify": {"enabled": False}, **options}
    return DecayPruner(model, x[:1], DPMConfig(criterion=criterion, **options))


def chosen(pruner: DecayPruner) -> list[int]:
    return sorted(c for _, c in select(pruner.groups, pruner.cost, pruner.config, pruner.config.budget,
                                       set(), set(), pruner.scores()))


def test_column_score_is_the_least_squares_error_its_removal_leaves():
    torch.manual_seed(0)
    x = torch.randn(300, 5) @ torch.randn(5, 5) + 0.3  # correlated, not centred
    w = torch.randn(3, 5)
    moments = {"gram": (x.T @ x).float(), "sum": x.sum(0).float(), "count": torch.tensor(300.0)}
    scores = column_scores(w, moments, damping=0.0)
    target = x @ w.T
    for j in range(5):  # by brute force: refit the other columns and a bias, measure what is left
        rest = torch.cat([x[:, [i for i in range(5) if i != j]], torch.ones(300, 1)], 1).double()
        coef = torch.linalg.lstsq(rest, target.double()).solution
        residual = float((rest @ coef - target.double()).square().sum()) / 300
        assert scores[j] == pytest.approx(residual, rel=1e-3)


def test_a_duplicated_unit_goes_first_and_the_refit_makes_the_cut_exact():
    model, x = duplicated_mlp(), torch.randn(256, 4)
    picks = {}
    for criterion in ("activation", "obs"):
        pruner = pruner_for(copy.deepcopy(model), x, criterion)
        collect(pruner, pruner.model, [x])
        picks[criterion] = chosen(pruner)
    assert picks["obs"] in ([0, 1], [0, 5], [4, 1], [4, 5])  # one of each pair: the other stands in
    assert picks["activation"] != picks["obs"]  # RMS x norm keeps the loud copies and cuts independent units
    pruner = pruner_for(copy.deepcopy(model), x, "obs")
    original = copy.deepcopy(pruner.model).eval()
    collect(pruner, pruner.model, [x])
    pruner.prune_now(select(pruner.groups, pruner.cost, pruner.config, pruner.config.budget, set(), set(),
                            pruner.scores()))
    found, _ = consumers(pruner, pruner.model)
    refit(pruner.model.eval(), original, found, lambda: [x], call_model, ridge=1e-9)
    with torch.no_grad():
        assert torch.allclose(pruner.model(x), original(x), atol=1e-4)


def test_selection_needs_the_collection_and_says_how():
    model, x = duplicated_mlp(), torch.randn(16, 4)
    pruner = pruner_for(model, x, "obs")
    assert pruner.needs_activations()
    with pytest.raises(ConfigError, match="'obs' needs the activations"):
        pruner.step()


def test_padding_does_not_enter_the_moments():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x, attention_mask=None):
            return self.down(torch.relu(self.up(x)))

    torch.manual_seed(0)
    model, x = Tokens(), torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    padded = x.clone()
    padded[mask == 0] = 100.0  # would dominate the moments if it counted
    pruner = DecayPruner(model, {"x": x[:1], "attention_mask": mask[:1]},
                         DPMConfig(criterion="obs", budget=0.5, budget_kind="channels", ignore=["down"]))
    collect(pruner, model, [{"x": padded, "attention_mask": mask}])
    moments = pruner.activations.moments["down"]
    with torch.no_grad():
        real = torch.relu(model.up(x[mask.bool()])).double()
    assert float(moments["count"]) == 7
    assert torch.allclose(moments["gram"].double(), real.T @ real, rtol=1e-5, atol=1e-5)


def test_state_round_trip_gives_the_same_scores_and_no_hooks_stay():
    model, x = duplicated_mlp(), torch.randn(32, 4)
    pruner = pruner_for(model, x, "obs")
    collect(pruner, model, [x])
    pruner.step()
    assert hook_count(model) == 0
    other = pruner_for(model, x, "obs")
    other.load_state_dict(pruner.state_dict())
    assert other.activations.moments.keys() == {"2"}
    for a, b in zip(pruner.scores(), other.scores()):
        assert torch.equal(a, b)


def test_convolution_consumers_rank_as_activation_and_are_named():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(4, 3, 8, 8)
    model(x)
    by = {}
    for criterion in ("activation", "obs"):
        pruner = DecayPruner(model, x[:1], DPMConfig(criterion=criterion, budget=0.7, budget_kind="channels"))
        collect(pruner, model, [x])
        by[criterion] = pruner.scores()[group(pruner, "0")]
        fallback = pruner.activation_fallback
    assert torch.equal(by["activation"], by["obs"])
    assert "0" in fallback


def test_cli_prune_and_plan_with_obs(tmp_path, capsys):
    recipe = activation_recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace("criterion: activation", "criterion: obs"))
    ckpt = write_checkpoint(tmp_path)
    code, out, err = run_cli(["plan", ckpt, "-r", recipe, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["structures"] > 0
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["macs_after"] / summary["macs_before"] <= 0.5
    assert summary["equivalence_error"] <= 1e-4


def test_the_inverse_is_computed_once_per_collection(monkeypatch):
    import dpm_cli.engine.obs as obs

    model, x = duplicated_mlp(), torch.randn(32, 4)
    pruner = pruner_for(model, x, "obs")
    collect(pruner, model, [x])
    calls = []
    real = obs.inverse_diagonal
    monkeypatch.setattr(obs, "inverse_diagonal", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = pruner.scores()
    with torch.no_grad():
        model[2].weight.mul_(2.0)  # Self-Rectifying rescoring reads the weights afresh ...
    again = pruner.scores()
    assert len(calls) == 1  # ... but not the calibration statistics
    assert torch.allclose(again[0], first[0])  # a uniform scale leaves the group-normalised score as it was
    collect(pruner, model, [x])
    pruner.scores()
    assert len(calls) == 2
