"""Attention heads of families whose heads had no rule (found by sweeping transformers' families):
- MPNet (all-mpnet-base-v2) and T5 share one relative position bias per head across layers: head h
  can only leave every layer at once, with its bias column (`engine.shared_heads`);
- UMT5 gives every layer its own bias table: its heads leave per layer, with their own columns;
- GTE, NomicBERT and Jina v3 keep no head count on the module at all.
Before, each was refused with "no head rule for ...". Tiny random configs: hidden 32, 4 heads of 8."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import cut_half, no_warning_load, text_file, tokenizer, write_recipe  # noqa: E402

from dpm_cli.hf import load_hf, save_hf  # noqa: E402
from dpm_cli.hf.save import format_problem, head_counts  # noqa: E402

T = transformers
LM = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
          max_position_embeddings=64)
T5 = dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0)


def x_for(seq2seq: bool = False) -> dict:
    g = torch.Generator().manual_seed(1)
    x = {"input_ids": torch.randint(3, 64, (2, 12), generator=g), "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    x["attention_mask"][1, 9:] = 0  # a padded row
    if seq2seq:
        x["decoder_input_ids"] = torch.randint(3, 64, (2, 6), generator=g)
    return x


def loaded(tmp_path, model) -> torch.nn.Module:
    model.save_pretrained(str(tmp_path / "in"))
    return load_hf(tmp_path / "in").model


def mpnet_recipe(tmp_path):
    """A tiny MPNet folder with its tokenizer, and a 6-step recipe pruning half its heads into the
    `.dpm.pt` artifact (output.hf off: MPNet's config derives the head size)."""
    path = tmp_path / "mpnet"
    tok = tokenizer(path)
    torch.manual_seed(0)
    T.MPNetModel(T.MPNetConfig(**dict(LM, vocab_size=len(tok)))).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 24), head_ratio=0.5)
    recipe.write_text(recipe.read_text().replace("hf: true", "hf: false"))
    return recipe


def head_groups(pruner):
    return [g for g in pruner.groups if g.kind == "heads"]


def test_mpnet_heads_leave_every_layer_with_their_bias_column_exactly_and_the_artifact_replays(tmp_path):
    """MPNet adds the encoder's one bias table [buckets, heads] in every layer: one head group spans both
    layers and the table; half the heads leave all of it, exactly. A folder is refused before training
    (MPNetConfig derives the head size), and the dpm artifact replays the table's columns too."""
    import dpm_cli
    from artifact_helpers import save
    from dpm_cli.artifact import make_artifact
    from dpm_cli.hf.artifact import hf_provenance

    torch.manual_seed(0)
    model, x = loaded(tmp_path, T.MPNetModel(T.MPNetConfig(**LM)).eval()), x_for()
    prov, why = hf_provenance(model, x)
    assert why is None
    pruner = cut_half(model, x, head_ratio=0.5)
    (group,) = head_groups(pruner)
    assert group.name == "encoder.layer.*.attention.attn" and group.n_units == 4
    assert any(s.param is model.encoder.relative_attention_bias.weight and s.dim == 1 for s in group.slices)
    result = pruner.compact()
    assert result.max_rel_error <= 1e-5
    assert head_counts(model) == [(2, 2), (2, 2)] and model.encoder.relative_attention_bias.weight.shape == (32, 2)
    kept = [layer.attention.attn.dpm_head_ids for layer in model.encoder.layer]
    assert kept[0] == kept[1] and len(kept[0]) == 2  # the same heads in every layer
    assert set(result.pruned_heads) == {"encoder.layer.0.attention.attn", "encoder.layer.1.attention.attn",
                                        "encoder.relative_attention_bias"}
    assert "MPNetConfig cannot record pruned attention heads" in format_problem(model, "layer", 0.5)
    rebuilt = dpm_cli.load(save(make_artifact(model, prov.with_stage(result.history)), tmp_path / "m.dpm.pt")).eval()
    assert rebuilt.encoder.relative_attention_bias.weight.shape == (32, 2)
    with torch.no_grad():
        assert torch.allclose(rebuilt(**x).last_hidden_state, model(**x).last_hidden_state, atol=1e-6)


def test_a_group_across_layers_is_named_by_the_glob_that_ignores_it(tmp_path):
    """The name a report shows for heads across layers is the pattern of their modules, and as a
    pruning.ignore entry it keeps every layer's heads."""
    torch.manual_seed(0)
    model, x = loaded(tmp_path, T.MPNetModel(T.MPNetConfig(**LM)).eval()), x_for()
    from dpm_cli.hf import protected_modules

    pruner = cut_half(model, x, head_ratio=0.0, ignore=protected_modules(model) + ["encoder.layer.*.attention.attn"])
    assert not head_groups(pruner) and pruner.groups


def test_the_cost_model_counts_the_attention_of_every_layer_a_shared_head_group_spans(tmp_path):
    """Each structure of a group across layers carries its share of every layer's attention matmuls:
    the MACs projected before compaction are what the compact model measures."""
    from dpm_cli import DecayPruner, DPMConfig
    from dpm_cli.engine.selection import score_groups, select
    from dpm_cli.hf import protected_modules

    torch.manual_seed(0)
    model, x = loaded(tmp_path, T.MPNetModel(T.MPNetConfig(**LM)).eval()), x_for()
    cfg = DPMConfig(budget=0.9, budget_kind="channels", decay_steps=1, head_ratio=0.5, ignore=protected_modules(model))
    pruner = DecayPruner(model, x, cfg)
    heads = next(gi for gi, g in enumerate(pruner.groups) if g.kind == "heads")
    chosen = [(heads, 0), (heads, 3)]  # two heads of both layers, nothing else
    pruner.cost.reset()
    for key in chosen:
        pruner.cost.remove(key)
    projected = pruner.cost.macs
    pruner.prune_now(chosen)
    result = pruner.compact()
    assert result.macs_after < result.macs_before
    assert projected == pytest.approx(result.macs_after, rel=1e-9)


def test_t5_heads_leave_every_layer_of_a_stack_together_and_are_saved_as_a_folder(tmp_path):
    """T5's first layer computes the bias (its own table) and hands it on; cross-attention hands on a zero
    bias with one row per head. Encoder self-attention, decoder self-attention and cross-attention are
    one group each across their layers; T5Config states d_kv apart from num_heads, so the folder holds
    the new count and reloads with no warning and the same outputs."""
    torch.manual_seed(0)
    model, x = loaded(tmp_path, T.T5Model(T.T5Config(**T5)).eval()), x_for(seq2seq=True)
    assert format_problem(model, "layer", 0.5) is None
    pruner = cut_half(model, x, head_ratio=0.5)
    assert sorted(g.name for g in head_groups(pruner)) == [
        "decoder.block.*.layer.*.EncDecAttention", "decoder.block.*.layer.*.SelfAttention",
        "encoder.block.*.layer.*.SelfAttention"]
    result = pruner.compact()
    assert result.max_rel_error <= 1e-5
    assert set(head_counts(model)) == {(2, 2)} and len(head_counts(model)) == 6
    assert model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.shape == (32, 2)
    save_hf(model, None, tmp_path / "out", x)
    reloaded = no_warning_load(tmp_path / "out", T.AutoModel)
    assert reloaded.config.num_heads == 2 and reloaded.config.d_kv == 8
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).last_hidden_state, model(**x).last_hidden_state, atol=1e-6)


def test_umt5_heads_with_a_table_in_every_layer_leave_per_layer():
    """UMT5 shares nothing across layers: one head group per attention module, each with its own table."""
    torch.manual_seed(0)
    model, x = T.UMT5Model(T.UMT5Config(**T5)).eval(), x_for(seq2seq=True)
    pruner = cut_half(model, x, head_ratio=0.5)
    assert len(head_groups(pruner)) == 6  # 2 encoder layers, 2 decoder layers x (self, cross)
    result = pruner.compact()
    assert result.max_rel_error <= 1e-5
    assert model.encoder.block[1].layer[0].SelfAttention.relative_attention_bias.weight.shape == (32, 2)


@pytest.mark.parametrize("family", ["GteModel", "NomicBertModel", "JinaEmbeddingsV3Model"])
def test_attention_without_a_head_count_loses_whole_heads_and_the_folder_states_head_dim(tmp_path, family):
    """GTE, NomicBERT and Jina v3 reshape by head_dim with -1 and keep no head count: half the heads leave
    exactly, and the folder gets num_attention_heads and head_dim (their rotary size too)."""
    config = getattr(T, family.replace("Model", "Config"))(**LM)
    torch.manual_seed(0)
    model, x = loaded(tmp_path, getattr(T, family)(config).eval()), x_for()
    x.pop("token_type_ids", None)
    result = cut_half(model, x, head_ratio=0.5).compact()
    assert result.max_rel_error <= 1e-5 and set(head_counts(model)) == {(2, 2)}
    save_hf(model, None, tmp_path / "out", x)
    reloaded = no_warning_load(tmp_path / "out", T.AutoModel)
    assert reloaded.config.num_attention_heads == 2 and reloaded.config.head_dim == 8
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).last_hidden_state, model(**x).last_hidden_state, atol=1e-6)


def test_dpm_prune_on_an_mpnet_folder_decays_heads_across_layers_and_writes_the_artifact(tmp_path, capsys):
    """Through the CLI, as a user of all-mpnet-base-v2 would: heads and FFN decay and leave, the compact
    model equals the decayed one, and with output.hf off the artifact holds the shapes."""
    import json

    import dpm_cli

    recipe = mpnet_recipe(tmp_path)
    capsys.readouterr()
    code, out, err = run_cli(["prune", "-r", recipe, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["equivalence_error"] <= 1e-5
    compact = dpm_cli.load(tmp_path / "run" / "model.dpm.pt").eval()
    assert compact.encoder.relative_attention_bias.weight.shape == (32, 2)
    assert {layer.attention.attn.q.out_features for layer in compact.encoder.layer} == {16}


@pytest.mark.parametrize("every, stop", [(2, 3), (3, 5)])  # resumed mid-epoch, and at an epoch's end
def test_an_interrupted_mpnet_run_with_heads_across_layers_resumes_to_the_same_model(tmp_path, capsys, every, stop):
    """The group across layers is found again by its name on resume: an interrupted run, resumed,
    ends with the same compact model and the same events as one that was not interrupted. Found while
    writing this: with dropout (every transformers model has it) the resumed run differed by 1e-3,
    because the resumed run's data iterator drew its seed from the generator dropout draws from."""
    from dpm_cli.pipeline import prune
    from dpm_cli.recipe import load_recipe
    from dpm_cli.training.loop import TrainerHooks

    recipe = mpnet_recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace("log_every: 3", f"log_every: 3\n  checkpoint_every: {every}"))

    def run(name, hooks=None, resume=False):
        return prune(load_recipe(recipe), run_dir=tmp_path / name, output=tmp_path / name / "m", hooks=hooks, resume=resume)

    reference = run("ref")

    def interrupt(step, _loss):
        if step == stop:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run("b", TrainerHooks(on_step=interrupt))
    resumed = run("b", resume=True)
    assert resumed.equivalence_error <= 1e-5
    a = torch.load(reference.outputs["module"], weights_only=False).state_dict()
    b = torch.load(resumed.outputs["module"], weights_only=False).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "ref" / "events.jsonl").read_text() == (tmp_path / "b" / "events.jsonl").read_text()
    assert "encoder.layer.*.attention.attn" in (tmp_path / "b" / "events.jsonl").read_text()
