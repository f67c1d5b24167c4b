"""Mixture-of-experts FFNs (transformers' stacked experts, `engine.experts`), from tiny random configs:
every expert of a layer loses the same, least important units, removed exactly, counted in MACs,
saved as a folder from_pretrained loads, and replayed from the dpm artifact. Before, every such model
was refused ("routes tokens to a mixture of experts ... no rule to prune")."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import cut_half, decoder_tokenizer, no_warning_load, text_file  # noqa: E402

from dpm_cli.engine.experts import describe, find_expert_groups  # noqa: E402
from dpm_cli.hf import load_hf, save_hf  # noqa: E402
from dpm_cli.hf.prunable import expert_layers, ffn_layers  # noqa: E402
from dpm_cli.hf.save import format_problem  # noqa: E402
from dpm_cli.report.counting import count_model  # noqa: E402

T = transformers
BASE = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, max_position_embeddings=64, num_experts_per_tok=2)
FAMILIES = {  # family -> (model class, config class, kwargs); units per expert 16 or 24
    "mixtral": (T.MixtralModel, T.MixtralConfig, dict(BASE, intermediate_size=24, num_local_experts=4)),
    "qwen3_moe": (T.Qwen3MoeModel, T.Qwen3MoeConfig, dict(BASE, moe_intermediate_size=16, num_experts=4)),
    # a shared expert beside the routed ones, pruned too (shared_expert_intermediate_size, its own key)
    "qwen2_moe": (T.Qwen2MoeModel, T.Qwen2MoeConfig, dict(BASE, moe_intermediate_size=16, num_experts=4,
                                                          shared_expert_intermediate_size=40)),
    "olmoe": (T.OlmoeModel, T.OlmoeConfig, dict(BASE, intermediate_size=24, num_experts=4, pad_token_id=0,
                                                eos_token_id=0)),
    "granitemoe": (T.GraniteMoeModel, T.GraniteMoeConfig, dict(BASE, intermediate_size=24, num_local_experts=4)),
}


def build(family: str, cls=None):
    model_cls, config, kwargs = FAMILIES[family]
    torch.manual_seed(0)
    return (cls or model_cls)(config(**kwargs)).eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(3, 64, (2, 12), generator=g), "attention_mask": torch.ones(2, 12, dtype=torch.long)}


def expert_norms(module) -> torch.Tensor:
    """[experts, units]: each expert's own joint norm of a unit (gate and up rows, down column)."""
    lay = describe("", module)
    gate_up = module.gate_up_proj.detach().square().sum(-1)  # [E, 2I] (not transposed)
    per_unit = gate_up[:, :lay.width] + gate_up[:, lay.width:] + module.down_proj.detach().square().sum(1)
    return per_unit.sqrt()


def test_aligning_the_experts_keeps_the_function_and_orders_every_experts_units():
    model, x = build("mixtral"), inputs()
    with torch.no_grad():
        before = model(**x).last_hidden_state
        groups, skipped = find_expert_groups(model, [])
        after = model(**x).last_hidden_state
    assert [g.name for g in groups] == ["layers.0.mlp.experts", "layers.1.mlp.experts"] and not skipped
    assert torch.allclose(before, after, atol=1e-5)
    norms = expert_norms(model.layers[0].mlp.experts)
    assert bool((norms[:, 1:] >= norms[:, :-1]).all())  # unit j is each expert's j-th weakest
    assert all(g.kind == "experts" and g.channels == 24 and g.macs_module == g.name for g in groups)
    snapshot = model.layers[0].mlp.experts.gate_up_proj.detach().clone()
    find_expert_groups(model, [])  # once per module: a second discovery does not reorder again
    assert torch.equal(model.layers[0].mlp.experts.gate_up_proj, snapshot)
    # a resumed run aligns the freshly loaded original before loading its checkpoint: the same order
    fresh = build("mixtral")
    find_expert_groups(fresh, [])
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_grouped_mm_experts_are_counted_in_macs():
    model, x = build("mixtral"), {"input_ids": torch.randint(3, 64, (1, 12))}
    count = count_model(model, x)
    assert count.unknown_ops == []
    experts = count.layer("layers.0.mlp.experts")
    # 12 tokens x 2 experts each x (gate_up 32 -> 48 + down 24 -> 32)
    assert experts.macs == 12 * 2 * (32 * 48 + 24 * 32) and experts.width == 24  # units per expert


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_half_the_units_of_every_expert_removed_exactly_and_saved_as_a_folder(tmp_path, family):
    build(family).save_pretrained(str(tmp_path / family))
    model, x = load_hf(tmp_path / family).model, inputs()
    before = ffn_layers(model)
    assert expert_layers(model) and format_problem(model, "layer", 0.0) is None
    pruner = cut_half(model, x, 0.0)
    projected = pruner.progress()
    result = pruner.compact()
    assert result.max_rel_error <= 1e-5
    assert ffn_layers(model) == {name: w // 2 for name, w in before.items()}
    assert result.macs_kept == pytest.approx(projected.macs_kept, rel=1e-6) and result.macs_kept < 0.9
    assert result.params_kept == pytest.approx(projected.params_kept, rel=1e-6)
    assert any(step[0] == "dpm:experts" for step in result.history)
    reloaded = no_warning_load(save_hf(model, None, tmp_path / "out"), T.AutoModel)
    assert ffn_layers(reloaded) == ffn_layers(model)
    if family == "qwen2_moe":
        assert reloaded.config.shared_expert_intermediate_size == 20 and reloaded.config.moe_intermediate_size == 8
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).last_hidden_state, model(**x).last_hidden_state, atol=1e-6)


def gpt_oss():
    config = T.GptOssConfig(vocab_size=64, hidden_size=32, intermediate_size=24, num_hidden_layers=1,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=4,
                            num_experts_per_tok=2, max_position_embeddings=64)
    torch.manual_seed(0)
    return T.GptOssModel(config).eval()


def test_transposed_interleaved_experts_with_biases_lose_whole_units_exactly():
    """GPT-OSS stores gate_up_proj [experts, hidden, 2 x units] with gate and up interleaved, and biases."""
    moe = gpt_oss().layers[0].mlp
    lay = describe("experts", moe.experts)
    assert (lay.in_dim, lay.down_dim, lay.interleaved, lay.inputs) == (2, 1, True, ("gate_up_proj", "gate_up_proj_bias"))
    x = torch.randn(1, 10, 32)
    [group], _ = find_expert_groups(moe, [])
    weakest = list(range(12))
    with torch.no_grad():
        for s in group.slices:  # what the decay ends in: the weakest half of every expert at exact zero
            s.param.index_fill_(s.dim, s.local[torch.isin(s.root, torch.tensor(weakest))], 0.0)
        zeroed = moe(x)[0] if isinstance(moe(x), tuple) else moe(x)
        group.remove(weakest)
        out = moe(x)[0] if isinstance(moe(x), tuple) else moe(x)
    assert tuple(moe.experts.gate_up_proj.shape) == (4, 32, 24) and tuple(moe.experts.down_proj.shape) == (4, 12, 32)
    assert tuple(moe.experts.gate_up_proj_bias.shape) == (4, 24)
    assert torch.allclose(zeroed, out, atol=1e-6)


def test_gpt_oss_heads_leave_with_their_attention_sinks_and_are_saved_as_a_folder(tmp_path):
    """GPT-OSS's attention adds a learned logit per head (`sinks`) to the softmax, so its heads were
    refused ("its own parameter sinks [4] is not removed with a head"). A key/value head now leaves with
    its query heads and their sinks, exactly, and the folder records the counts (head_dim is stated)."""
    gpt_oss().save_pretrained(str(tmp_path / "m"))
    model, x = load_hf(tmp_path / "m").model, inputs()
    assert format_problem(model, "layer", 0.5) is None
    assert cut_half(model, x, 0.5).compact().max_rel_error <= 1e-5
    attn = model.layers[0].self_attn
    assert (attn.sinks.numel(), attn.q_proj.out_features, attn.k_proj.out_features) == (2, 2 * 8, 8)
    reloaded = no_warning_load(save_hf(model, None, tmp_path / "out"), T.AutoModel)
    assert (reloaded.config.num_attention_heads, reloaded.config.num_key_value_heads) == (2, 1)
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).last_hidden_state, model(**x).last_hidden_state, atol=1e-6)


def test_expert_units_leave_in_blocks_the_grouped_matmul_can_run():
    """GPT-OSS's experts run in torch._grouped_mm, which needs rows aligned to 16 bytes: with a MACs budget
    that removed 23 of 24 float32 units the preflight refused ("strides should be multiple of 16 bytes")
    and the advice was to keep the experts. Units now leave 4 at a time (8 for bfloat16)."""
    from dpm_cli import DecayPruner, DPMConfig
    from dpm_cli.engine.selection import score_groups, select
    from dpm_cli.hf import protected_modules

    model, x = gpt_oss(), inputs()
    cfg = DPMConfig(budget=0.85, budget_kind="macs", decay_steps=1, ignore=protected_modules(model, heads=False))
    pruner = DecayPruner(model, x, cfg)  # the preflight rehearses this budget's selection
    [experts] = [g for g in pruner.groups if g.kind == "experts"]
    assert experts.block == 4
    keys = select(pruner.groups, pruner.cost, cfg, cfg.budget, set(), set(), score_groups(pruner.groups, "magnitude", 0))
    gi = pruner.groups.index(experts)
    removed = sum(1 for g, _ in keys if g == gi)
    assert removed % 4 == 0 and removed > 0
    pruner.prune_now(keys)
    assert pruner.compact().max_rel_error <= 1e-5
    assert model.layers[0].mlp.experts.down_proj.shape[1] == 24 - removed


def test_the_artifact_replays_the_expert_units_removed(tmp_path):
    import dpm_cli
    from artifact_helpers import save
    from dpm_cli.artifact import make_artifact
    from dpm_cli.hf.artifact import hf_provenance

    build("qwen3_moe").save_pretrained(str(tmp_path / "m"))
    model, x = load_hf(tmp_path / "m").model, inputs()
    prov, why = hf_provenance(model, x)
    assert why is None
    result = cut_half(model, x, 0.0).compact()
    rebuilt = dpm_cli.load(save(make_artifact(model, prov.with_stage(result.history)), tmp_path / "m.dpm.pt")).eval()
    assert expert_layers(rebuilt) == expert_layers(model) == {"layers.0.mlp.experts": 8, "layers.1.mlp.experts": 8}
    with torch.no_grad():
        assert torch.allclose(rebuilt(**x).last_hidden_state, model(**x).last_hidden_state, atol=1e-6)


def test_shared_experts_sized_from_the_expert_width_are_refused_for_a_folder_before_training():
    """GLM-4-MoE (like DeepSeek-V3 and ERNIE-4.5-MoE) sizes its shared experts, which dpm keeps, from
    moe_intermediate_size: a folder would re-size them, so it is refused before training; the units are
    still removed exactly (for .dpm.pt and .pt2)."""
    config = T.Glm4MoeConfig(**dict(BASE, intermediate_size=48, moe_intermediate_size=16, n_routed_experts=4,
                                    n_shared_experts=1, first_k_dense_replace=0, n_group=1, topk_group=1))
    torch.manual_seed(0)
    model = T.Glm4MoeModel(config).eval()
    problem = format_problem(model, "layer", 0.0)
    assert "Glm4MoeConfig.moe_intermediate_size also sizes layers dpm keeps (layers.0.mlp.shared_experts" in problem
    assert "set output.hf: false" in problem
    x = inputs()
    assert cut_half(model, x, 0.0).compact().max_rel_error <= 1e-5
    assert set(ffn_layers(model).values()) == {8}
    assert model.layers[0].mlp.shared_experts.gate_proj.out_features == 16  # kept whole


def moe_folder(folder):
    tok = decoder_tokenizer(["<unk>", "<s>", "</s>"], bos="<s>", eos="</s>", unk="<unk>")
    kwargs = dict(FAMILIES["qwen3_moe"][2], vocab_size=len(tok), bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    T.Qwen3MoeForCausalLM(T.Qwen3MoeConfig(**kwargs)).eval().save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


RECIPE = """\
version: 1
model:
  hf: {{path: {folder}, task: AutoModelForCausalLM}}
  seq_len: 12
data: {{source: text, path: {data}, batch_size: 8, eval_batch_size: 16}}
objective: {{kind: distill, targets: [logits]}}
pruning:
  budget: {{kind: channels, keep: 0.5}}
  ranking: layer
  head_ratio: 0
  criterion: obs
  decay_steps: 2
training:
  steps: 6
  log_every: 3
  optimizer: {{name: adamw, lr: 1.0e-3, weight_decay: 0.0}}
output: {{dir: {run}, hf: true, formats: [module]}}
"""


def test_cli_prunes_a_mixture_of_experts_causal_lm_with_dpm_and_writes_a_folder(tmp_path, capsys):
    folder = moe_folder(tmp_path / "moe")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(folder=folder, data=text_file(tmp_path / "t.txt", 24), run=tmp_path / "run"))
    code, out, err = run_cli(["prune", "-r", recipe, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["equivalence_error"] <= 1e-5 and summary["macs_after"] < summary["macs_before"]
    reloaded = no_warning_load(tmp_path / "run" / "model-hf", T.AutoModelForCausalLM)
    assert reloaded.config.moe_intermediate_size == 8
    assert expert_layers(reloaded) == {"model.layers.0.mlp.experts": 8, "model.layers.1.mlp.experts": 8}


@pytest.mark.parametrize("family, kwargs", [
    # Llama 4: experts without transformers' layout flags (transposed, gate and up in halves), a router
    # that is an nn.Linear returning (scores, logits), and a shared expert (feed_forward.shared_expert)
    ("llama4_text", dict(BASE, intermediate_size=16, intermediate_size_mlp=48, num_local_experts=4,
                         num_experts_per_tok=1, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    # PhiMoE: a router that is an nn.Linear subclass with a forward of its own
    ("phimoe", dict(BASE, intermediate_size=16, num_local_experts=4, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
], ids=["llama4", "phimoe"])
def test_routers_that_torch_pruning_could_not_trace_and_unflagged_experts(tmp_path, family, kwargs):
    """Both failed torch-pruning's trace ("'tuple' object has no attribute 'shape'": it reads the
    output shape of every Linear it hooks before unpacking a tuple), and Llama 4's experts were refused
    ("without transformers' layout flags"). Now every expert and shared expert loses half its units,
    exactly, and the folder reloads with the same outputs."""
    base = T.AutoConfig.for_model(family).to_dict()
    torch.manual_seed(0)
    T.AutoModel.from_config(T.AutoConfig.for_model(family, **{k: v for k, v in kwargs.items() if k in base})
                            ).save_pretrained(str(tmp_path / "in"))
    model, x = load_hf(tmp_path / "in").model, inputs()
    before = ffn_layers(model)
    assert expert_layers(model)  # the experts are recognised
    assert cut_half(model, x).compact().max_rel_error <= 1e-5
    assert ffn_layers(model) == {layer: width // 2 for layer, width in before.items()}
    reloaded = no_warning_load(save_hf(model, None, tmp_path / "out", x), T.AutoModel)
    assert ffn_layers(reloaded) == ffn_layers(model)
