"""Encoder-decoders through the CLI (T5, BART as AutoModelForSeq2SeqLM, T5Model as AutoModel): the decoder
is fed the text itself shifted right behind its start token, so label-free distillation runs the encoder,
cross-attention and the decoder; the compact model is saved as a folder that `from_pretrained` loads and
that generates the same tokens."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import no_warning_load, text_file, tokenizer, write_recipe  # noqa: E402

from dpm_cli.errors import ConfigError  # noqa: E402
from dpm_cli.hf import load_hf, with_decoder_inputs  # noqa: E402
from dpm_cli.hf.inputs import folder_example, takes_decoder_inputs  # noqa: E402

T = transformers


def t5_folder(path, cls=None, **config):
    tok = tokenizer(path)
    torch.manual_seed(0)
    cfg = T.T5Config(**{"vocab_size": len(tok), "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2,
                        "num_heads": 4, "decoder_start_token_id": 0, **config})
    (cls or T.T5ForConditionalGeneration)(cfg).eval().save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path, tok


def bart_folder(path):
    tok = tokenizer(path)
    torch.manual_seed(0)
    cfg = T.BartConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                       decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=48, max_position_embeddings=64,
                       pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3,
                       forced_eos_token_id=None)
    T.BartForConditionalGeneration(cfg).eval().save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path, tok


def encoded(tok, texts=("the data of this module", "pruning removes whole channels from it")):
    x = dict(tok(list(texts), padding=True, return_tensors="pt"))
    x.pop("token_type_ids", None)
    return x


def test_decoder_inputs_are_the_text_shifted_behind_the_start_token(tmp_path):
    path, tok = t5_folder(tmp_path / "t5", decoder_start_token_id=4)
    model = load_hf(path, "AutoModelForSeq2SeqLM").model
    x = encoded(tok)
    got = with_decoder_inputs(model, x)
    assert torch.equal(got["decoder_input_ids"][:, 0], torch.full((2,), 4))
    assert torch.equal(got["decoder_input_ids"][:, 1:], x["input_ids"][:, :-1])
    assert torch.equal(got["input_ids"], x["input_ids"]) and "decoder_input_ids" not in x
    # given decoder inputs are kept; T5's encoder alone (is_encoder_decoder in its config too) gets none
    assert with_decoder_inputs(model, {**x, "decoder_input_ids": x["input_ids"]})["decoder_input_ids"] is x["input_ids"]
    encoder = load_hf(path, "AutoModelForTextEncoding").model
    assert not takes_decoder_inputs(encoder) and with_decoder_inputs(encoder, x) is x
    example = folder_example(model, tok, 12)  # what dpm report/check measure on
    assert example["decoder_input_ids"].shape == example["input_ids"].shape == (1, 12)


def test_t5_for_generation_loses_heads_and_its_folder_generates_the_same_tokens(tmp_path, capsys):
    path, tok = t5_folder(tmp_path / "t5")
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 24), task="AutoModelForSeq2SeqLM",
                          objective="{kind: distill}", head_ratio=0.5)
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["equivalence_error"] <= 1e-5 and summary["macs_after"] < 0.8 * summary["macs_before"]
    reloaded = no_warning_load(tmp_path / "run" / "model-hf", T.AutoModelForSeq2SeqLM)
    assert type(reloaded).__name__ == "T5ForConditionalGeneration"
    assert reloaded.config.num_heads == 2  # head_ratio 0.5: the budget is met by heads alone
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    x = with_decoder_inputs(compact, encoded(tok))
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).logits, compact(**x).logits, atol=1e-5)
        prompt = encoded(tok, ["the data of this module"])
        generated = reloaded.generate(**prompt, max_new_tokens=6, do_sample=False)
        assert torch.equal(generated, compact.generate(**prompt, max_new_tokens=6, do_sample=False))


def test_bart_for_generation_loses_ffn_units_in_encoder_and_decoder_and_is_saved(tmp_path, capsys):
    path, tok = bart_folder(tmp_path / "bart")
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 24), task="AutoModelForSeq2SeqLM",
                          objective="{kind: distill}")
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    assert json.loads(out)["equivalence_error"] <= 1e-5
    reloaded = no_warning_load(tmp_path / "run" / "model-hf", T.AutoModelForSeq2SeqLM)
    assert reloaded.config.encoder_ffn_dim < 64 and reloaded.config.decoder_ffn_dim < 48
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    x = with_decoder_inputs(compact, encoded(tok))
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).logits, compact(**x).logits, atol=1e-5)


def test_t5_model_as_automodel_runs_through_the_cli_on_text(tmp_path, capsys):
    """T5Model was refused ("an encoder-decoder needs decoder inputs"): its decoder now reads the text."""
    path, tok = t5_folder(tmp_path / "t5", cls=T.T5Model)
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 24))
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    assert json.loads(out)["equivalence_error"] <= 1e-5
    reloaded = no_warning_load(tmp_path / "run" / "model-hf", T.AutoModel)
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    x = with_decoder_inputs(compact, encoded(tok))
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).last_hidden_state, compact(**x).last_hidden_state, atol=1e-5)


def test_report_counts_the_decoder_of_a_seq2seq_folder(tmp_path, capsys):
    path, _ = t5_folder(tmp_path / "t5")
    data = text_file(tmp_path / "t.txt", 8)
    macs = {}
    for task in ("AutoModelForSeq2SeqLM", "AutoModelForTextEncoding"):
        recipe = write_recipe(tmp_path / task, path, data, task=task) if (tmp_path / task).mkdir() is None else None
        code, out, err = run_cli(["report", path, "-r", recipe, "--json"], capsys)
        assert code == 0, err
        report = json.loads(out)
        macs[task] = report["models"][0]["macs"]
    # the encoder alone is less than half: the decoder (self- and cross-attention) and the LM head count too
    assert macs["AutoModelForTextEncoding"] < 0.5 * macs["AutoModelForSeq2SeqLM"]


@pytest.mark.parametrize("start, why", [(4000, "outside its vocabulary"), (-1, "not a token id")])
def test_a_decoder_start_token_the_model_cannot_read_is_one_line_before_training(tmp_path, capsys, start, why):
    path, _ = t5_folder(tmp_path / "t5")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "decoder_start_token_id": start}))
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 24), task="AutoModelForSeq2SeqLM")
    code, _, err = run_cli(["prune", "-r", recipe], capsys)
    assert code == 2 and why in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run" / "model-hf").exists()


def test_decoder_start_falls_back_to_the_pad_token_and_refuses_without_either():
    from dpm_cli.hf.inputs import decoder_start_token

    assert decoder_start_token(T.T5Config(decoder_start_token_id=None, pad_token_id=5)) == 5
    with pytest.raises(ConfigError, match="decoder_start_token_id"):
        decoder_start_token(T.T5Config(decoder_start_token_id=None, pad_token_id=None))



def test_check_gates_a_seq2seq_folder_on_the_recipes_text(tmp_path, capsys):
    """`dpm check` feeds the decoder the shifted text too (without it T5 cannot run on text data)."""
    path, _ = t5_folder(tmp_path / "t5")
    recipe = write_recipe(tmp_path, path, text_file(tmp_path / "t.txt", 24), task="AutoModelForSeq2SeqLM",
                          objective="{kind: distill}")
    code, _, err = run_cli(["prune", "-r", recipe, "-q"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["check", tmp_path / "run" / "model-hf", "-r", recipe, "--baseline", path,
                              "--min-cosine", "0.5", "--json"], capsys)
    assert code == 0, err
    evaluation = json.loads(out)["evaluation"]
    assert evaluation["samples"] == 5 and 0.5 < evaluation["cosine"] <= 1.0 + 1e-6
