"""The common transformers families beyond the ones with their own test files, from tiny random configs
(hidden 32, 2 layers (encoder-decoders: 1 + 1), 4 heads, vocab 64, FFN 64): each either has half its FFN
width pruned exactly and saved as a folder `from_pretrained` loads, or is refused in one line before any
training. docs/HF_FAMILIES.md is the table of these results."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import cut_half, no_warning_load, text_file, write_recipe  # noqa: E402

from dpm_cli.errors import ConfigError  # noqa: E402
from dpm_cli.hf import HFFormatError, load_hf, protected_modules, save_hf  # noqa: E402
from dpm_cli.hf.prunable import ffn_layers, head_problem  # noqa: E402
from dpm_cli.hf.save import format_problem, head_counts  # noqa: E402

T = transformers
LM = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
          max_position_embeddings=64)
GQA = dict(LM, num_key_value_heads=2)
GPTJ = dict(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_inner=64, rotary_dim=4, n_positions=64,
            bos_token_id=0, eos_token_id=0)
SEQ2SEQ = dict(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
               decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=48, max_position_embeddings=64)

# family -> (model class, config class, config kwargs)
PRUNED = {
    "qwen2": (T.Qwen2Model, T.Qwen2Config, GQA),  # no head_dim in its config: dpm writes one
    "mistral": (T.MistralModel, T.MistralConfig, dict(GQA, head_dim=8)),
    "gemma": (T.GemmaModel, T.GemmaConfig, dict(GQA, head_dim=8)),
    "phi": (T.PhiModel, T.PhiConfig, LM),  # phi-2: mlp.fc1, attention output named dense
    "gptj": (T.GPTJModel, T.GPTJConfig, GPTJ),  # mlp.fc_in / fc_out, width in n_inner
    "codegen": (T.CodeGenModel, T.CodeGenConfig, dict(GPTJ, n_ctx=64)),
    "gpt_neox": (T.GPTNeoXModel, T.GPTNeoXConfig, LM),
    "falcon": (T.FalconModel, T.FalconConfig, dict(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=4, ffn_hidden_size=64)),
    "mpnet": (T.MPNetModel, T.MPNetConfig, LM),  # all-mpnet-base-v2's family
    "xlm_roberta": (T.XLMRobertaModel, T.XLMRobertaConfig, LM),
    "deberta_v2": (T.DebertaV2Model, T.DebertaV2Config, LM),
    "bart": (T.BartModel, T.BartConfig, SEQ2SEQ),  # one width per stack: encoder_ffn_dim, decoder_ffn_dim
    # other head counts in the decoder than in the encoder: nothing pruned there, so nothing to record
    "bart_heads_differ": (T.BartModel, T.BartConfig, dict(SEQ2SEQ, decoder_attention_heads=2)),
    "t5": (T.T5Model, T.T5Config, dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                                        decoder_start_token_id=0)),
    # gate and up fused in one Linear, split in halves (mlp.gate_up_proj, mlp.Wi): a unit is two rows
    "phi3": (T.Phi3Model, T.Phi3Config, dict(GQA, pad_token_id=0, eos_token_id=0, bos_token_id=0)),
    "glm": (T.GlmModel, T.GlmConfig, dict(GQA, head_dim=8, pad_token_id=0, eos_token_id=0)),
    "modernbert": (T.ModernBertModel, T.ModernBertConfig, dict(LM, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                                                cls_token_id=1, sep_token_id=2)),
    # newer decoders (transformers 5): llama-style attention and a gated MLP beside other mixers
    "falcon_h1": (T.FalconH1Model, T.FalconH1Config, dict(GQA, head_dim=8, mamba_d_ssm=32, mamba_n_heads=4,
                                                          mamba_d_head=8, mamba_d_state=4, mamba_chunk_size=16)),
    "bamba": (T.BambaModel, T.BambaConfig, dict(GQA, mamba_n_heads=4, mamba_d_head=16, mamba_d_state=4,
                                                mamba_chunk_size=16, attn_layer_indices=[1])),  # Mamba 2 + attention
    "dots1": (T.Dots1Model, T.Dots1Config, dict(GQA, head_dim=8, first_k_dense_replace=2)),  # dense layers only
    "cohere2": (T.Cohere2Model, T.Cohere2Config, dict(GQA, head_dim=8)),
    "arcee": (T.ArceeModel, T.ArceeConfig, dict(GQA, head_dim=8)),  # up and down projections, no gate
    "apertus": (T.ApertusModel, T.ApertusConfig, dict(GQA, head_dim=8, max_position_embeddings=16384)),  # xIELU
    "seed_oss": (T.SeedOssModel, T.SeedOssConfig, dict(GQA, head_dim=8)),
    "ernie4_5": (T.Ernie4_5Model, T.Ernie4_5Config, dict(GQA, head_dim=8)),
    "vaultgemma": (T.VaultGemmaModel, T.VaultGemmaConfig, dict(GQA, head_dim=8)),
    "jais2": (T.Jais2Model, T.Jais2Config, dict(GQA, head_dim=8)),
    "nanochat": (T.NanoChatModel, T.NanoChatConfig, dict(GQA, head_dim=8)),
    "ministral": (T.MinistralModel, T.MinistralConfig, dict(GQA, head_dim=8)),
    "hunyuan_v1_dense": (T.HunYuanDenseV1Model, T.HunYuanDenseV1Config, dict(GQA, head_dim=8)),
    "glm4": (T.Glm4Model, T.Glm4Config, dict(GQA, head_dim=8, pad_token_id=0)),
    "cwm": (T.CwmModel, T.CwmConfig, dict(GQA, head_dim=8, max_position_embeddings=16384)),
    # attention with layers of its own across heads: FFN only (heads refused, below)
    "olmo2": (T.Olmo2Model, T.Olmo2Config, dict(GQA, pad_token_id=0)),  # q_norm / k_norm over all heads (rescaled)
    "convbert": (T.ConvBertModel, T.ConvBertConfig, dict(LM, embedding_size=32)),  # span-based convolution
    "nystromformer": (T.NystromformerModel, T.NystromformerConfig, LM),  # depthwise conv over heads
    "helium": (T.HeliumModel, T.HeliumConfig, dict(GQA, head_dim=8)),  # o_proj sized by hidden_size
    # feed_forward.w1 / w3 (gate and up); with block_auto_adjust_ff_dim (its default) the width is derived
    "lfm2": (T.Lfm2Model, T.Lfm2Config, dict(GQA, block_auto_adjust_ff_dim=False)),
    # Mamba and attention layers; a dense feed_forward.gate_proj / up_proj, then stacked experts
    # one layer's weights shared by every layer: a unit (or head) leaves all of them at once
    "albert": (T.AlbertModel, T.AlbertConfig, dict(LM, embedding_size=16)),
    "jamba": (T.JambaModel, T.JambaConfig, dict(GQA, num_experts=4, num_experts_per_tok=2, attn_layer_offset=1,
                                                attn_layer_period=2, expert_layer_offset=1, expert_layer_period=2,
                                                mamba_d_state=4, mamba_dt_rank=4)),
}
REFUSED = {
    "fsmt": (T.FSMTModel, T.FSMTConfig, dict(langs=["en", "de"], src_vocab_size=64, tgt_vocab_size=64, d_model=32,
                                             encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                                             decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                             max_position_embeddings=64)),  # its attention checks embed_dim
    "bloom": (T.BloomModel, T.BloomConfig, dict(vocab_size=64, hidden_size=32, n_layer=2, n_head=4)),
    "phi_qk_norm": (T.PhiModel, T.PhiConfig, dict(LM, qk_layernorm=True)),
    "mpt": (T.MptModel, T.MptConfig, dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, max_seq_len=64)),
    "xlm": (T.XLMModel, T.XLMConfig, dict(vocab_size=64, emb_dim=32, n_layers=2, n_heads=4, max_position_embeddings=64)),
    "lfm2_auto_width": (T.Lfm2Model, T.Lfm2Config, dict(GQA)),
    # dense mlp.wi layers pruned; the experts' wi (protected) share d_ff
    "switch": (T.SwitchTransformersModel, T.SwitchTransformersConfig,
               dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                    num_experts=4, encoder_sparse_step=2, decoder_sparse_step=2, decoder_start_token_id=0)),
}
SEQ2SEQ_FAMILIES = ("bart", "bart_heads_differ", "t5", "fsmt", "switch")


def build(family: str):
    cls, config, kwargs = {**PRUNED, **REFUSED}[family]
    torch.manual_seed(0)
    return cls(config(**kwargs)).eval()


def folder(tmp_path, family):
    build(family).save_pretrained(str(tmp_path / family))
    return load_hf(tmp_path / family).model  # as dpm loads it (a decoder's use_cache set aside)


def inputs(family):
    g = torch.Generator().manual_seed(1)
    x = {"input_ids": torch.randint(3, 64, (1, 12), generator=g), "attention_mask": torch.ones(1, 12, dtype=torch.long)}
    if family in SEQ2SEQ_FAMILIES:
        x["decoder_input_ids"] = torch.randint(3, 64, (1, 6), generator=g)
    return x


def prune(model, x, head_ratio):
    return cut_half(model, x, head_ratio).compact()


def reload_matches(model, saved, x):
    """AutoModel loads the folder with no warning and gives the compact model's outputs. (save_hf is
    called without example inputs, so that this is the one reload: from_pretrained is the slow part.)"""
    reloaded = no_warning_load(saved, T.AutoModel)
    with torch.no_grad():
        return reloaded, torch.allclose(reloaded(**x).last_hidden_state, model(**x).last_hidden_state, atol=1e-6)


@pytest.mark.parametrize("family", sorted(PRUNED))
def test_ffn_half_pruned_exactly_and_saved_as_a_folder(tmp_path, family):
    model, x = folder(tmp_path, family), inputs(family)
    before = ffn_layers(model)
    assert format_problem(model, "layer", 0.0) is None and head_problem(model, 0.0) is None
    result = prune(model, x, 0.0)
    assert result.max_rel_error <= 1e-5
    assert list(ffn_layers(model).values()) == [w // 2 for w in before.values()]
    reloaded, same = reload_matches(model, save_hf(model, None, tmp_path / "out"), x)
    assert same
    assert list(ffn_layers(reloaded).values()) == [w // 2 for w in before.values()]


@pytest.mark.parametrize("family", ["qwen2", "phi", "phi3"])
def test_llama_style_heads_whose_config_lacks_head_dim_are_saved_with_one(tmp_path, family):
    model, x = folder(tmp_path, family), inputs(family)
    assert "head_dim" not in model.config.to_dict() or family == "phi"
    assert format_problem(model, "layer", 0.5) is None
    assert prune(model, x, 0.5).max_rel_error <= 1e-5
    counts = head_counts(model)
    assert counts == [counts[0]] * 2 and counts[0][0] == 2  # half the query heads of every layer
    reloaded, same = reload_matches(model, save_hf(model, None, tmp_path / "out"), x)
    assert same and reloaded.config.head_dim == 8 and reloaded.config.num_attention_heads == 2


@pytest.mark.parametrize("family", ["falcon_h1", "bamba", "cohere2", "arcee", "apertus", "nanochat"])
def test_newer_decoders_lose_whole_key_value_groups_and_are_saved_as_a_folder(tmp_path, family):
    model, x = folder(tmp_path, family), inputs(family)
    assert format_problem(model, "layer", 0.5) is None and head_problem(model, 0.5) is None
    assert prune(model, x, 0.5).max_rel_error <= 1e-5
    counts = head_counts(model)
    assert counts and all(c == (2, 1) for c in counts)  # half of the query heads, with their key/value head
    reloaded, same = reload_matches(model, save_hf(model, None, tmp_path / "out"), x)
    assert same and reloaded.config.num_attention_heads == 2 and reloaded.config.num_key_value_heads == 1


def test_phi3_fused_qkv_loses_whole_key_value_groups_per_layer_and_the_artifact_replays(tmp_path):
    """Phi-3's qkv_proj is [q | k | v] and its forward ends q at config.num_attention_heads x head_dim,
    a config every layer shares: a layer that loses heads keeps its own count (here layer 1 loses one of
    its two groups of 2 query heads, layer 0 none), the model's config is left alone, exactly, a folder
    is refused in one line (one head count per config), and the dpm artifact replays the shapes."""
    import dpm_cli
    from artifact_helpers import save
    from dpm_cli import DecayPruner, DPMConfig
    from dpm_cli.artifact import make_artifact
    from dpm_cli.hf.artifact import hf_provenance

    model, x = folder(tmp_path, "phi3"), inputs("phi3")
    prov, why = hf_provenance(model, x)
    assert why is None
    cfg = DPMConfig(budget=0.9, budget_kind="channels", decay_steps=1, head_ratio=0.5, ignore=protected_modules(model))
    pruner = DecayPruner(model, x, cfg)
    heads = [gi for gi, g in enumerate(pruner.groups) if g.kind == "heads"]
    assert [pruner.groups[gi].n_units for gi in heads] == [2, 2]  # a key/value head with its 2 query heads
    pruner.prune_now([(heads[1], 0)])
    result = pruner.compact()
    assert result.max_rel_error <= 1e-5
    assert head_counts(model) == [(4, 2), (2, 1)] and model.config.num_attention_heads == 4
    assert model.layers[1].self_attn.qkv_proj.out_features == (2 + 2 * 1) * 8
    with pytest.raises(HFFormatError, match="differ but Phi3Config holds one num_attention_heads"):
        save_hf(model, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    rebuilt = dpm_cli.load(save(make_artifact(model, prov.with_stage(result.history)), tmp_path / "m.dpm.pt")).eval()
    assert head_counts(rebuilt) == [(4, 2), (2, 1)]
    with torch.no_grad():
        assert torch.allclose(rebuilt(**x).last_hidden_state, model(**x).last_hidden_state, atol=1e-6)


@pytest.mark.parametrize("family, layer", [
    ("convbert", "key_conv_attn_layer"), ("nystromformer", "conv (Conv2d)"),
])
def test_attention_with_layers_across_heads_is_refused_for_heads_in_one_line(family, layer):
    """Found by sweeping transformers' families: ConvBERT and Nystromformer convolve across heads
    (OLMo 2's norms across heads are rescaled now: tests/test_hf_llama.py); removing a head changes those layers, so the heads are refused
    (naming the layer) while the FFN is pruned (above). Before, a rehearsal of head removal refused
    the whole model, FFN included, even with head_ratio 0."""
    problem = head_problem(build(family), 0.25)
    assert layer in problem and "spans more than one head" in problem and "\n" not in problem


def test_heads_whose_removal_breaks_the_forward_are_refused_by_the_preflight_with_the_head_fix():
    """FSMT's attention asserts its input width equals embed_dim, which its heads' width also is: the
    rehearsal of the removal fails before training, and the line says to keep the heads."""
    from dpm_cli.errors import PreflightError

    with pytest.raises(PreflightError, match=r"removing attention heads of encoder\.layers\.0\.self_attn breaks the "
                                             r"model before any training .*set pruning\.head_ratio: 0 to keep every head"):
        cut_half(build("fsmt"), inputs("fsmt"), 0.5)


def test_heads_whose_output_projection_the_config_fixes_are_refused_for_a_folder_before_training():
    # Helium's o_proj is Linear(hidden_size, hidden_size) whatever the head count: found at save time before.
    problem = format_problem(build("helium"), "layer", 0.5)
    assert "HeliumConfig cannot record pruned attention heads" in problem


def test_albert_shared_layer_loses_units_and_heads_in_every_layer_at_once_and_its_cost_counts_each_use(tmp_path, capsys):
    """ALBERT runs one layer's weights in every layer; it was refused whole ("dpm does not prune shared
    weights"). A unit or head of the shared layer leaves every layer at once, exactly, and the cost
    model counts it once per layer it runs in: the MACs it projects are the MACs measured. Through
    `dpm prune` with DPM's decay over training steps, `criterion: obs` and the refit, and saved as a folder."""
    from dpm_cli import DecayPruner, DPMConfig
    from dpm_cli.engine.selection import score_groups, select
    from hf_helpers import tokenizer

    model, x = build("albert"), inputs("albert")
    cfg = DPMConfig(budget=0.8, budget_kind="macs", decay_steps=1, head_ratio=0.25, ignore=protected_modules(model))
    pruner = DecayPruner(model, x, cfg)
    assert sorted(g.kind for g in pruner.groups) == ["channels", "heads"]  # one FFN, one attention, for 2 layers
    keys = select(pruner.groups, pruner.cost, cfg, cfg.budget, set(), set(), score_groups(pruner.groups, "magnitude", 0))
    pruner.cost.reset()
    pruner.cost.remove_many(keys)
    projected = pruner.cost.kept("macs")
    pruner.prune_now(keys)
    result = pruner.compact()
    assert result.max_rel_error <= 1e-5 and result.macs_after / result.macs_before == pytest.approx(projected, rel=1e-9)
    folder = tmp_path / "albert"
    tok = tokenizer(folder)
    torch.manual_seed(0)
    T.AlbertModel(T.AlbertConfig(**dict(LM, vocab_size=len(tok), embedding_size=16))).eval().save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt"))
    # the MiniLM recipes' criterion and refit: the refit stopped the run mid-training ("expected one call of
    # the layer per forward"); a layer shared by several layers is now left as it is
    recipe.write_text(recipe.read_text().replace("  decay_steps: 2\n", "  decay_steps: 2\n  criterion: obs\n"
                                                 "  reconstruct: true\n  recalibrate_bn: {batches: 2}\n"))
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    saved = no_warning_load(json.loads(out)["outputs"]["hf"], T.AutoModel)
    assert saved.config.intermediate_size < 64


@pytest.mark.parametrize("family, phrase", [
    # BLOOM's FFN is 4 x hidden_size whatever its config holds, MPT's expansion_ratio x d_model, XLM's
    # 4 x emb_dim (ffns.N.lin1); LFM2 derives it from intermediate_size unless block_auto_adjust_ff_dim is off
    ("bloom", "BloomConfig has no config key for the FFN width"),
    ("mpt", "MptConfig has no config key for the FFN width of blocks.0"),
    ("xlm", "XLMConfig has no config key for the FFN width of ffns.0"),
    ("lfm2_auto_width", "Lfm2Config.intermediate_size does not set the width of every FFN dpm prunes"),
    ("switch", "SwitchTransformersConfig.d_ff also sizes layers dpm keeps"),
])
def test_an_ffn_width_no_config_key_holds_is_refused_for_a_folder_before_training_and_pruned_exactly(family, phrase):
    model = build(family)
    problem = format_problem(model, "layer", 0.0)
    assert phrase in problem and "output.hf: false" in problem
    assert prune(model, inputs(family), 0.0).max_rel_error <= 1e-5  # exact: only the folder is impossible


def test_an_ffn_left_unpruned_beside_pruned_ones_of_the_same_key_is_refused_before_training(tmp_path, capsys):
    """pruning.ignore naming one FFN of a BERT folder with output.hf: the run trained to the end and then
    refused to save ("the FFN widths differ per layer ... holds one intermediate_size"). Once the groups
    are known, the FFN without one is named, before any data is read or any step runs."""
    from hf_helpers import bert_folder

    recipe = write_recipe(tmp_path, bert_folder(tmp_path / "bert"), text_file(tmp_path / "t.txt"))
    recipe.write_text(recipe.read_text().replace("  head_ratio: 0.0\n",
                                                 "  head_ratio: 0.0\n  ignore: [encoder.layer.0.intermediate.dense]\n"))
    capsys.readouterr()
    code, out, err = run_cli(["prune", "-r", recipe], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "the FFN of encoder.layer.0 is not pruned" in errors[0] and "BertConfig.intermediate_size" in errors[0]
    assert not any((tmp_path / "run").glob("*.jsonl")) and not (tmp_path / "run" / "state.pt").exists()


def test_a_shape_the_config_cannot_hold_is_a_format_error_at_save_and_nothing_is_written(tmp_path, monkeypatch):
    model, x = build("bloom"), inputs("bloom")
    assert prune(model, x, 0.0).max_rel_error <= 1e-5  # exact: only the folder is impossible
    with pytest.raises(HFFormatError, match=r"BloomConfig cannot describe the compact model \(h\.0\.mlp"):
        save_hf(model, None, tmp_path / "out", x)
    assert not (tmp_path / "out").exists()
    # Where the architecture cannot be asked, the reload check says the same instead of a RuntimeError.
    monkeypatch.setattr("dpm_cli.hf.save.shape_mismatch", lambda *a: None)
    with pytest.raises(HFFormatError, match="the saved folder does not load as BloomModel"):
        save_hf(model, None, tmp_path / "out", x)
    assert [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.parametrize("family", ["phi_qk_norm", "xlm_roberta"])
def test_heads_a_config_cannot_record_are_refused_for_a_folder(family):
    # Phi's qk-LayerNorm is sized hidden_size / num_attention_heads; XLM-R's head size is.
    problem = format_problem(build(family), "layer", 0.5)
    assert "cannot record pruned attention heads" in problem and "head_ratio: 0" in problem


@pytest.mark.parametrize("family", ["bloom", "mpt"])
def test_head_ratio_without_a_head_rule_is_refused_instead_of_ignored(family):
    model = build(family)
    problem = head_problem(model, 0.25)
    assert f"pruning.head_ratio is 0.25 but dpm prunes no attention heads of {type(model).__name__}" in problem
    assert "set pruning.head_ratio: 0" in problem
    assert head_problem(model, 0.0) is None and head_problem(model, None) is None


@pytest.mark.parametrize("family, head_ratio, phrase", [
    ("mpt", 0.0, "MptConfig has no config key for the FFN width"),
    ("bloom", 0.0, "BloomConfig has no config key for the FFN width"),
    ("bloom", 0.25, "dpm prunes no attention heads of BloomModel"),
])
def test_cli_refuses_in_one_line_before_training(tmp_path, capsys, family, head_ratio, phrase):
    build(family).save_pretrained(str(tmp_path / family))
    recipe = write_recipe(tmp_path, tmp_path / family, text_file(tmp_path / "t.txt", 8), head_ratio=head_ratio)
    capsys.readouterr()
    code, out, err = run_cli(["prune", "-r", recipe], capsys)
    assert code == 2 and phrase in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_cli_prunes_a_phi3_folder_with_obs_and_refit_and_writes_one_that_loads(tmp_path, capsys):
    """Phi-3's fused gate_up_proj through `dpm prune`: the OBS criterion and the refit read the down
    projection's columns, each the unit of one row of each half; the folder records the width."""
    import json

    from hf_helpers import decoder_tokenizer

    path = tmp_path / "phi3"
    build("phi3").save_pretrained(str(path))
    decoder_tokenizer(["<unk>", "<s>", "</s>"], "<s>", "</s>", "<unk>").save_pretrained(str(path))
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 24))
    capsys.readouterr()
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "pruning.criterion=obs", "pruning.reconstruct=true"],
                             capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["equivalence_error"] <= 1e-5 and summary["macs_after"] / summary["macs_before"] <= 0.85 + 1e-6
    reloaded = no_warning_load(tmp_path / "run" / "model-hf", T.AutoModel)
    width = reloaded.config.intermediate_size
    assert width < 64 and all(layer.mlp.gate_up_proj.out_features == 2 * width for layer in reloaded.layers)
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    x = inputs("phi3")
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).last_hidden_state, compact(**x).last_hidden_state, atol=1e-5)


def test_t5_encoder_alone_through_the_cli(tmp_path, capsys):
    """The encoder alone (model.hf.task: AutoModelForTextEncoding, T5EncoderModel, as sentence-t5 uses it)
    is pruned and saved as a folder; the whole model is tests/test_hf_seq2seq.py's."""
    import json

    from hf_helpers import tokenizer

    path = tmp_path / "t5"
    tok = tokenizer(path)
    torch.manual_seed(0)
    T.T5Model(T.T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                         decoder_start_token_id=0)).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    data = text_file(tmp_path / "t.txt", 24)
    recipe = write_recipe(tmp_path, path, data, task="AutoModelForTextEncoding")
    code, out, err = run_cli(["prune", "-r", recipe, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["equivalence_error"] <= 1e-5
    reloaded = no_warning_load(tmp_path / "run" / "model-hf", T.AutoModelForTextEncoding)
    assert type(reloaded).__name__ == "T5EncoderModel" and reloaded.config.d_ff < 64
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    x = dict(tok(["the data of this module", "pruning removes whole channels"], padding=True, return_tensors="pt"))
    x.pop("token_type_ids", None)
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).last_hidden_state, compact(**x).last_hidden_state, atol=1e-5)


def test_a_task_dpm_does_not_load_is_refused_by_validate_in_one_line(tmp_path, capsys):
    path = tmp_path / "t5"
    build("t5").save_pretrained(str(path))
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 8))
    capsys.readouterr()
    code, _, err = run_cli(["validate", recipe, "model.hf.task=AutoModelForVision2Seq"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "model.hf.task" in err and "AutoModelForTextEncoding" in err
    assert not (tmp_path / "run").exists()


def test_modernbert_fused_wqkv_loses_whole_heads_exactly_and_the_artifact_replays(tmp_path):
    """ModernBERT's Wqkv is [q | k | v] (heads x head_dim each), which matched no head rule ("no head
    rule for ModernBertAttention"): half the heads leave exactly, on a padded batch, a folder is
    refused before training (its config derives the head size) and the dpm artifact replays the shapes."""
    import dpm_cli
    from artifact_helpers import save
    from dpm_cli.artifact import make_artifact
    from dpm_cli.hf.artifact import hf_provenance

    model, x = folder(tmp_path, "modernbert"), inputs("modernbert")
    x = {k: v.repeat(2, 1) for k, v in x.items()}
    x["attention_mask"][1, 9:] = 0
    prov, why = hf_provenance(model, x)
    assert why is None and head_problem(model, 0.5) is None
    assert "cannot record pruned attention heads" in format_problem(model, "layer", 0.5)
    pruner = cut_half(model, x, 0.5)
    result = pruner.compact()
    assert result.max_rel_error <= 1e-5
    assert head_counts(model) == [(2, 2), (2, 2)] and model.layers[0].attn.Wqkv.out_features == 3 * 2 * 8
    rebuilt = dpm_cli.load(save(make_artifact(model, prov.with_stage(result.history)), tmp_path / "m.dpm.pt")).eval()
    assert head_counts(rebuilt) == [(2, 2), (2, 2)]
    with torch.no_grad():
        assert torch.allclose(rebuilt(**x).last_hidden_state, model(**x).last_hidden_state, atol=1e-6)


def test_fsmt_ffn_folder_is_verified_as_dpm_ran_it_without_the_cache(tmp_path):
    """FSMT's decoder computes differently with its key/value cache on (the folder's default) than off
    (as dpm runs decoders): the saved folder was refused after training ("does not reproduce
    output.last_hidden_state", 1e-2). It is now compared with the cache off, as the model was pruned."""
    model, x = folder(tmp_path, "fsmt"), inputs("fsmt")
    assert prune(model, x, 0.0).max_rel_error <= 1e-5
    saved = save_hf(model, None, tmp_path / "out", x)  # the verifying reload
    assert T.AutoConfig.from_pretrained(str(saved)).use_cache  # the folder keeps the source's setting


def test_a_config_the_auto_class_maps_to_another_architecture_is_reloaded_with_that_auto_class(tmp_path):
    """An EXAONE folder (model_type exaone) loads with AutoModel as LlamaModel; reloading the saved folder
    as LlamaModel warned ("You are using a model of type exaone to instantiate a model of type llama")
    and refused it after training. The folder is reloaded with the Auto class it was loaded with."""
    torch.manual_seed(0)
    T.AutoModel.from_config(T.AutoConfig.for_model("exaone", **{k: v for k, v in GQA.items()})).save_pretrained(
        str(tmp_path / "in"))
    model, x = load_hf(tmp_path / "in").model, inputs("exaone")
    assert type(model).__name__ == "LlamaModel" and model.config.model_type == "exaone"
    assert prune(model, x, 0.5).max_rel_error <= 1e-5
    reloaded = no_warning_load(save_hf(model, None, tmp_path / "out", x), T.AutoModel)
    assert reloaded.config.model_type == "exaone" and reloaded.config.num_attention_heads == 2


def test_a_config_with_per_layer_settings_saves_the_ffn_and_refuses_heads_before_training(tmp_path):
    """EmbeddingGemma 2's config sets head_dim and num_key_value_heads per layer (per_layer_config) and
    refuses reading them globally: saving crashed after training (AmbiguousGlobalPerLayerAttributeError).
    Half the FFN is saved as a folder; heads are refused for a folder before training, in one line."""
    torch.manual_seed(0)
    base = T.AutoConfig.for_model("embedding_gemma2_text").to_dict()
    config = T.AutoConfig.for_model("embedding_gemma2_text", **{k: v for k, v in dict(GQA, head_dim=8).items() if k in base})
    T.AutoModel.from_config(config).save_pretrained(str(tmp_path / "in"))
    model, x = load_hf(tmp_path / "in").model, inputs("embedding_gemma2")
    assert model.config.to_dict()["per_layer_config"]
    problem = format_problem(model, "layer", 0.5)
    assert "per layer (per_layer_config)" in problem and "\n" not in problem
    assert format_problem(model, "layer", 0.0) is None
    assert prune(model, x, 0.0).max_rel_error <= 1e-5
    reloaded, same = reload_matches(model, save_hf(model, None, tmp_path / "out", x), x)
    assert same and list(ffn_layers(reloaded).values()) == list(ffn_layers(model).values())


@pytest.mark.parametrize("position", [
    dict(),  # DeBERTa-v2 without relative attention
    dict(relative_attention=True, pos_att_type=["p2c", "c2p"], share_att_key=True, position_buckets=8,
         max_relative_positions=16),  # DeBERTa-v3: positions projected by query_proj / key_proj themselves
    dict(relative_attention=True, pos_att_type=["p2c", "c2p"], share_att_key=False, max_relative_positions=16),
], ids=["absolute", "v3-shared-keys", "v2-position-projections"])
def test_deberta_v2_heads_leave_exactly_with_their_relative_position_projections(tmp_path, position):
    """DeBERTa-v2/v3 (query_proj / key_proj / value_proj in `.self`) matched no head rule. Its
    relative-position scores project the shared position embeddings per layer, with q/k themselves
    (share_att_key) or pos_key_proj / pos_query_proj, whose rows are per head too: half the heads
    leave with their rows, exactly on a padded batch; a folder is refused (head size derived)."""
    torch.manual_seed(0)
    T.DebertaV2Model(T.DebertaV2Config(**LM, **position)).save_pretrained(str(tmp_path / "in"))
    model = load_hf(tmp_path / "in").model
    x = {k: v.repeat(2, 1) for k, v in inputs("deberta_v2").items()}
    x["attention_mask"][1, 9:] = 0
    assert head_problem(model, 0.5) is None
    assert "cannot record pruned attention heads" in format_problem(model, "layer", 0.5)
    assert prune(model, x, 0.5).max_rel_error <= 1e-5
    assert head_counts(model) == [(2, 2), (2, 2)]
    attention = model.encoder.layer[0].attention.self
    rows = {n: m.out_features for n, m in attention.named_children() if isinstance(m, torch.nn.Linear)}
    assert set(rows.values()) == {16}  # q, k, v (and the position projections where there are some)


def test_partial_rotary_concat_that_torch_pruning_cannot_size_no_longer_stops_the_trace(tmp_path):
    """MiniMax concatenates rotated and passed-through query channels; torch-pruning 1.6.1 compared a
    None width in `update_concat_index_mapping` (TypeError) and the trace failed ("torch-pruning cannot
    trace the model"). With `engine.tp_fixes` that concat gets no index mapping, as torch-pruning
    intends, and half the FFN is removed exactly and saved; the artifact replays it."""
    import dpm_cli
    from artifact_helpers import save
    from dpm_cli.artifact import make_artifact
    from dpm_cli.hf.artifact import hf_provenance

    base = T.AutoConfig.for_model("minimax").to_dict()
    torch.manual_seed(0)
    T.AutoModel.from_config(T.AutoConfig.for_model("minimax", **{k: v for k, v in dict(GQA, head_dim=8).items()
                                                                 if k in base})).save_pretrained(str(tmp_path / "in"))
    model, x = load_hf(tmp_path / "in").model, inputs("minimax")
    prov, _ = hf_provenance(model, x)
    result = prune(model, x, 0.0)
    assert result.max_rel_error <= 1e-5
    reloaded, same = reload_matches(model, save_hf(model, None, tmp_path / "out", x), x)
    assert same
    rebuilt = dpm_cli.load(save(make_artifact(model, prov.with_stage(result.history)), tmp_path / "m.dpm.pt")).eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(**x).last_hidden_state, model(**x).last_hidden_state, atol=1e-6)


def test_a_width_key_that_also_sizes_a_second_mlp_in_the_same_layer_is_refused_before_training():
    """Higgs Audio v2's decoder layers hold a text mlp (pruned) and an audio_mlp (not an FFN dpm knows,
    so kept) sized by the same intermediate_size. The spill check skipped everything under the layer,
    so the folder was refused at save time, after training; it now skips only the FFN's own
    projections and the input axis of the layers reading them."""
    base = T.AutoConfig.for_model("higgs_audio_v2").to_dict()
    torch.manual_seed(0)
    model = T.AutoModel.from_config(T.AutoConfig.for_model(
        "higgs_audio_v2", **{k: v for k, v in dict(GQA, head_dim=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                                   audio_stream_bos_id=1, audio_stream_eos_id=2).items()
                             if k in base})).eval()
    problem = format_problem(model, "layer", 0.0)
    assert "intermediate_size also sizes layers dpm keeps (model.layers.0.audio_mlp.gate_proj.weight)" in problem


def test_a_norm_inside_the_ffn_sized_by_the_width_key_is_a_spill_not_a_crash():
    """BitNet normalises the FFN's intermediate units (mlp.ffn_sub_norm, a 1-d weight of the width):
    the spill check indexed its input axis (IndexError, found by benchmarks/hf_family_sweep.py)."""
    base = T.AutoConfig.for_model("bitnet").to_dict()
    torch.manual_seed(0)
    model = T.AutoModel.from_config(T.AutoConfig.for_model(
        "bitnet", **{k: v for k, v in dict(GQA, head_dim=8, pad_token_id=0, bos_token_id=1, eos_token_id=2).items()
                     if k in base})).eval()
    assert "ffn_sub_norm" in format_problem(model, "layer", 0.0)


@pytest.mark.parametrize("family", ["qwen3_5_text", "qwen3_next"])
def test_gated_attention_heads_leave_with_their_gate_rows_and_are_saved(tmp_path, family):
    """Qwen3.5 and Qwen3-Next keep an output gate per head in q_proj (each head's 8 query rows, then its
    8 gate rows) beside linear-attention layers: the Llama-style rule took every row for a query head
    and refused them ("do not share key/value heads evenly"). A key/value head now leaves with its
    query heads' q and gate rows, exactly on a padded batch, and the folder records the counts."""
    base = T.AutoConfig.for_model(family).to_dict()
    kwargs = dict(GQA, head_dim=8, num_hidden_layers=4, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                  linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8,
                  moe_intermediate_size=16, shared_expert_intermediate_size=16, num_experts=4, num_experts_per_tok=2)
    torch.manual_seed(0)
    T.AutoModel.from_config(T.AutoConfig.for_model(family, **{k: v for k, v in kwargs.items() if k in base})
                            ).save_pretrained(str(tmp_path / "in"))
    model = load_hf(tmp_path / "in").model
    x = {k: v.repeat(2, 1) for k, v in inputs(family).items()}
    x["attention_mask"][1, 9:] = 0
    assert head_problem(model, 0.5) is None and format_problem(model, "layer", 0.5) is None
    assert prune(model, x, 0.5).max_rel_error <= 1e-5
    assert head_counts(model) == [(2, 1)]  # the one full-attention layer of four
    attention = model.layers[3].self_attn
    assert attention.q_proj.out_features == 2 * 2 * 8 and attention.o_proj.in_features == 2 * 8
    reloaded, same = reload_matches(model, save_hf(model, None, tmp_path / "out", x), x)
    assert same and (reloaded.config.num_attention_heads, reloaded.config.num_key_value_heads) == (2, 1)


def test_longformer_graph_finishes_where_the_output_group_looped(tmp_path):
    """Found by the sweep: protecting the layers that feed Longformer's output asked torch-pruning for
    the output's group, which loops through its chunked attention (as grouped-query attention does) until
    the graph timeout. The coupled layers are now found without index lists: half the FFN goes exactly,
    and the folder reloads."""
    from dpm_cli import DecayPruner, DPMConfig
    from dpm_cli.engine.selection import score_groups, select

    torch.manual_seed(0)
    model = T.LongformerModel(T.LongformerConfig(**dict(LM, max_position_embeddings=600, attention_window=8))).eval()
    x = inputs("longformer")
    cfg = DPMConfig(budget=0.5, budget_kind="channels", decay_steps=1, ranking="layer", graph_timeout_s=20,
                    ignore=protected_modules(model))
    pruner = DecayPruner(model, x, cfg)
    assert sorted(g.name for g in pruner.groups) == ["encoder.layer.0.intermediate.dense", "encoder.layer.1.intermediate.dense"]
    pruner.prune_now(select(pruner.groups, pruner.cost, cfg, cfg.budget, set(), set(), score_groups(pruner.groups, "magnitude", 0)))
    assert pruner.compact().max_rel_error <= 1e-5
    save_hf(model, None, tmp_path / "out")
    reloaded, same = reload_matches(model, tmp_path / "out", x)
    assert same and reloaded.config.intermediate_size == 32


def test_xlm_heads_named_q_lin_with_head_dim_leave_whole():
    """XLM and Flaubert name their projections q_lin/k_lin/v_lin/out_lin like DistilBERT but keep head_dim,
    not attention_head_size: "no head rule for MultiHeadAttention" before. Half the heads leave exactly
    (a folder stays refused: no config key holds their FFN width)."""
    model, x = build("xlm"), inputs("xlm")
    result = prune(model, x, 0.5)
    assert result.max_rel_error <= 1e-5
    assert head_counts(model) == [(2, 2), (2, 2)] and model.attentions[0].q_lin.out_features == 16
