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


# ---------------------------------------------------------------- speech: Whisper, decoder on its own words
WHISPER = dict(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
               encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8, max_source_positions=16, vocab_size=64,
               pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)


def whisper_folder(tmp_path):
    path = tmp_path / "whisper"
    torch.manual_seed(0)
    T.WhisperForConditionalGeneration(T.WhisperConfig(**WHISPER)).eval().save_pretrained(str(path))
    (path / "preprocessor_config.json").write_text(json.dumps({"feature_extractor_type": "WhisperFeatureExtractor",
                                                               "feature_size": 8}))
    torch.save({"inputs": torch.randn(24, 8, 32, generator=torch.Generator().manual_seed(1))}, tmp_path / "feats.pt")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""version: 1
model:
  hf: {{path: {path}, task: AutoModelForSpeechSeq2Seq}}
data: {{source: tensors, path: {tmp_path / 'feats.pt'}, batch_size: 4, eval_batch_size: 8}}
objective: {{kind: distill}}
pruning: {{budget: {{kind: macs, keep: 0.85}}, ranking: layer, head_ratio: 0, decay_steps: 2}}
training: {{steps: 6, log_every: 3, optimizer: {{name: adamw, lr: 1.0e-3, weight_decay: 0.0}}}}
output: {{dir: {tmp_path / 'run'}, hf: true}}
""")
    return path, recipe


def test_transcripts_start_with_the_start_token_and_are_the_models_greedy_words(tmp_path):
    from dpm_cli.hf.transcripts import DECODER_TOKENS, transcribe

    path, _ = whisper_folder(tmp_path)
    model = load_hf(path, "AutoModelForSpeechSeq2Seq").model
    features = {"input_features": torch.randn(3, 8, 32, generator=torch.Generator().manual_seed(2))}
    ids = transcribe(model, features, start=1)
    assert ids.dtype == torch.long and ids.shape[0] == 3 and 2 <= ids.shape[1] <= DECODER_TOKENS
    assert bool((ids[:, 0] == 1).all())
    assert torch.equal(ids, transcribe(model, features, start=1))  # greedy: the same every time
    with torch.no_grad():  # teacher-forced on its own words, the model predicts the next of them
        logits = model(**features, decoder_input_ids=ids).logits
    assert torch.equal(logits[0, 0].argmax(), ids[0, 1])


def test_whisper_for_generation_is_pruned_on_audio_alone_and_its_folder_transcribes_the_same(tmp_path, capsys):
    """AutoModelForSpeechSeq2Seq was not a task dpm took, and WhisperModel could not run on audio alone
    (no decoder inputs): the decoder now reads the original model's own transcription of each input."""
    path, recipe = whisper_folder(tmp_path)
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["equivalence_error"] <= 1e-5 and summary["macs_after"] < summary["macs_before"]
    folder = tmp_path / "run" / "model-hf"
    assert (folder / "preprocessor_config.json").is_file()  # the feature extractor's settings travel along
    reloaded = no_warning_load(folder, T.AutoModelForSpeechSeq2Seq)
    assert type(reloaded).__name__ == "WhisperForConditionalGeneration"
    assert reloaded.config.encoder_ffn_dim < 64 or reloaded.config.decoder_ffn_dim < 64
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    x = {"input_features": torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(3))}
    with torch.no_grad():
        a = reloaded.generate(**x, max_new_tokens=5, do_sample=False)
        assert torch.equal(a, compact.generate(**x, max_new_tokens=5, do_sample=False))
    macs = {}
    for args in ([], ["-r", recipe]):  # the folder's own architecture, and the recipe's task: the same
        code, out, err = run_cli(["report", folder, *args, "--json"], capsys)
        assert code == 0, err
        macs[bool(args)] = json.loads(out)["models"][0]["macs"]
    # config.json names WhisperForConditionalGeneration: loaded with its LM head and transcripts with no recipe
    assert macs[True] == macs[False]
