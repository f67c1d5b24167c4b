"""criterion: activation — ||W[:, j]||_2 * rms(x_j) on calibration data (Wanda-style, see engine/activation.py)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from cli_helpers import RECIPE, run_cli, write_checkpoint
from dpm_cli import DecayPruner, DPMConfig
from dpm_cli.engine.activation import WandaImportance, input_column_norms
from dpm_cli.errors import ConfigError
from dpm_cli.pipeline import prune
from dpm_cli.recipe import load_recipe
from dpm_cli.training.loop import TrainerHooks


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))


def pruner_for(model: nn.Module, example, criterion: str = "activation", **options) -> DecayPruner:
    options = {"budget": 0.7, "budget_kind": "channels", "decay_steps": 2, **options}
    return DecayPruner(model, example, DPMConfig(criterion=criterion, **options))


def collect(pruner: DecayPruner, model: nn.Module, batches) -> None:
    with torch.no_grad(), pruner.collect_activations():
        for x in batches:
            model(x) if torch.is_tensor(x) else model(**x)


def group(pruner: DecayPruner, name: str) -> int:
    return [g.name for g in pruner.groups].index(name)


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_score_is_column_norm_times_rms_over_every_batch():
    model = mlp()
    batches = [torch.randn(4, 3), torch.randn(7, 3) * 3]
    pruner = pruner_for(model, batches[0][:1])
    collect(pruner, model, batches)
    # by hand: fc1's channel j is input j of fc2; its RMS over all 11 rows of both batches
    with torch.no_grad():
        hidden = torch.cat([torch.relu(model[0](x)) for x in batches])
    rms = hidden.square().mean(0).sqrt()
    raw = model[2].weight.norm(dim=0) * rms
    assert torch.allclose(WandaImportance({model[2]: rms}).module_scores(model[2]), raw, rtol=1e-6, atol=0)
    scores = pruner.scores()[group(pruner, "0")]
    assert torch.allclose(scores, raw / raw.mean(), rtol=1e-5, atol=1e-7)  # group-mean normalised, as magnitude
    last_only = torch.relu(model[0](batches[1])).detach().square().mean(0).sqrt()
    assert not torch.allclose(rms, last_only)  # so the test above would catch last-batch-only statistics
    assert pruner.activation_fallback == []


def test_conv_column_norms_follow_conv_groups():
    conv = nn.Conv2d(4, 6, 3, groups=2)
    w = conv.weight.detach()
    want = torch.stack([w[(j // 2) * 3:(j // 2 + 1) * 3, j % 2].norm() for j in range(4)])
    assert torch.allclose(input_column_norms(conv), want)


def test_a_unit_that_never_fires_goes_first_although_its_weights_are_largest():
    model = mlp()
    dead = 4
    with torch.no_grad():
        model[0].weight[dead] = 10.0
        model[0].bias[dead] = -1e4  # ReLU output 0 on any input of this scale
        model[2].weight[:, dead] = 10.0
    x = torch.randn(32, 3)
    chosen = {}
    for criterion in ("magnitude", "activation"):
        pruner = pruner_for(model, x[:1], criterion, budget=0.8, rectify={"enabled": False})
        if pruner.needs_activations():
            collect(pruner, model, [x])
        scores = pruner.scores()[group(pruner, "0")]
        chosen[criterion] = (int(scores.argmin()), int(scores.argmax()))
        if criterion == "activation":
            assert float(scores[dead]) == 0.0
    assert chosen["activation"][0] == dead
    assert chosen["magnitude"][1] == dead  # magnitude ranks it the most important
    assert chosen["magnitude"][0] != chosen["activation"][0]


def test_selection_step_needs_activations_and_says_how():
    model = mlp()
    x = torch.randn(8, 3)
    pruner = pruner_for(model, x[:1])
    assert pruner.needs_activations()
    with pytest.raises(ConfigError, match=r"collect_activations\(\)"):
        pruner.step()
    with pytest.raises(ConfigError, match="needs the activations"):
        pruner_for(model, x[:1]).scores()
    with pytest.raises(ConfigError, match="saw no forward pass"):
        with pruner.collect_activations():
            pass
    assert pruner_for(model, x[:1], "magnitude").needs_activations() is False


def test_a_later_round_refuses_the_previous_rounds_activations():
    model = mlp()
    x = torch.randn(8, 3)
    pruner = pruner_for(model, x[:1], rounds=2, rectify={"enabled": False})
    collect(pruner, model, [x])
    pruner.step()  # round 0 selects
    while not pruner.needs_activations():
        pruner.step()
    with pytest.raises(ConfigError, match="right before each selection"):
        pruner.step()


def test_nothing_is_left_on_the_model_even_when_a_forward_fails():
    model = mlp()
    x = torch.randn(8, 3)
    pruner = pruner_for(model, x[:1])
    before = hook_count(model)
    with pytest.raises(RuntimeError):
        with pruner.collect_activations():
            model(x)
            model(torch.randn(8, 4))  # wrong width
    assert hook_count(model) == before and pruner.activations.rms is None  # a failed collection keeps nothing
    collect(pruner, model, [x])
    pruner.scores()
    assert hook_count(model) == before
    assert not any(hasattr(m, "_importance") for m in model.modules())


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.drop, self.fc2, self.fc3 = nn.Linear(3, 6), nn.Dropout(0.5), nn.Linear(6, 5), nn.Linear(5, 2)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(self.drop(torch.relu(self.fc1(x * scale))))))


def test_trainer_collection_runs_in_eval_mode_with_keyword_inputs_and_restores_train_mode():
    from dpm_cli.training.calibration import collect_activations

    torch.manual_seed(0)
    model = DropoutNet().train()
    x = torch.randn(16, 3)
    pruner = pruner_for(model, x[:1])
    batches = [({"x": x, "scale": 2.0}, torch.zeros(16, dtype=torch.long))]  # (inputs, labels) as loaders give
    collect_activations(pruner, model, batches, "cpu")
    assert model.training
    first = dict(pruner.activations.rms)
    collect_activations(pruner, model, batches, "cpu")
    assert all(torch.equal(first[k], pruner.activations.rms[k]) for k in first)  # no dropout: eval mode
    with torch.no_grad():
        want = torch.relu(model.fc1(2 * x)).square().mean(0).sqrt()  # dropout is identity in eval mode
    assert torch.allclose(pruner.activations.rms["fc2"], want)


def test_state_round_trip_gives_the_same_scores():
    model = mlp()
    x = torch.randn(8, 3)
    pruner = pruner_for(model, x[:1])
    collect(pruner, model, [x])
    pruner.step()
    other = pruner_for(model, x[:1])
    other.load_state_dict(pruner.state_dict())
    for a, b in zip(pruner.scores(), other.scores()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------ attention heads

def test_bert_head_scores_use_the_output_projection_columns_on_real_tokens(tmp_path):
    transformers = pytest.importorskip("transformers")
    from hf_helpers import bert_folder

    model = transformers.AutoModel.from_pretrained(str(bert_folder(tmp_path / "bert")), local_files_only=True).eval()
    ids = torch.randint(5, 40, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    from dpm_cli.hf import protected_modules

    pruner = pruner_for(model, inputs, budget=0.8, budget_kind="macs", ignore=protected_modules(model, heads=True),
                        head_ratio=0.25)
    seen = {}
    out = model.encoder.layer[0].attention.output.dense
    handle = out.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0].detach()))
    collect(pruner, model, [inputs])
    handle.remove()
    real = seen["x"][mask.bool()]  # [real tokens, 32]
    raw = out.weight.norm(dim=0) * real.square().mean(0).sqrt()
    per_channel = raw / raw.mean()
    want = per_channel.view(4, 8).mean(1)  # 4 heads of 8 channels
    gi = group(pruner, "encoder.layer.0.attention")
    assert pruner.groups[gi].kind == "heads"
    assert torch.allclose(pruner.scores()[gi], want, rtol=1e-5)
    padded = out.weight.norm(dim=0) * seen["x"].flatten(0, 1).square().mean(0).sqrt()
    assert not torch.allclose((padded / padded.mean()).view(4, 8).mean(1), want, rtol=1e-3)  # padding is left out
    assert pruner.activation_fallback == []


class MHANet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))


def test_multihead_attention_heads_fall_back_to_magnitude_and_say_so():
    torch.manual_seed(0)
    model = MHANet().eval()
    x = torch.randn(2, 5, 8)
    pruner = pruner_for(model, x, budget=0.9, budget_kind="macs", head_ratio=0.25)
    collect(pruner, model, [x])
    gi = group(pruner, "attn")
    magnitude = pruner_for(model, x, "magnitude", budget=0.9, budget_kind="macs", head_ratio=0.25).scores()[gi]
    assert torch.equal(pruner.scores()[gi], magnitude)  # out_proj runs inside F.multi_head_attention_forward
    assert pruner.activation_fallback == ["attn"]


# ------------------------------------------------------------------ end to end

def activation_recipe(tmp_path, steps: int = 14, extra: str = ""):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(steps=steps, run=tmp_path / "run").replace(
        "  decay_steps: 4\n", "  decay_steps: 4\n  criterion: activation\n" + extra))
    return path


def test_cli_prune_with_activation_hits_the_budget_and_leaves_no_hooks(tmp_path, capsys):
    recipe, ckpt = activation_recipe(tmp_path), write_checkpoint(tmp_path)
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["macs_after"] / summary["macs_before"] <= 0.5
    assert summary["equivalence_error"] <= 1e-4
    compact = torch.load(summary["outputs"]["module"], weights_only=False)
    assert hook_count(compact) == 0 and not any(hasattr(m, "_importance") for m in compact.modules())
    selected = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "selected" for e in selected)


def test_cli_override_and_plan_collect_activations(tmp_path, capsys):
    from cli_helpers import write_recipe

    recipe, ckpt = write_recipe(tmp_path), write_checkpoint(tmp_path)
    code, out, err = run_cli(["plan", ckpt, "-r", recipe, "--json", "pruning.criterion=activation"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["macs_after"] / plan["macs_before"] <= 0.5 and plan["structures"] > 0
    code, _, err = run_cli(["validate", recipe, "pruning.criterion=activations"], capsys)
    assert code == 2 and "activation" in err


def test_resume_with_activation_gives_the_same_model(tmp_path, capsys):
    # eager releases, so replacements after the resume rank by the round's activations saved in state.pt
    eager = "  rectify: {rate_quantile: null, len_threshold: 0.01, patience: 1}\n"
    recipe, ckpt = activation_recipe(tmp_path, steps=20, extra=eager), write_checkpoint(tmp_path)
    ref = tmp_path / "ref"
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--run-dir", ref, "-o", ref / "m", "--json", "-q"], capsys)
    assert code == 0, err
    reference = json.loads(out)

    def interrupt(step, _loss):
        if step == 2:  # mid-decay, after the selection that used the activations, before the releases
            raise KeyboardInterrupt

    run = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        prune(load_recipe(recipe), model_path=ckpt, run_dir=run, output=run / "m",
              hooks=TrainerHooks(on_step=interrupt))
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--run-dir", run, "-o", run / "m", "--resume",
                              "--json", "-q"], capsys)
    assert code == 0, err
    a = torch.load(reference["outputs"]["module"], weights_only=False).state_dict()
    b = torch.load(json.loads(out)["outputs"]["module"], weights_only=False).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (run / "events.jsonl").read_text() == (ref / "events.jsonl").read_text()
    late = [e for e in map(json.loads, (ref / "events.jsonl").read_text().splitlines())
            if e["kind"] == "replacement" and e["step"] > 2]
    assert late  # so the resumed run did rank by the restored activations


def test_cli_prune_bert_with_activation(tmp_path, capsys):
    pytest.importorskip("transformers")
    from hf_helpers import bert_folder, text_file, write_recipe

    recipe = write_recipe(tmp_path, bert_folder(tmp_path / "bert"), text_file(tmp_path / "t.txt"))
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q", "pruning.criterion=activation"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["macs_after"] / summary["macs_before"] <= 0.85 + 1e-6
    assert summary["equivalence_error"] <= 1e-4
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert hook_count(compact) == 0 and not any(hasattr(m, "_importance") for m in compact.modules())


@pytest.mark.slow
def test_two_ranks_pick_the_same_channels_by_activation(tmp_path):
    from test_distributed import torchrun

    recipe, ckpt = activation_recipe(tmp_path), write_checkpoint(tmp_path)
    done = torchrun(["prune", ckpt, "-r", recipe, "--json", "-q"])
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["ranks"] == 2  # the run fails if the ranks' parameters or event logs differ
    assert summary["macs_after"] / summary["macs_before"] <= 0.5


def test_gpt2_conv1d_and_a_fused_gated_ffn_are_ranked_by_their_activations():
    """Two crashes found by running every head family through `criterion: activation` (both came at the
    first selection, after training had started): GPT-2's layers are transformers' Conv1D, which no
    hook watched ("collect_activations() saw no forward pass through a Linear"), and ModernBERT's fused
    Wi (gate and up in halves) made torch-pruning size the scores by the down projection's half width
    ("index 64 is out of bounds"). Both rank by column norm x RMS now, with no fallback."""
    transformers = pytest.importorskip("transformers")
    T = transformers
    x = {"input_ids": torch.randint(3, 60, (2, 10), generator=torch.Generator().manual_seed(0))}
    torch.manual_seed(0)
    gpt2 = T.GPT2Model(T.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=32)).eval()
    modernbert = T.ModernBertModel(T.ModernBertConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                                      num_hidden_layers=2, num_attention_heads=4, pad_token_id=0,
                                                      bos_token_id=1, eos_token_id=2, cls_token_id=1,
                                                      sep_token_id=2)).eval()
    from dpm_cli.hf import protected_modules
    for model, root, consumer in ((gpt2, "h.0.mlp.c_fc", "h.0.mlp.c_proj"), (modernbert, "layers.0.mlp.Wi", "layers.0.mlp.Wo")):
        pruner = pruner_for(model, x, ignore=protected_modules(model, heads=False))
        collect(pruner, model, [x])
        scores = pruner.scores()[group(pruner, root)]
        assert pruner.activation_fallback == []
        # by hand: the consumer's input column norm x RMS of its input (one forward, no padding)
        seen: list[torch.Tensor] = []
        hook = model.get_submodule(consumer).register_forward_hook(lambda m, a, o: seen.append(a[0]) and None)
        with torch.no_grad():
            model(**x)
        hook.remove()
        rms = seen[0].reshape(-1, seen[0].shape[-1]).square().mean(0).sqrt()
        raw = input_column_norms(model.get_submodule(consumer)) * rms
        if scores.numel() == raw.numel():  # GPT-2: channel j is c_proj's input j
            assert torch.allclose(scores, raw / raw.mean(), rtol=1e-4)
        else:  # ModernBERT: Wo reads one half of Wi's rows (scored), the other half gates it (zero)
            halves = scores.reshape(2, -1)
            read = int(halves[1].abs().sum() > 0)
            assert torch.all(halves[1 - read] == 0)
            assert torch.allclose(halves[read], raw / (raw.sum() / scores.numel()), rtol=1e-4)
