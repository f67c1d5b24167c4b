"""Model families beyond BERT and Llama, from tiny random configs: FFN width pruned exactly and saved as
a folder `from_pretrained` loads; heads where the family's attention has an adapter."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_helpers import cut_half  # noqa: E402
from dpm_cli.hf import load_hf, save_hf  # noqa: E402
from dpm_cli.hf.prunable import ffn_widths  # noqa: E402
from dpm_cli.hf.save import format_problem  # noqa: E402

FAMILIES = {
    "roberta": lambda: transformers.RobertaModel(transformers.RobertaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40)),
    "distilbert": lambda: transformers.DistilBertModel(transformers.DistilBertConfig(
        vocab_size=64, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=40)),
    "opt": lambda: transformers.OPTModel(transformers.OPTConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
        max_position_embeddings=40, word_embed_proj_dim=32)),
    "electra": lambda: transformers.ElectraModel(transformers.ElectraConfig(
        vocab_size=64, hidden_size=32, embedding_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=40)),
    "gptj": lambda: transformers.GPTJModel(transformers.GPTJConfig(
        vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_inner=64, rotary_dim=4, n_positions=40,
        bos_token_id=0, eos_token_id=0)),
    "gpt_neo": lambda: transformers.GPTNeoModel(transformers.GPTNeoConfig(
        vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
        attention_types=[[["global", "local"], 1]], max_position_embeddings=40, bos_token_id=0, eos_token_id=0)),
    "gpt_neox": lambda: transformers.GPTNeoXModel(transformers.GPTNeoXConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40)),
    "bart": lambda: transformers.BartModel(transformers.BartConfig(
        vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=40)),
    "xglm": lambda: transformers.XGLMModel(transformers.XGLMConfig(
        vocab_size=64, d_model=32, num_layers=2, attention_heads=4, ffn_dim=64, max_position_embeddings=40)),
    # deberta-base's attention: fused in_proj grouped by head, q_bias / v_bias, relative c2p and p2c
    "deberta": lambda: transformers.DebertaModel(transformers.DebertaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40, relative_attention=True, pos_att_type="c2p|p2c", position_biased_input=False)),
    # query_key_value grouped by head, per-head q/k LayerNorms (Fuyu's language model)
    "persimmon": lambda: transformers.PersimmonModel(transformers.PersimmonConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40)),
    "ctrl": lambda: transformers.CTRLModel(transformers.CTRLConfig(  # Wq/Wk/Wv/dense; FFN ffn.0, width dff
        vocab_size=64, n_embd=32, n_layer=2, n_head=4, dff=64, n_positions=40)),
    "openai_gpt": lambda: transformers.OpenAIGPTModel(transformers.OpenAIGPTConfig(  # GPT-2's layout, n_head
        vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=40)),
    "xlnet": lambda: transformers.XLNetModel(transformers.XLNetConfig(  # ff.layer_1, width d_inner
        vocab_size=64, d_model=32, n_layer=2, n_head=4, d_inner=64)),
    "prophetnet": lambda: transformers.ProphetNetModel(transformers.ProphetNetConfig(  # feed_forward.intermediate
        vocab_size=64, hidden_size=32, encoder_ffn_dim=64, decoder_ffn_dim=64, num_encoder_layers=1,
        num_decoder_layers=1, num_encoder_attention_heads=4, num_decoder_attention_heads=4,
        max_position_embeddings=40, ngram=2)),
    # Llama-style grouped-query attention with the output projection named out_proj; conv layers between
    "lfm2": lambda: transformers.Lfm2Model(transformers.Lfm2Config(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=64, max_position_embeddings=40, block_auto_adjust_ff_dim=False,
        layer_types=["conv", "full_attention"])),
    "modernbert_decoder": lambda: transformers.ModernBertDecoderModel(transformers.ModernBertDecoderConfig(  # Wo
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)),
    # ffn.linear_1, width d_inner, in blocks that pool the sequence, and in the decoder that upsamples it
    "funnel": lambda: transformers.FunnelModel(transformers.FunnelConfig(
        vocab_size=64, block_sizes=[1, 1], num_decoder_layers=1, d_model=32, n_head=4, d_head=8, d_inner=64)),
}
NO_FFN_FOLDER = {"openai_gpt"}  # its FFN is 4 x n_embd, which no config key holds
SEQ2SEQ = {"bart", "prophetnet"}
# Where each family keeps its attention modules' head counts (ProjectionAttention's families).
HEAD_COUNTS = {
    "distilbert": lambda m: [layer.attention.n_heads for layer in m.transformer.layer],
    "opt": lambda m: [layer.self_attn.num_heads for layer in m.decoder.layers],
    "gptj": lambda m: [block.attn.num_attention_heads for block in m.h],
    "gpt_neo": lambda m: [block.attn.attention.num_heads for block in m.h],
    # rows grouped by head, [q | k | v] of each (no head count attribute: the rows are the count)
    "gpt_neox": lambda m: [layer.attention.query_key_value.out_features // 24 for layer in m.layers],
    "xglm": lambda m: [layer.self_attn.num_heads for layer in m.layers],  # reshapes to embed_dim: rebooked
    "bart": lambda m: [layer.self_attn.num_heads for layer in m.encoder.layers]
    + [a.num_heads for layer in m.decoder.layers for a in (layer.self_attn, layer.encoder_attn)],
    "deberta": lambda m: [layer.attention.self.num_attention_heads for layer in m.encoder.layer],
    "persimmon": lambda m: [layer.self_attn.num_heads for layer in m.layers],
    "ctrl": lambda m: [block.multi_head_attention.num_heads for block in m.h],
    "openai_gpt": lambda m: [block.attn.n_head for block in m.h],
    "lfm2": lambda m: [layer.self_attn.q_proj.out_features // 8 for layer in m.layers if hasattr(layer, "self_attn")],
    "modernbert_decoder": lambda m: [layer.attn.num_heads for layer in m.layers],
}


def _folder(tmp_path, family):
    torch.manual_seed(0)
    FAMILIES[family]().save_pretrained(str(tmp_path / family))
    return load_hf(tmp_path / family)


def _prune(model, x, head_ratio):
    return cut_half(model, x, head_ratio).compact()


def _inputs(family: str = ""):
    g = torch.Generator().manual_seed(1)
    x = {"input_ids": torch.randint(3, 64, (2, 12), generator=g), "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    x["attention_mask"][1, 9:] = 0  # one padded row
    if family in SEQ2SEQ:
        x["decoder_input_ids"] = torch.randint(3, 64, (2, 5), generator=g)
    return x


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - NO_FFN_FOLDER))
def test_ffn_half_pruned_exactly_and_saved_as_a_folder(tmp_path, family):
    loaded = _folder(tmp_path, family)
    x = _inputs(family)
    assert format_problem(loaded.model, "layer", 0.0) is None
    result = _prune(loaded.model, x, 0.0)
    assert result.max_rel_error <= 1e-5
    assert set(ffn_widths(loaded.model)) == {32}
    folder = save_hf(loaded.model, None, tmp_path / "out", x)  # reloads it and compares every field
    reloaded = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).last_hidden_state, loaded.model(**x).last_hidden_state, atol=1e-6)


@pytest.mark.parametrize("family", ["roberta", "electra"])
def test_bert_style_families_lose_whole_heads_exactly(tmp_path, family):
    loaded = _folder(tmp_path, family)
    x = _inputs()
    result = _prune(loaded.model, x, 0.25)
    assert result.max_rel_error <= 1e-5
    assert [layer.attention.self.num_attention_heads for layer in loaded.model.encoder.layer] == [3, 3]
    assert "cannot record pruned attention heads" in format_problem(loaded.model, "layer", 0.25)


@pytest.mark.parametrize("family", sorted(HEAD_COUNTS))
def test_separate_projection_attention_loses_whole_heads_exactly_and_replays(tmp_path, family):
    """OPT, BART (encoder, decoder and cross-attention), GPT-J, GPT-Neo, DistilBERT, CTRL, OpenAI GPT, and
    the fused projections grouped by head (GPT-NeoX's and Persimmon's query_key_value, DeBERTa's in_proj
    with its q_bias, v_bias and relative-position projections): a quarter of the
    heads of every attention module and half the FFN go, the outputs are the zeroed model's, the config
    cannot say so (known before training), and the dpm artifact replays the same shapes and outputs."""
    import dpm_cli
    from artifact_helpers import save
    from dpm_cli.artifact import make_artifact
    from dpm_cli.hf.artifact import hf_provenance

    loaded = _folder(tmp_path, family)
    model, x = loaded.model, _inputs(family)
    prov, why = hf_provenance(model, x)
    assert why is None
    heads_before = HEAD_COUNTS[family](model)
    result = _prune(model, x, 0.25)
    assert result.max_rel_error <= 1e-5
    assert HEAD_COUNTS[family](model) == [h - 1 for h in heads_before]
    reason = "no config key for the FFN width" if family in NO_FFN_FOLDER else "cannot record pruned attention heads"
    assert reason in format_problem(model, "layer", 0.25)
    path = save(make_artifact(model, prov.with_stage(result.history)), tmp_path / "m.dpm.pt")
    rebuilt = dpm_cli.load(path).eval()
    assert HEAD_COUNTS[family](rebuilt) == HEAD_COUNTS[family](model)
    with torch.no_grad():
        assert torch.allclose(rebuilt(**x).last_hidden_state, model(**x).last_hidden_state, atol=1e-6)


def test_cli_prunes_opt_heads_with_dpm_and_refuses_a_folder_it_cannot_write(tmp_path, capsys):
    """`dpm prune` on an OPT folder with heads: refused before training with output.hf (OPTConfig derives
    the head size), then decayed, rectified and removed exactly into the dpm artifact without it."""
    import json

    import dpm_cli
    from cli_helpers import run_cli
    from hf_helpers import decoder_tokenizer, text_file, write_recipe

    folder = tmp_path / "opt"
    torch.manual_seed(0)
    FAMILIES["opt"]().save_pretrained(str(folder))
    decoder_tokenizer(["<unk>", "<s>", "</s>"], "<s>", "</s>", "<unk>").save_pretrained(str(folder))
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt", 24), head_ratio=0.25)
    capsys.readouterr()
    code, _, err = run_cli(["prune", "-r", recipe, "--json"], capsys)
    assert code == 2 and "OPTConfig cannot record pruned attention heads" in err and not (tmp_path / "run").exists()
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "output.hf=false"], capsys)
    assert code == 0, err
    assert json.loads(out)["equivalence_error"] <= 1e-5
    rebuilt = dpm_cli.load(tmp_path / "run" / "model.dpm.pt").eval()
    assert HEAD_COUNTS["opt"](rebuilt) == [3, 3]
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in compact.state_dict().items())


FALCON = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_hidden_size=64)


@pytest.mark.parametrize("layout, kwargs, kept", [
    ("interleaved", dict(multi_query=False), (2, 2)),  # [q, k, v] of head 0, of head 1, ...
    ("grouped", dict(new_decoder_architecture=True, num_kv_heads=2), (2, 1)),  # [q, q, k, v] per key/value head
    ("multi-query", dict(multi_query=True), (2, 1)),  # Falcon-7B: [q | k | v], the one key/value head stays
])
def test_falcon_query_key_value_loses_whole_heads_in_either_row_layout_and_replays(tmp_path, layout, kwargs, kept):
    """Falcon's one query_key_value holds its heads in one of two layouts (a block per head, or per key/
    value group in the new decoder architecture): half the structures of every layer go exactly, the
    rows left are the heads kept, a folder is refused (head size derived), the artifact replays."""
    from dpm_cli.hf.save import head_counts

    torch.manual_seed(0)
    transformers.FalconModel(transformers.FalconConfig(**FALCON, **kwargs)).save_pretrained(str(tmp_path / "f"))
    model, rebuilt = _half_the_heads_exactly_then_replayed(tmp_path / "f", kept)
    q, kv = kept
    assert all(layer.self_attention.query_key_value.out_features == (q + 2 * kv) * 8 for layer in model.h)
    assert head_counts(rebuilt) == [kept, kept]


def _half_the_heads_exactly_then_replayed(folder, kept):
    """The folder's model with half its heads removed exactly (`kept` (query, key/value) heads in each of
    its two layers), a folder refused before training (head size derived), and the `.dpm.pt` artifact
    that replays it giving the same outputs: (the compact model, the replayed one)."""
    import dpm_cli
    from artifact_helpers import save
    from dpm_cli.artifact import make_artifact
    from dpm_cli.hf.artifact import hf_provenance
    from dpm_cli.hf.save import head_counts

    model, x = load_hf(folder).model, _inputs()
    prov, _ = hf_provenance(model, x)
    assert "cannot record pruned attention heads" in format_problem(model, "layer", 0.5)
    result = _prune(model, x, 0.5)
    assert result.max_rel_error <= 1e-5
    assert head_counts(model) == [kept, kept]
    rebuilt = dpm_cli.load(save(make_artifact(model, prov.with_stage(result.history)), folder.parent / "m.dpm.pt")).eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(**x).last_hidden_state, model(**x).last_hidden_state, atol=1e-6)
    return model, rebuilt


@pytest.mark.parametrize("multi_query, kept", [(True, (2, 1)), (False, (2, 2))])
def test_gpt_bigcode_loses_query_heads_in_either_layout_and_replays(tmp_path, multi_query, kept):
    """GPTBigCode (StarCoder) had no head rule. Multi-query (its default): c_attn is [q | k | v] with one
    key/value head, which stays while query heads leave; else [q, k, v] per head. Exact both ways, a
    folder refused before training (head size derived), the artifact replays."""
    cfg = transformers.GPTBigCodeConfig(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=64,
                                        multi_query=multi_query)
    torch.manual_seed(0)
    transformers.GPTBigCodeModel(cfg).save_pretrained(str(tmp_path / "g"))
    model, _ = _half_the_heads_exactly_then_replayed(tmp_path / "g", kept)
    q, kv = kept
    assert all(block.attn.c_attn.out_features == (q + 2 * kv) * 8 for block in model.h)


@pytest.mark.parametrize("kwargs, reason", [
    (dict(multi_query=False, alibi=True), "ALiBi position bias is built per head"),
])
def test_falcon_attention_whose_heads_cannot_leave_is_refused_with_the_reason(kwargs, reason):
    from dpm_cli.hf.prunable import head_problem

    model = transformers.FalconModel(transformers.FalconConfig(**FALCON, **kwargs))
    problem = head_problem(model, 0.25)
    assert "dpm prunes no attention heads of FalconModel" in problem and reason in problem
    assert "set pruning.head_ratio: 0" in problem
