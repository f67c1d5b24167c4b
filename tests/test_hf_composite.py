"""Composite transformers models, whose config holds its parts' configs (`sub_configs`): Gemma 3's
multimodal checkpoints (a language model and a SigLIP vision tower: `text_config`, `vision_config`),
CLIP (a text and a vision tower). Measured before: the FFN width of every part was "no config key"
(`Gemma3Config` has no `intermediate_size`), so a folder was refused, although each part's config
holds its own width. Now the key is the part's, dotted (`text_config.intermediate_size`), and the
folder loads with no warning. Pruned heads in a composite were refused for a folder outright; now each
part that loses heads (known once the example inputs show which attention runs) records them in its
own keys (`text_config.num_attention_heads`), or is refused before training where it cannot."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import cut_half, decoder_tokenizer, no_warning_load, text_file  # noqa: E402

from dpm_cli.hf import load_hf, save_hf  # noqa: E402
from dpm_cli.hf.prunable import ffn_layers, width_keys  # noqa: E402
from dpm_cli.hf.save import format_problem  # noqa: E402

T = transformers
TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=64, sliding_window=16)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
              patch_size=8)


def gemma3_folder(folder, tokenizer=None):
    """A Gemma3ForConditionalGeneration (what google/gemma-3-4b-it holds), loaded as a CausalLM."""
    config = T.Gemma3Config(text_config=dict(TEXT, vocab_size=len(tokenizer) if tokenizer else 64),
                            vision_config=VISION, mm_tokens_per_image=4, image_token_index=3)
    torch.manual_seed(0)
    T.AutoModelForCausalLM.from_config(config).save_pretrained(str(folder))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder


def tokens(batch=2):
    g = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(4, 60, (batch, 12), generator=g), "attention_mask": torch.ones(batch, 12, dtype=torch.long)}


def test_gemma3_multimodal_text_ffn_is_saved_in_text_config(tmp_path):
    model = load_hf(gemma3_folder(tmp_path / "in"), "AutoModelForCausalLM").model
    keys = width_keys(model, ffn_layers(model))
    assert set(keys.values()) == {"text_config.intermediate_size", "vision_config.intermediate_size"}
    assert format_problem(model, "layer", 0.0) is None
    assert format_problem(model, "layer", 0.5) is None  # the parts are asked once the groups are known
    x = tokens()
    assert cut_half(model, x).compact().max_rel_error <= 1e-5
    widths = ffn_layers(model)  # text alone reaches the language model: the vision tower is kept
    assert {w for name, w in widths.items() if "language_model" in name} == {32}
    assert {w for name, w in widths.items() if "vision_tower" in name} == {64}
    reloaded = no_warning_load(save_hf(model, None, tmp_path / "out", x), T.AutoModelForCausalLM)
    assert reloaded.config.text_config.intermediate_size == 32 and reloaded.config.vision_config.intermediate_size == 64
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).logits, model(**x).logits, atol=1e-5)


def test_clip_both_towers_are_pruned_and_saved(tmp_path):
    torch.manual_seed(0)
    config = T.CLIPConfig(text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=64, vocab_size=64), vision_config=VISION, projection_dim=16)
    T.CLIPModel(config).save_pretrained(str(tmp_path / "in"))
    model = load_hf(tmp_path / "in").model
    x = {"input_ids": tokens()["input_ids"], "pixel_values": torch.randn(2, 3, 32, 32)}
    assert cut_half(model, x).compact().max_rel_error <= 1e-5
    assert set(ffn_layers(model).values()) == {32}
    reloaded = no_warning_load(save_hf(model, None, tmp_path / "out", x), T.AutoModel)
    assert reloaded.config.text_config.intermediate_size == 32 and reloaded.config.vision_config.intermediate_size == 32


def test_cli_prunes_a_gemma3_multimodal_folder_on_text_into_a_folder(tmp_path, capsys):
    tok = decoder_tokenizer(["<pad>", "<bos>", "<eos>", "<img>", "<unk>"], bos="<bos>", eos="<eos>", unk="<unk>")
    folder = gemma3_folder(tmp_path / "gemma3", tok)
    (tmp_path / "r.yaml").write_text(f"""\
version: 1
model: {{hf: {{path: {folder}, task: AutoModelForCausalLM}}, seq_len: 12}}
data: {{source: text, path: {text_file(tmp_path / 't.txt', 24)}, batch_size: 8, eval_batch_size: 16}}
objective: {{kind: distill, targets: [logits]}}
pruning: {{budget: {{kind: macs, keep: 0.8}}, ranking: layer, head_ratio: 0.5, decay_steps: 2}}
training: {{steps: 6, log_every: 3, optimizer: {{name: adamw, lr: 1.0e-3, weight_decay: 0.0}}}}
output: {{dir: {tmp_path / 'run'}, hf: true}}
""")
    code, out, err = run_cli(["prune", "-r", tmp_path / "r.yaml", "--json", "-q"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["equivalence_error"] <= 1e-4 and summary["macs_after"] <= 0.8 * summary["macs_before"]
    reloaded = no_warning_load(tmp_path / "run" / "model-hf", T.AutoModelForCausalLM)
    assert reloaded.config.text_config.intermediate_size < 64
    assert reloaded.config.text_config.num_attention_heads == 2  # head_ratio 0.5, in the part's own config
    assert reloaded.config.vision_config.num_attention_heads == 4


def test_heads_of_a_tower_the_inputs_never_run_are_kept_whole(tmp_path):
    """dpm finds head groups itself, not through the trace, so a Gemma 3 model given text had its vision
    tower's heads cut by magnitude too (nothing ranked, trained or counted them). Only attention the
    example inputs run is pruned by heads now; the vision tower is kept whole."""
    from dpm_cli.hf.head_config import pruned_head_problem
    from dpm_cli.hf.save import head_counts

    model, x = load_hf(gemma3_folder(tmp_path / "in"), "AutoModelForCausalLM").model, tokens()
    pruner = cut_half(model, x, 0.5)
    assert pruned_head_problem(model, pruner.groups, 0.5) is None  # the language model's config has head_dim
    assert pruner.compact().max_rel_error <= 1e-5
    vision = [name for name, m in model.named_modules() if name.endswith("self_attn") and "vision_tower" in name]
    text = [name for name, m in model.named_modules() if name.endswith("self_attn") and "language_model" in name]
    assert all(model.get_submodule(n).q_proj.out_features == 32 for n in vision)  # 4 heads of 8, as built
    assert all(model.get_submodule(n).q_proj.out_features == 16 for n in text)  # half the heads
    assert sorted(head_counts(model)) == [(2, 1)] * len(text) + [(4, 4)] * (len(vision) + 1)  # + SigLIP's pooling head
    reloaded = no_warning_load(save_hf(model, None, tmp_path / "out", x), T.AutoModelForCausalLM)
    text_config = reloaded.config.text_config
    assert (text_config.num_attention_heads, text_config.num_key_value_heads, text_config.head_dim) == (2, 1, 8)
    assert reloaded.config.vision_config.num_attention_heads == 4


def test_heads_of_a_part_whose_config_derives_the_head_size_are_refused_before_training(tmp_path, capsys, monkeypatch):
    """CLIP's towers size their heads from hidden_size: heads pruned in both are refused for a folder,
    naming the part, once the groups are known; through `dpm prune`, before any training step."""
    from dpm_cli.hf.head_config import pruned_head_problem

    torch.manual_seed(0)
    config = T.CLIPConfig(text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=64, vocab_size=64), vision_config=VISION, projection_dim=16)
    model = T.CLIPModel(config).eval()
    x = {"input_ids": tokens()["input_ids"], "pixel_values": torch.randn(2, 3, 32, 32)}
    problem = pruned_head_problem(model, cut_half(model, x, 0.5).groups, 0.5)
    assert "CLIPConfig.text_config cannot record pruned attention heads" in problem and "head_ratio: 0" in problem
    assert pruned_head_problem(model, cut_half(model, x, 0.0).groups, 0.0) is None
    # the same refusal through the CLI, where it comes after the groups and before training
    monkeypatch.setattr("dpm_cli.hf.head_config.size_free", lambda *a: False)
    tok = decoder_tokenizer(["<pad>", "<bos>", "<eos>", "<img>", "<unk>"], bos="<bos>", eos="<eos>", unk="<unk>")
    folder = gemma3_folder(tmp_path / "gemma3", tok)
    (tmp_path / "r.yaml").write_text(f"""\
version: 1
model: {{hf: {{path: {folder}, task: AutoModelForCausalLM}}, seq_len: 12}}
data: {{source: text, path: {text_file(tmp_path / 't.txt', 24)}, batch_size: 8}}
objective: {{kind: distill, targets: [logits]}}
pruning: {{budget: {{kind: macs, keep: 0.8}}, ranking: layer, head_ratio: 0.5, decay_steps: 2}}
training: {{steps: 6, log_every: 3, optimizer: {{name: adamw, lr: 1.0e-3, weight_decay: 0.0}}}}
output: {{dir: {tmp_path / 'run'}, hf: true}}
""")
    capsys.readouterr()
    code, out, err = run_cli(["plan", "-r", tmp_path / "r.yaml", "--json"], capsys)  # the dry run says so
    assert code == 0, err
    assert any("dpm prune will refuse this recipe: Gemma3Config.text_config cannot record" in n
               for n in json.loads(out)["notes"])
    code, _, err = run_cli(["prune", "-r", tmp_path / "r.yaml", "-q"], capsys)
    assert code == 2 and "Gemma3Config.text_config cannot record pruned attention heads" in err
    assert len(err.strip().splitlines()) == 1
    run = tmp_path / "run"
    assert not (run / "state.pt").exists() and not (run / "metrics.jsonl").exists() and not (run / "model-hf").exists()


def test_attention_whose_output_torch_pruning_does_not_map_still_counts_as_run(tmp_path):
    """MRA's query projection runs but torch-pruning's graph has no node for it (its scores leave
    autograd's path): asking the graph whether attention ran dropped MRA's heads; a forward hook asks."""
    base = T.AutoConfig.for_model("mra").to_dict()
    torch.manual_seed(0)
    model = T.AutoModel.from_config(T.AutoConfig.for_model("mra", **{k: v for k, v in dict(
        TEXT, pad_token_id=0).items() if k in base})).eval()
    assert cut_half(model, tokens(), 0.5).compact().max_rel_error <= 1e-5
    assert all(layer.attention.self.query.out_features == 16 for layer in model.encoder.layer)


def test_a_vision_language_folder_is_pruned_on_text_with_its_lm_head_and_exports(tmp_path, capsys):
    """LLaVA (LlavaForConditionalGeneration) has no task of its own among model.hf.task's classes: it was
    loaded as AutoModel, so its LM head was left out of the pruned folder; and its language model's
    key/value cache, switched on in text_config (not the top config dpm switched off), made torch.export
    fail ("DynamicCache in output"). Now the task is AutoModelForImageTextToText, from config.json, and the
    cache is off in every part while dpm works, and back on in the folder."""
    tok = decoder_tokenizer(["<unk>", "<s>", "</s>", "<image>"], bos="<s>", eos="</s>", unk="<unk>")
    config = T.LlavaConfig(text_config=dict(T.LlamaConfig(**{**TEXT, "vocab_size": len(tok)}).to_dict()),
                           vision_config=T.CLIPVisionConfig(**VISION).to_dict(), image_token_id=3)
    torch.manual_seed(0)
    T.AutoModelForImageTextToText.from_config(config).save_pretrained(str(tmp_path / "llava"))
    tok.save_pretrained(str(tmp_path / "llava"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""version: 1
model: {{seq_len: 16}}
data: {{source: text, path: {text_file(tmp_path / "t.txt", 24)}, batch_size: 8, eval_batch_size: 16}}
objective: {{kind: distill}}
pruning: {{budget: {{kind: macs, keep: 0.8}}, ranking: layer, head_ratio: 0.5, decay_steps: 2}}
training: {{steps: 6, log_every: 3, optimizer: {{name: adamw, lr: 1.0e-3, weight_decay: 0.0}}}}
output: {{dir: {tmp_path / "run"}, hf: true}}
""")
    code, out, err = run_cli(["prune", tmp_path / "llava", "-r", recipe, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert {"hf", "export"} <= set(summary["outputs"]) and summary["equivalence_error"] <= 1e-5
    assert "loaded as AutoModelForImageTextToText" in err
    reloaded = no_warning_load(tmp_path / "run" / "model-hf", T.AutoModelForImageTextToText)
    assert type(reloaded).__name__ == "LlavaForConditionalGeneration"
    assert reloaded.config.text_config.num_attention_heads == 2 and reloaded.config.text_config.use_cache is True
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    x = dict(tok(["the data of this module"], return_tensors="pt"))
    with torch.no_grad():
        assert torch.allclose(reloaded(**x, use_cache=False).logits, compact(**x).logits, atol=1e-5)
