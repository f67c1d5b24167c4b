"""Llama-style decoders (grouped-query attention, gated MLP, RMSNorm) through dpm: library and CLI.

Tiny random configs (hidden 32, 2 layers, 4 query heads sharing 2 key/value heads, head_dim 8)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import decoder_tokenizer, text_file, no_warning_load  # noqa: E402

from dpm_cli import DecayPruner, DPMConfig  # noqa: E402
from dpm_cli.batch import output_fields  # noqa: E402
from dpm_cli.engine.outputs import relative_error  # noqa: E402
from dpm_cli.hf import HFFormatError, protected_modules, save_hf  # noqa: E402

HIDDEN, FFN, HEAD_DIM = 32, 48, 8


def llama(cls=None, *, tied: bool = False, impl: str = "sdpa", layers: int = 2, vocab: int = 64,
          use_cache: bool = False, seed: int = 0):
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=FFN,
                                   num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=HEAD_DIM, max_position_embeddings=64, tie_word_embeddings=tied,
                                   use_cache=use_cache, attn_implementation=impl)
    torch.manual_seed(seed)
    return (cls or transformers.LlamaModel)(cfg).eval()


def tokens(vocab: int = 64, batch: int = 2, length: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length - 3:] = 0  # one padded row: the causal mask is built from the attention mask
    return {"input_ids": torch.randint(0, vocab, (batch, length), generator=g), "attention_mask": mask}




def attentions(model):
    return [layer.self_attn for layer in model.get_decoder().layers]


def mlps(model):
    return [layer.mlp for layer in model.get_decoder().layers]


def prune_by_hand(model, x, kv_head_of_layer: dict[int, int], ffn_every: int = 3):
    """The pruner with dpm's HF protection, then a chosen key/value head per layer and every
    `ffn_every`-th FFN channel zeroed at once and removed: what a finished decay leaves."""
    pruner = DecayPruner(model, x, DPMConfig(budget=0.8, decay_steps=1, ignore=protected_modules(model),
                                             graph_timeout_s=60))
    names = {id(a): i for i, a in enumerate(attentions(model))}
    keys = []
    for gi, g in enumerate(pruner.groups):
        if id(g.root) in names:
            if names[id(g.root)] in kv_head_of_layer:
                keys.append((gi, kv_head_of_layer[names[id(g.root)]]))
        else:
            keys += [(gi, c) for c in range(0, g.n_units, ffn_every)]
    pruner.prune_now(keys)
    with torch.no_grad():
        zeroed = output_fields(model(**x))
    return pruner, zeroed, pruner.compact()


# ------------------------------------------------------------------ the graph
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_gqa_graph_finishes_and_heads_are_key_value_groups(impl):
    """torch-pruning 1.6.1 never finished the group of a GQA q/k/v projection (its indices grew by the
    k width on every lap through SDPA and rotary's rotate_half); dpm no longer roots groups there.
    With no ignore list at all: heads and gated MLP width are the structures, the residual width
    (through RMSNorm) and the outputs' layers are left alone."""
    model = llama(transformers.LlamaForCausalLM, impl=impl, use_cache=True)
    pruner = DecayPruner(model, tokens(), DPMConfig(budget=0.8, decay_steps=1, graph_timeout_s=30))
    by_name = {g.name: g for g in pruner.groups}
    assert sorted(by_name) == ["model.layers.0.mlp.up_proj", "model.layers.0.self_attn",
                               "model.layers.1.mlp.up_proj", "model.layers.1.self_attn"]
    heads = by_name["model.layers.0.self_attn"]
    assert heads.n_units == 2 and heads.channels == 4 * HEAD_DIM  # a kv head owns 2 query heads
    assert heads.channels_of([1]) == list(range(16, 32))
    ffn = by_name["model.layers.0.mlp.up_proj"]
    assert {s.name for s in ffn.slices} == {f"model.layers.0.mlp.{n}.weight" for n in ("up_proj", "gate_proj", "down_proj")}
    for p in ("q", "k", "v"):
        assert "pruned as whole heads" in pruner.skipped[f"model.layers.0.self_attn.{p}_proj"]
    rms = [why for why in pruner.skipped.values() if "RMSNorm" in why]
    assert rms and "normalises across channels" in rms[0]
    assert pruner.skipped["lm_head"].startswith("protected")


def test_attention_without_a_head_group_is_fenced_and_the_graph_still_finishes():
    """A user-ignored projection keeps its module's heads. Its q/k/v would have looped in torch-pruning's
    grouping too."""
    model = llama()
    pruner = DecayPruner(model, tokens(), DPMConfig(budget=0.8, decay_steps=1, ignore=["layers.0.self_attn.q_proj"],
                                                    graph_timeout_s=30))
    assert sorted(g.name for g in pruner.groups) == ["layers.0.mlp.up_proj", "layers.1.mlp.up_proj", "layers.1.self_attn"]
    assert "pruned as whole heads" in pruner.skipped["layers.0.self_attn.k_proj"]


def test_multi_query_attention_loses_query_heads_one_by_one_and_keeps_its_key_value_head(tmp_path):
    """One key/value head serving every query head (Gemma 2B, Falcon-7B, StarCoder) was one structure,
    so head_ratio was refused ("multi-query, so no head can leave alone"). A structure is now one query
    head: its q rows and output columns decay and leave; k and v stay whole. Exact, and the folder
    records num_attention_heads with num_key_value_heads 1."""
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=1, head_dim=HEAD_DIM)
    torch.manual_seed(0)
    mqa, x = transformers.LlamaModel(cfg).eval(), tokens()
    pruner = DecayPruner(mqa, x, DPMConfig(budget=0.9, budget_kind="channels", decay_steps=1, head_ratio=0.5, graph_timeout_s=30,
                                           ignore=protected_modules(mqa)))
    heads = [(gi, g) for gi, g in enumerate(pruner.groups) if g.kind == "heads"]
    assert [g.n_units for _, g in heads] == [4, 4]
    k_weight = mqa.layers[0].self_attn.k_proj.weight
    assert not any(s.param is k_weight for _, g in heads for s in g.slices)  # the key/value head is no structure's
    pruner.prune_now([(heads[0][0], 1), (heads[0][0], 2), (heads[1][0], 0)])
    result = pruner.compact()
    assert result.max_rel_error <= 1e-5
    assert [(a.q_proj.out_features, a.k_proj.out_features, a.o_proj.in_features) for a in attentions(mqa)] == [
        (16, 8, 16), (24, 8, 24)]
    assert [a.num_key_value_groups for a in attentions(mqa)] == [2, 3]
    pruner = DecayPruner(mqa, x, DPMConfig(budget=0.9, budget_kind="channels", decay_steps=1, head_ratio=0.5, graph_timeout_s=30,
                                           ignore=protected_modules(mqa)))
    heads = [gi for gi, g in enumerate(pruner.groups) if g.kind == "heads"]
    pruner.prune_now([(heads[1], 0)])  # equal counts per layer: 2 and 2
    assert pruner.compact().max_rel_error <= 1e-5
    save_hf(mqa, None, tmp_path / "out", x)
    reloaded = no_warning_load(tmp_path / "out", transformers.AutoModel)
    assert (reloaded.config.num_attention_heads, reloaded.config.num_key_value_heads) == (2, 1)
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).last_hidden_state, mqa(**x).last_hidden_state, atol=1e-6)


# ------------------------------------------------------------------ library: exact, saved, reloaded
@pytest.mark.parametrize("cls, tied, auto", [
    ("LlamaModel", False, "AutoModel"),
    ("LlamaForCausalLM", True, "AutoModelForCausalLM"),
    ("LlamaForCausalLM", False, "AutoModelForCausalLM"),
])
def test_kv_groups_and_gated_mlp_removed_exactly_saved_and_reloaded(tmp_path, cls, tied, auto):
    model = llama(getattr(transformers, cls), tied=tied)
    x = tokens()
    embed_before = model.get_input_embeddings().weight.detach().clone()
    _, zeroed, result = prune_by_hand(model, x, {0: 1, 1: 0})
    assert result.max_rel_error <= 1e-5 and result.exact
    with torch.no_grad():
        after = output_fields(model(**x))
    assert set(after) == set(zeroed) and all(relative_error(zeroed[k], after[k]) <= 1e-5 for k in after)
    # kv head 1 of layer 0 goes with its query heads 2 and 3; kv head 0 of layer 1 with 0 and 1
    prefix = "model." if cls != "LlamaModel" else ""
    assert result.pruned_heads == {f"{prefix}layers.0.self_attn": [2, 3], f"{prefix}layers.1.self_attn": [0, 1]}
    for a in attentions(model):
        assert (a.q_proj.out_features, a.k_proj.out_features, a.v_proj.out_features, a.o_proj.in_features) == (16, 8, 8, 16)
        assert a.o_proj.out_features == HIDDEN
    for m in mlps(model):  # gate and up lose the same rows, down the same columns
        assert m.gate_proj.out_features == m.up_proj.out_features == m.down_proj.in_features == FFN - FFN // 3
    decoder = model.get_decoder()
    assert all(n.weight.numel() == HIDDEN for n in decoder.modules() if type(n).__name__.endswith("RMSNorm"))
    assert torch.equal(model.get_input_embeddings().weight, embed_before)  # residual width untouched
    if cls != "LlamaModel":
        assert tuple(model.lm_head.weight.shape) == (64, HIDDEN)
        assert (model.lm_head.weight is model.get_input_embeddings().weight) is tied
    folder = save_hf(model, None, tmp_path / "out", x)
    reloaded = no_warning_load(folder, getattr(transformers, auto))
    cfg = reloaded.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size, cfg.head_dim) == (2, 1, 32, HEAD_DIM)
    assert cfg.tie_word_embeddings is tied
    with torch.no_grad():
        again = output_fields(reloaded(**x))
    assert all(relative_error(after[k], again[k]) <= 1e-6 for k in after)


def test_kv_group_prunes_through_decay_steps_too():
    """The ordinary path: DecayPruner selects, decays over N steps in a training loop, then compacts."""
    model = llama(transformers.LlamaForCausalLM, tied=True).train()
    x = tokens()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    pruner = DecayPruner(model, x, DPMConfig(budget=0.6, decay_steps=3, ignore=protected_modules(model)), optimizer=opt)
    for _ in range(pruner.decay_phase_end):
        opt.zero_grad()
        model(**x).logits.float().pow(2).mean().backward()
        opt.step()
        pruner.step()
    assert pruner.finished
    result = pruner.compact()
    assert result.max_rel_error <= 1e-5 and result.pruned_heads  # at 60% of the MACs heads go too
    model.eval()
    with torch.no_grad():
        model(**x)  # the compact model runs with its new head counts
    assert model.lm_head.weight is model.get_input_embeddings().weight


def test_olmo2_heads_leave_through_its_norms_across_heads_exactly_and_the_artifact_replays(tmp_path):
    """OLMo 2 (and OLMo 3, OLMoE, MiniMax-M2) normalise q and k over all heads' channels at once, so heads
    were refused ("q_norm spans more than one head"). A head's channels reach zero in the decay, and when
    it leaves the norm's mean runs over fewer channels: its eps and weight are rescaled (eps x N/N',
    weight x sqrt(N/N')), which gives the same outputs exactly; the norm's entries leave with the head.
    The config's one rms_norm_eps cannot say so: a folder is refused before training, naming the norm."""
    import dpm_cli
    from artifact_helpers import save
    from dpm_cli.artifact import make_artifact
    from dpm_cli.hf.artifact import hf_provenance
    from dpm_cli.hf.save import format_problem

    cfg = transformers.Olmo2Config(vocab_size=64, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   pad_token_id=0)
    torch.manual_seed(0)
    model, x = transformers.Olmo2ForCausalLM(cfg).train(), tokens()
    assert "q_norm normalises across all heads" in format_problem(model, "layer", 0.5)
    prov, _ = hf_provenance(model, x)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    pruner = DecayPruner(model, x, DPMConfig(budget=0.9, budget_kind="channels", head_ratio=0.5, decay_steps=3,
                                             ignore=protected_modules(model)), optimizer=opt)
    for _ in range(pruner.decay_phase_end):
        opt.zero_grad()
        model(**x).logits.float().pow(2).mean().backward()
        opt.step()
        pruner.step()
    eps = model.model.layers[0].self_attn.q_norm.variance_epsilon
    result = pruner.compact()
    assert result.max_rel_error <= 1e-5
    attn = model.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.q_norm.weight.numel(), attn.k_norm.weight.numel()) == (16, 16, 8)
    assert attn.q_norm.variance_epsilon == pytest.approx(2 * eps) and attn.k_norm.variance_epsilon == pytest.approx(2 * eps)
    model.eval()
    rebuilt = dpm_cli.load(save(make_artifact(model, prov.with_stage(result.history)), tmp_path / "m.dpm.pt")).eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(**x).logits, model(**x).logits, atol=1e-5)


@pytest.mark.parametrize("model_type, gate, rows", [("hrm_text", "gate_proj", 16), ("laguna", "g_proj", 2),
                                                    ("beam", "gate_proj", 16)])  # Beam: and a gate_bias per head
def test_an_output_gate_per_head_channel_or_per_head_leaves_with_its_head_and_replays(tmp_path, model_type, gate, rows):
    """Attention with an output gate from a projection of its own (HRM, AFMoE: one per head channel;
    Laguna: one per head; Beam: per channel, with a bias per head of the module's own) was refused
    ("gate_proj spans more than one head", "its own parameter gate_bias"): they leave with the head."""
    import dpm_cli
    from artifact_helpers import save
    from dpm_cli.artifact import make_artifact
    from dpm_cli.hf.artifact import hf_provenance
    from hf_helpers import cut_half

    small = dict(vocab_size=64, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=HEAD_DIM, max_position_embeddings=64, pad_token_id=0)
    config = transformers.AutoConfig.for_model(model_type)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(transformers.AutoConfig.for_model(
        model_type, **{k: v for k, v in small.items() if k in config.to_dict()})).eval()
    x = tokens()
    prov, why = hf_provenance(model, x)
    assert why is None
    result = cut_half(model, x, 0.5).compact()
    assert result.max_rel_error <= 1e-5
    attn = next(m for n, m in model.named_modules() if n.endswith("layers.0.self_attn"))
    assert getattr(attn, gate).out_features == rows  # 2 of 4 heads left
    assert getattr(attn, "gate_bias", torch.zeros(2)).numel() == 2
    rebuilt = dpm_cli.load(save(make_artifact(model, prov.with_stage(result.history)), tmp_path / "m.dpm.pt")).eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(**x).last_hidden_state, model(**x).last_hidden_state, atol=1e-6)


def test_per_layer_head_counts_refused_in_one_line(tmp_path):
    model = llama()
    x = tokens()
    prune_by_hand(model, x, {0: 1})  # heads removed in layer 0 only
    with pytest.raises(HFFormatError, match=r"query heads per layer \(\[2, 4\]\).*LlamaConfig holds one"):
        save_hf(model, None, tmp_path / "h", x)
    assert not (tmp_path / "h").exists() and list(tmp_path.iterdir()) == []



def test_which_recipes_a_llama_config_can_record_is_known_before_training():
    from dpm_cli.hf.save import format_problem

    model = llama()
    assert format_problem(model, "layer", None) is None  # every layer loses the same share of heads
    assert format_problem(model, "layer", 0.25) is None
    assert "pruning.ranking: layer" in format_problem(model, "global", 0.25)  # FFN widths would differ
    assert "BASE.dpm.pt" in format_problem(model, "global", None)

# ------------------------------------------------------------------ the CLI on a CausalLM folder
def llama_folder(folder: Path, *, tied: bool) -> Path:
    """A LlamaForCausalLM saved with save_pretrained beside a word-level fast tokenizer that, like
    Llama's own, has bos/eos but no pad token and returns no token_type_ids."""
    tok = decoder_tokenizer(["<unk>", "<s>", "</s>"], bos="<s>", eos="</s>", unk="<unk>")
    llama(transformers.LlamaForCausalLM, tied=tied, vocab=len(tok), use_cache=True).save_pretrained(str(folder))
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
  budget: {{kind: macs, keep: 0.6}}
  ranking: layer
  decay_steps: 2
training:
  steps: 6
  log_every: 3
  optimizer: {{name: adamw, lr: 1.0e-3, weight_decay: 0.0}}
output: {{dir: {run}, hf: true, formats: [{formats}]}}
"""


@pytest.mark.parametrize("tied, formats", [(True, "module"), (False, "module, export")])
def test_cli_prunes_a_causal_lm_folder_and_writes_one_that_loads(tmp_path, capsys, tied, formats):
    folder = llama_folder(tmp_path / "llama", tied=tied)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(folder=folder, data=text_file(tmp_path / "t.txt", 24), run=tmp_path / "run",
                                    formats=formats))
    code, out, err = run_cli(["prune", "-r", recipe, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["equivalence_error"] <= 1e-5
    assert summary["macs_after"] / summary["macs_before"] <= 0.6 + 1e-6
    hf = tmp_path / "run" / "model-hf"
    assert summary["outputs"]["hf"] == str(hf)
    assert (tmp_path / "run" / "model.pt2").is_file() is ("export" in formats)
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    heads = {(a.q_proj.out_features, a.k_proj.out_features) for a in attentions(compact)}
    widths = {m.up_proj.out_features for m in mlps(compact)}
    assert heads == {(16, 8)} and len(widths) == 1 and widths.pop() < FFN  # layer ranking: uniform
    assert compact.lm_head.weight.shape == compact.get_input_embeddings().weight.shape  # protected
    reloaded = no_warning_load(hf, transformers.AutoModelForCausalLM)
    assert (reloaded.config.num_attention_heads, reloaded.config.num_key_value_heads) == (2, 1)
    assert reloaded.config.use_cache is True and reloaded.config.tie_word_embeddings is tied
    assert (reloaded.lm_head.weight is reloaded.get_input_embeddings().weight) is tied
    tok = transformers.AutoTokenizer.from_pretrained(str(hf))
    x = {k: v for k, v in tok(["the data of this module", "pruning removes whole channels"], padding=True,
                              return_tensors="pt").items()}
    with torch.no_grad():
        want, got = compact(**x).logits, reloaded(**x).logits
    assert relative_error(want, got) <= 1e-6


@pytest.mark.parametrize("head_ratio", ["null", "0.5"])
def test_an_attention_kept_whole_beside_others_that_lose_heads_is_refused_before_training(tmp_path, capsys, head_ratio):
    """pruning.ignore naming one layer's attention of a Llama folder: the other layer lost heads, and the
    run trained to the end before the save refused ("the query heads per layer ([4, 2]) differ").
    Once the groups are known the kept attention is named, before any step."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(folder=llama_folder(tmp_path / "llama", tied=False), data=text_file(tmp_path / "t.txt", 24),
                                    run=tmp_path / "run", formats="module").replace(
        "  ranking: layer\n", f"  ranking: layer\n  head_ratio: {head_ratio}\n  ignore: [model.layers.0.self_attn]\n"))
    capsys.readouterr()
    code, out, err = run_cli(["prune", "-r", recipe], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "the attention heads of model.layers.0.self_attn are not pruned" in errors[0]
    assert not (tmp_path / "run" / "state.pt").exists() and not any((tmp_path / "run").glob("*.jsonl"))


def test_cli_plan_and_report_on_a_causal_lm_folder(tmp_path, capsys):
    folder = llama_folder(tmp_path / "llama", tied=True)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(folder=folder, data=text_file(tmp_path / "t.txt", 24), run=tmp_path / "run",
                                    formats="module"))
    code, out, err = run_cli(["plan", "-r", recipe, "--json"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["macs_after"] / plan["macs_before"] <= 0.6 + 1e-6
    code, out, err = run_cli(["report", folder, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)["models"][0]
    assert report["macs"] > 0 and any(layer["name"].endswith("self_attn.q_proj") for layer in report["layers"])
    assert not (tmp_path / "run").exists()


def test_a_warning_the_source_folder_already_gives_does_not_refuse_the_saved_folder(tmp_path):
    """A config transformers warns about when loading (here llama3 rope scaling whose original length
    exceeds max_position_embeddings, as in Apertus's published config) warns for the source folder too:
    it was refused at save time, after training ("the saved folder loads with a warning"). Only a
    warning the source did not give refuses the folder now."""
    from dpm_cli.hf import load_hf
    from hf_helpers import cut_half

    rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=HEAD_DIM,
                                   max_position_embeddings=64, rope_parameters=rope)
    torch.manual_seed(0)
    transformers.LlamaModel(cfg).save_pretrained(str(tmp_path / "in"))
    loaded = load_hf(tmp_path / "in")
    model, x = loaded.model, tokens()
    assert any("original_max_position_embeddings" in w for w in model._dpm_load_warnings)
    assert any(n.startswith("transformers: `rope_parameters`") for n in loaded.notes)  # said once, as a note
    cut_half(model, x).compact()
    assert (save_hf(model, None, tmp_path / "out", x) / "config.json").is_file()
    model._dpm_load_warnings = ()  # a warning the source did not give still refuses the folder
    with pytest.raises(HFFormatError, match="loads with a warning"):
        save_hf(model, None, tmp_path / "out2", x)


def test_a_tokenizer_with_more_tokens_than_the_embedding_is_named_before_training(tmp_path, capsys):
    """A pad token added to the tokenizer without resize_token_embeddings: the padded example hit
    "IndexError: index out of range in self" and the hint said "fix model.input_shape or the data"."""
    folder = llama_folder(tmp_path / "llama", tied=False)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    tok.add_special_tokens({"pad_token": "<pad>"})
    tok.save_pretrained(str(folder))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(folder=folder, data=text_file(tmp_path / "t.txt", 24), run=tmp_path / "run",
                                    formats="module"))
    code, out, err = run_cli(["prune", "-r", recipe], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert f"the tokenizer gives token id {len(tok) - 1} but the model's embedding has {len(tok) - 1} rows" in errors[0]
    assert "resize_token_embeddings" in errors[0] and not (tmp_path / "run" / "state.pt").exists()


def test_a_language_model_distilled_on_labelled_text_leaves_the_labels_unused(tmp_path, capsys):
    """A classification dataset as a decoder's calibration text: the evaluation scored its one label per
    text against a logit per token and stopped the run ("The size of tensor a (12) must match the size
    of tensor b (10)"). Label-free distillation needs no labels; they are now unused, with a note, and the
    model is scored on each text's next tokens."""
    folder = llama_folder(tmp_path / "llama", tied=True)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(folder=folder, data=text_file(tmp_path / "t.jsonl", 24, labelled=True),
                                    run=tmp_path / "run", formats="module"))
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    # scored on the next tokens instead (a logit per token has nothing to say about one label per text)
    assert summary["metric"] == "top1" and summary["ce_after"] > 0
    assert any("labels are not used: a language model is trained and scored on each text's next tokens" in n
               for n in summary["notes"])
    # dpm plan's gradients for the taylor criterion scored them too ("Expected target size [8, 50], got [8]")
    code, _, err = run_cli(["plan", "-r", recipe, "pruning.criterion=taylor"], capsys)
    assert code == 0, err
