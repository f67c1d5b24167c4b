"""A folder's weight dtypes survive pruning: dpm trains in float32 but writes a bfloat16 checkpoint back
as bfloat16 (it wrote float32, so the pruned folder of a bfloat16 decoder was larger on disk than the
original). The saved folder is checked against the compact model with its weights rounded the same way."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import no_warning_load, text_file, tokenizer, write_recipe  # noqa: E402

from dpm_cli.hf import load_hf  # noqa: E402
from dpm_cli.hf.dtypes import as_stored, stored_dtypes  # noqa: E402

T = transformers


def qwen2_folder(path, dtype):
    tok = tokenizer(path)
    torch.manual_seed(0)
    cfg = T.Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                        tie_word_embeddings=True, pad_token_id=0)
    T.Qwen2ForCausalLM(cfg).to(dtype).eval().save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path, tok


def safetensors_dtypes(folder):
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {f.get_slice(k).get_dtype() for k in f.keys()}


def test_a_bfloat16_folder_is_pruned_in_float32_and_saved_as_bfloat16(tmp_path, capsys):
    path, tok = qwen2_folder(tmp_path / "q", torch.bfloat16)
    loaded = load_hf(path, "AutoModelForCausalLM").model
    assert next(loaded.parameters()).dtype == torch.float32 and set(stored_dtypes(loaded).values()) == {torch.bfloat16}
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 24), task="AutoModelForCausalLM",
                          objective="{kind: distill}", head_ratio=0.5)
    code, _, err = run_cli(["prune", "-r", recipe, "-q"], capsys)
    assert code == 0, err
    out = tmp_path / "run" / "model-hf"
    assert safetensors_dtypes(out) == {"BF16"} and json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert (out / "model.safetensors").stat().st_size < (path / "model.safetensors").stat().st_size
    reloaded = no_warning_load(out, T.AutoModelForCausalLM)
    assert next(reloaded.parameters()).dtype == torch.bfloat16 and reloaded.config.num_key_value_heads == 1
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    assert next(compact.parameters()).dtype == torch.float32  # the compact module stays as trained
    for name, value in reloaded.state_dict().items():
        assert torch.equal(value, compact.state_dict()[name].to(torch.bfloat16)), name
    x = dict(tok(["the data of this module"], return_tensors="pt"))
    x.pop("token_type_ids", None)
    with torch.no_grad(), as_stored(compact):
        want = compact(**x).logits
    with torch.no_grad():
        got = reloaded.float()(**x).logits
    assert torch.allclose(got, want, atol=1e-5)


def test_the_artifact_of_a_bfloat16_folder_holds_bfloat16_and_tied_weights_once(tmp_path, capsys):
    """The .dpm.pt was float32 (twice the bytes of the folder written beside it) and held a tied LM head
    and its embedding as two tensors. It now holds the weights as the folder stored them, once, and loads
    into a float32 model that computes what the pruned folder computes."""
    import dpm_cli

    path, tok = qwen2_folder(tmp_path / "q", torch.bfloat16)
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 24), task="AutoModelForCausalLM",
                          objective="{kind: distill}", head_ratio=0.5)
    code, _, err = run_cli(["prune", "-r", recipe, "-q"], capsys)
    assert code == 0, err
    artifact = torch.load(tmp_path / "run" / "model.dpm.pt", weights_only=True)
    state = artifact["state_dict"]
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.bfloat16}
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()  # stored once
    rebuilt = dpm_cli.load(tmp_path / "run" / "model.dpm.pt").eval()
    assert next(rebuilt.parameters()).dtype == torch.float32
    folder = no_warning_load(tmp_path / "run" / "model-hf", T.AutoModelForCausalLM).float()
    x = dict(tok(["the data of this module"], return_tensors="pt"))
    x.pop("token_type_ids", None)
    with torch.no_grad():
        assert torch.equal(rebuilt(**x).logits, folder(**x).logits)


def test_as_stored_rounds_for_its_duration_and_restores_the_float32_weights(tmp_path):
    path, _ = qwen2_folder(tmp_path / "q", torch.bfloat16)
    model = load_hf(path, "AutoModelForCausalLM").model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-4 * torch.randn_like(p))  # float32 values between bfloat16 steps, as training leaves
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with as_stored(model):
        inside = {k: v.clone() for k, v in model.state_dict().items()}
    weight = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(inside[weight], before[weight].to(torch.bfloat16).float())
    assert not torch.equal(inside[weight], before[weight])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_float32_folder_is_saved_as_float32(tmp_path, capsys):
    path, _ = qwen2_folder(tmp_path / "q", torch.float32)
    assert stored_dtypes(load_hf(path, "AutoModelForCausalLM").model) == {}
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 24), task="AutoModelForCausalLM",
                          objective="{kind: distill}", head_ratio=0.5)
    code, _, err = run_cli(["prune", "-r", recipe, "-q"], capsys)
    assert code == 0, err
    out = tmp_path / "run" / "model-hf"
    assert safetensors_dtypes(out) == {"F32"} and json.loads((out / "config.json").read_text())["dtype"] == "float32"


def test_a_bfloat16_gemma_folder_is_written_although_its_embed_scale_is_built_not_loaded(tmp_path, capsys):
    """Gemma builds its embedding scale (a buffer, not saved) in the dtype it is loaded in: the folder
    check reloaded the folder straight in float32 (scale exact), the compact model had the bfloat16 one,
    and the folder was not written ("does not reproduce output.logits ... 2.3e-05"). The check now loads
    the folder as dpm loaded the source: in its own dtype, then to float32."""
    tok = tokenizer(tmp_path / "g")
    torch.manual_seed(0)
    cfg = T.GemmaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                        pad_token_id=0)
    T.GemmaForCausalLM(cfg).to(torch.bfloat16).eval().save_pretrained(str(tmp_path / "g"))
    tok.save_pretrained(str(tmp_path / "g"))
    recipe = write_recipe(tmp_path, tmp_path / "g", text_file(tmp_path / "t.txt", 24), task="AutoModelForCausalLM",
                          objective="{kind: distill}", head_ratio=0.5)
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    assert not any("not written" in n for n in json.loads(out)["notes"])
    assert safetensors_dtypes(tmp_path / "run" / "model-hf") == {"BF16"}
