"""`pruning.reconstruct`: least-squares refit of the linear layers that read pruned channels, to the
original model's outputs, on the step the channels reach zero (issue 14 item 8's lever)."""
from __future__ import annotations

import copy
import json
import re

import torch
import torch.nn as nn

from cli_helpers import run_cli, write_checkpoint, write_recipe
from hf_helpers import cut_half
from dpm_cli import DecayPruner, DPMConfig
from dpm_cli.batch import call_model
from dpm_cli.engine.reconstruct import consumers, refit
from dpm_cli.engine.selection import score_groups, select

from test_training_loop import trainer


def _prune_half(model: nn.Module, x, ignore=("2",)) -> DecayPruner:
    return cut_half(model, x, ignore=list(ignore))


def test_units_that_duplicate_kept_units_are_reconstructed_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5))
    with torch.no_grad():  # units 4..7 repeat units 0..3 at a smaller scale: the magnitude criterion drops them
        model[0].weight[4:] = 0.5 * model[0].weight[:4]
        model[0].bias[4:] = 0.5 * model[0].bias[:4]
    original, x = copy.deepcopy(model).eval(), torch.randn(64, 6)
    pruner = _prune_half(model, x[:2], ignore=("2",))
    (found,), others = consumers(pruner, model)
    assert found.name == "2" and found.pruned.tolist() == [4, 5, 6, 7] and others == []
    with torch.no_grad():
        assert not torch.allclose(model(x), original(x), atol=1e-3)  # the cut changed the function
    (fit,) = refit(model.eval(), original, [found], lambda: [x], call_model, ridge=1e-9)
    assert fit.applied and fit.before > 0.1 and fit.after < 1e-5
    with torch.no_grad():
        assert torch.allclose(model(x), original(x), atol=1e-5)
    assert bool((model[2].weight[:, 4:] == 0).all())
    assert pruner.compact().max_rel_error <= 1e-5


def test_pruned_inputs_and_outputs_stay_exactly_zero_and_compaction_is_exact():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 12), nn.GELU(), nn.Linear(12, 3))
    original, data = copy.deepcopy(model).eval(), [torch.randn(32, 8) for _ in range(4)]
    pruner = _prune_half(model, data[0][:2], ignore=("4",))
    found, _ = consumers(pruner, model)
    assert [c.name for c in found] == ["2", "4"]
    assert found[0].dead.numel() == 6  # layer 2 reads pruned units and has pruned outputs itself
    fits = refit(model.eval(), original, found, lambda: data, call_model)
    assert all(f.applied and f.after < f.before for f in fits)
    for c in found:
        assert bool((c.module.weight[:, c.pruned] == 0).all())
        assert bool((c.module.weight[c.dead] == 0).all()) and bool((c.module.bias[c.dead] == 0).all())
    assert pruner.compact().max_rel_error <= 1e-5


class TokenMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(4, 8), nn.Linear(8, 4)

    def forward(self, x, attention_mask):
        return self.down(torch.relu(self.up(x)))


def test_padding_positions_do_not_enter_the_fit():
    torch.manual_seed(2)
    tokens = torch.randn(6, 4)
    padded = torch.full((2, 4, 4), 1e3)  # padding rows hold huge values: any leak moves the fit
    padded[0], padded[1, :2] = tokens[:4], tokens[4:]
    with_padding = {"x": padded, "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])}
    without = {"x": tokens.unsqueeze(0), "attention_mask": torch.ones(1, 6, dtype=torch.long)}
    weights = []
    for batch in (with_padding, without):
        torch.manual_seed(3)
        model = TokenMLP()
        original = copy.deepcopy(model).eval()
        pruner = _prune_half(model, without, ignore=("down",))
        found, _ = consumers(pruner, model)
        refit(model.eval(), original, found, lambda: [batch], call_model, ridge=1e-9)
        weights.append(model.down.weight.detach().clone())
    assert torch.allclose(weights[0], weights[1], atol=1e-5)


def test_convolution_consumers_are_named_and_left_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    pruner = _prune_half(model, torch.randn(1, 3, 8, 8), ignore=("2",))
    found, others = consumers(pruner, model)
    assert found == [] and others == ["2.weight"]


def test_trainer_reconstructs_on_the_step_structures_reach_zero(monkeypatch):
    t = trainer(4, steps=12)
    t.reference = copy.deepcopy(t.model).eval()
    calls: list[int] = []
    monkeypatch.setattr(type(t), "reconstruct", lambda self: calls.append(self.position.step + 1))
    t.run()
    assert calls == [t.pruner.selection_steps[0] + 4]


def test_prune_with_reconstruct_refits_and_logs_it(tmp_path, capsys):
    recipe, ckpt = write_recipe(tmp_path), write_checkpoint(tmp_path)
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "pruning.reconstruct=true", "--json", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads(out)["equivalence_error"] <= 1e-4
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (fit,) = [x for x in lines if x.get("kind") == "reconstruct"]
    decay = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert fit["step"] == max(e["step"] for e in decay if e["kind"] == "pruned")  # when the last reached zero
    assert set(fit["layers"]) == {"body.3", "head"}  # the linear layers reading pruned units
    assert all(after < before for before, after in fit["layers"].values())
    code, _, err = run_cli(["report", "--run", tmp_path / "run", "--plot", tmp_path / "plots"], capsys)
    assert code == 0, err  # the run's plots read a metrics log with a reconstruct line


def test_the_slow_calibration_passes_are_said_before_they_run(tmp_path, capsys):
    """On MiniLM the criterion's statistics and the refit read 96 batches of 32 paragraphs each: minutes
    in which the progress stood at one step and `dpm plan` printed nothing at all."""
    recipe, ckpt = write_recipe(tmp_path), write_checkpoint(tmp_path)
    options = ["pruning.reconstruct=true", "pruning.criterion=activation", "pruning.recalibrate_bn.batches=3"]
    code, _, err = run_cli(["prune", ckpt, "-r", recipe, *options], capsys)
    assert code == 0, err
    reading = re.findall(r"step (\d+): activation criterion: reading 3 calibration batches", err)
    refit = re.findall(r"step (\d+): refitting the layers that read the pruned structures on 3 calibration batches", err)
    assert reading and len(refit) == 1
    assert err.index("refitting the layers") < err.index("reconstruct at step")  # said before, not after the work
    code, out, err = run_cli(["plan", ckpt, "-r", recipe, *options, "pruning.recalibrate_bn.batches=1000", "--json"],
                             capsys)
    assert code == 0, err
    assert json.loads(out)["structures"] > 0  # stdout is still only the JSON
    assert re.search(r"activation criterion: reading (\d+) calibration batches", err)
    assert "reading 1000" not in err  # the batches there are, not the ones asked for


def test_bert_ffn_and_heads_are_refitted_with_real_tokens_and_stay_exact():
    transformers = __import__("pytest").importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40)).eval()
    original = copy.deepcopy(model)
    batch = {"input_ids": torch.randint(3, 64, (4, 12)),
             "attention_mask": torch.tensor([[1] * 12, [1] * 9 + [0] * 3, [1] * 12, [1] * 5 + [0] * 7])}
    pruner = cut_half(model, batch, head_ratio=0.5)
    found, others = consumers(pruner, model)
    assert {c.name for c in found} == {f"encoder.layer.{i}.{m}.dense" for i in (0, 1)
                                       for m in ("output", "attention.output")} and others == []
    fits = refit(model, original, found, lambda: [batch], call_model)
    assert all(f.applied and f.after < f.before for f in fits)
    assert pruner.compact().max_rel_error <= 1e-5


def test_a_layer_called_twice_per_forward_is_left_as_it_is_not_refitted():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down, self.head = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.down(self.down(torch.relu(self.up(x)))))

    torch.manual_seed(0)
    model, x = Twice(), torch.randn(16, 4)
    original = copy.deepcopy(model).eval()
    found = [c for c in consumers(_prune_half(model, x[:2], ignore=("head",)), model)[0] if c.name == "down"]
    before = model.down.weight.clone()
    # it stopped the run with "expected one call of the layer per forward" (ALBERT, mid-training)
    (fit,) = refit(model.eval(), original, found, lambda: [x, x], call_model)
    assert fit.left == "shared" and not fit.applied
    assert torch.equal(model.down.weight, before)


def test_a_layer_whose_weight_another_module_applies_is_left_as_it_is():
    """nn.MultiheadAttention applies its out_proj's weight inside its own forward, never calling the layer
    (SigLIP's pooling head): the refit stopped the run at the decay's end ("expected one call of the layer
    per forward, got 0"). It is left as it is, and said so."""
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha, self.head = nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.mha(x, x, x)[0])

    torch.manual_seed(0)
    model, x = Attention(), torch.randn(4, 5, 8)
    original = copy.deepcopy(model).eval()
    cfg = DPMConfig(budget=0.9, budget_kind="macs", decay_steps=1, head_ratio=0.5, ignore=["head"])
    pruner = DecayPruner(model, x[:2], cfg)
    pruner.prune_now(select(pruner.groups, pruner.cost, cfg, cfg.budget, set(), set(),
                            score_groups(pruner.groups, "magnitude", 0)))
    found = [c for c in consumers(pruner, model)[0] if c.name == "mha.out_proj"]
    assert found
    before = model.mha.out_proj.weight.clone()
    (fit,) = refit(model.eval(), original, found, lambda: [x], call_model)
    assert fit.left == "not called" and not fit.applied and torch.equal(model.mha.out_proj.weight, before)
