"""Vision and speech transformers (ViT, DeiT, BEiT, DINOv2, Swin, CLIP's and SigLIP's vision towers,
Wav2Vec2, HuBERT, Wav2Vec2-Conformer, Wav2Vec2-BERT, Whisper's encoder), from tiny random configs: FFN width and heads pruned exactly and
saved as a folder `from_pretrained` loads, or refused in one line before training. They have no
tokenizer: the example input is shaped from the config (`hf.derived_example`), `dpm report` counts at
that shape (or at --input-shape), and `dpm prune` trains on tensors data.

Measured before this file existed: transformers 5's ViT attention (q/k/v/o_proj, no grouped-query
attributes) matched no head rule ("no head rule for ViTAttention"); Wav2Vec2's
feed_forward.intermediate_dense was not an FFN ("does not recognise the feed-forward layers");
`dpm report` on a vision folder failed ("the model folder has no tokenizer"); AutoModelForImageClassification
was not a task; and transformers printed its multi-line LOAD REPORT to stderr on every load."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import cut_half, no_warning_load  # noqa: E402

from dpm_cli.hf import derived_example, load_hf, save_hf  # noqa: E402
from dpm_cli.hf.prunable import ffn_layers, head_problem  # noqa: E402
from dpm_cli.hf.save import format_problem  # noqa: E402

T = transformers
VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
           patch_size=8)
SPEECH = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
              num_conv_pos_embedding_groups=4)
WHISPER = dict(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
               encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8, max_source_positions=16, vocab_size=64,
               pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)

# family -> (model class, config class, config kwargs, Auto class): half the FFN width and half the heads,
# saved as a folder (the head size is written as head_dim, which these configs read)
SAVED = {
    "vit": (T.ViTModel, T.ViTConfig, VIT, T.AutoModel),
    "deit": (T.DeiTModel, T.DeiTConfig, VIT, T.AutoModel),
    "beit": (T.BeitModel, T.BeitConfig, VIT, T.AutoModel),
    "vit_classifier": (T.ViTForImageClassification, T.ViTConfig, dict(VIT, num_labels=5),
                       T.AutoModelForImageClassification),
    # masks random patches in every forward, eval mode too: refused by the preflight ("differs from the
    # decayed model by 1.77") until dpm compared every model from the same random state
    "vit_mae": (T.ViTMAEModel, T.ViTMAEConfig, VIT, T.AutoModel),
}
# FFN saved as a folder; heads pruned exactly but their config derives the head size (a folder is refused)
FFN_SAVED = {
    "clip_vision": (T.CLIPVisionModel, T.CLIPVisionConfig, VIT, T.CLIPVisionModel),
    "siglip_vision": (T.SiglipVisionModel, T.SiglipVisionConfig, VIT, T.SiglipVisionModel),
    "wav2vec2": (T.Wav2Vec2Model, T.Wav2Vec2Config, SPEECH, T.AutoModel),
    "hubert": (T.HubertModel, T.HubertConfig, SPEECH, T.AutoModel),
    "whisper_encoder": (T.WhisperForAudioClassification, T.WhisperConfig, WHISPER, T.AutoModelForAudioClassification),
    # BERT-style attention whose q/k/v child is named `attention`, not `self` ("no head rule" before)
    "data2vec_vision": (T.Data2VecVisionModel, T.Data2VecVisionConfig, VIT, T.AutoModel),
    # Conformer attention: linear_q/k/v/out; relative positions add linear_pos rows and pos_bias_u/v rows per
    # head, which leave with it; the rotary variant views the layer's input by num_heads, which stays
    "wav2vec2_conformer": (T.Wav2Vec2ConformerModel, T.Wav2Vec2ConformerConfig, SPEECH, T.AutoModel),
    "wav2vec2_conformer_rotary": (T.Wav2Vec2ConformerModel, T.Wav2Vec2ConformerConfig,
                                  dict(SPEECH, position_embeddings_type="rotary"), T.AutoModel),
    # InternVL's vision tower: q/k RMSNorms over all heads, rescaled when heads leave; output projection_layer
    "internvl_vision": (T.InternVLVisionModel, T.InternVLVisionConfig,
                        dict(VIT, image_size=[32, 32], patch_size=[8, 8], use_qk_norm=True), T.AutoModel),
    "wav2vec2_bert": (T.Wav2Vec2BertModel, T.Wav2Vec2BertConfig, dict(SPEECH, feature_projection_input_dim=16),
                      T.AutoModel),  # input_features: stacked mel frames
}
# pruned exactly, no folder: the FFN width is mlp_ratio x hidden, which no config key holds
NO_FOLDER = {
    "dinov2": (T.Dinov2Model, T.Dinov2Config, dict(VIT, mlp_ratio=2)),
    "swin": (T.SwinModel, T.SwinConfig, dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                                num_heads=[2, 4], window_size=4)),
}
TASK = {T.AutoModel: "AutoModel", T.AutoModelForImageClassification: "AutoModelForImageClassification",
        T.AutoModelForAudioClassification: "AutoModelForAudioClassification"}


def folder(tmp_path, cls, config, kwargs, name="in"):
    torch.manual_seed(0)
    cls(config(**kwargs)).eval().save_pretrained(str(tmp_path / name))
    return tmp_path / name


def output(model, x):
    torch.manual_seed(0)  # ViT-MAE draws its patch mask in every forward
    with torch.no_grad():
        out = model(**x)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def load(path, auto):
    return load_hf(path, TASK.get(auto, "AutoModel")).model if auto in TASK else auto.from_pretrained(str(path)).eval()


@pytest.mark.parametrize("family", sorted(SAVED))
def test_ffn_and_heads_pruned_exactly_and_saved_as_a_folder(tmp_path, family):
    cls, config, kwargs, auto = SAVED[family]
    model = load(folder(tmp_path, cls, config, kwargs), auto)
    x = derived_example(model)
    assert list(x) == ["pixel_values"] and x["pixel_values"].shape == (1, 3, 32, 32)
    assert format_problem(model, "layer", 0.5) is None and head_problem(model, 0.5) is None
    assert cut_half(model, x, 0.5).compact().max_rel_error <= 1e-5
    assert list(ffn_layers(model).values()) == [32, 32]
    reloaded = no_warning_load(save_hf(model, None, tmp_path / "out"), auto)
    assert reloaded.config.num_attention_heads == 2 and reloaded.config.head_dim == 8
    assert torch.allclose(output(reloaded, x), output(model, x), atol=1e-6)


@pytest.mark.parametrize("family", sorted(FFN_SAVED))
def test_ffn_saved_as_a_folder_and_heads_pruned_exactly(tmp_path, family):
    cls, config, kwargs, auto = FFN_SAVED[family]
    path = folder(tmp_path, cls, config, kwargs)
    model = load(path, auto)
    x = derived_example(model)
    assert cut_half(model, x, 0.0).compact().max_rel_error <= 1e-5
    assert set(ffn_layers(model).values()) == {32}
    reloaded = no_warning_load(save_hf(model, None, tmp_path / "out"), auto)
    assert torch.allclose(output(reloaded, x), output(model, x), atol=1e-6)
    heads = load(path, auto)  # heads too: exact, but this config cannot record them
    assert head_problem(heads, 0.5) is None and "cannot record pruned attention heads" in format_problem(heads, "layer", 0.5)
    assert cut_half(heads, x, 0.5).compact().max_rel_error <= 1e-5


@pytest.mark.parametrize("family", sorted(NO_FOLDER))
def test_ffn_pruned_exactly_but_a_folder_is_refused_before_training(tmp_path, family):
    cls, config, kwargs = NO_FOLDER[family]
    model = load_hf(folder(tmp_path, cls, config, kwargs)).model
    assert "FFN" in format_problem(model, "layer", 0.0)
    assert cut_half(model, derived_example(model), 0.0).compact().max_rel_error <= 1e-5


def test_swin_heads_are_refused_naming_the_relative_position_bias(tmp_path):
    model = load_hf(folder(tmp_path, *NO_FOLDER["swin"])).model
    assert "relative_position_bias" in head_problem(model, 0.5)


def test_report_counts_a_vision_folder_at_its_image_size_or_at_input_shape(tmp_path, capsys):
    path = folder(tmp_path, T.ViTForImageClassification, T.ViTConfig, dict(VIT, num_labels=5))
    code, out, err = run_cli(["report", path, "--json"], capsys)
    assert code == 0, err
    first = json.loads(out)
    assert "LOAD REPORT" not in err  # transformers' multi-line key table (AutoModel drops the classifier)
    code, out, err = run_cli(["report", path, "--json", "--input-shape", "2,3,32,32"], capsys)
    assert code == 0, err
    second = json.loads(out)
    assert first["input_shape"] == [1, 3, 32, 32] and second["input_shape"] == [2, 3, 32, 32]
    assert second["models"][0]["macs"] == 2 * first["models"][0]["macs"]  # two images


def test_report_asks_for_input_shape_when_nothing_gives_one(tmp_path, capsys):
    """A folder with no tokenizer whose config states no input size (here a text model's): one line."""
    path = folder(tmp_path, T.BertModel, T.BertConfig, dict(VIT, vocab_size=64, max_position_embeddings=64))
    assert derived_example(load_hf(path).model) is None
    code, out, err = run_cli(["report", path], capsys)
    assert code == 2 and "--input-shape" in err and len(err.strip().splitlines()) == 1


def test_prune_a_vit_classifier_folder_with_heads_into_a_folder(tmp_path, capsys):
    """dpm prune on a ViTForImageClassification folder (no tokenizer), tensors data, heads and FFN:
    the folder written loads with AutoModelForImageClassification and gives the compact model's logits."""
    path = folder(tmp_path, T.ViTForImageClassification, T.ViTConfig, dict(VIT, num_labels=5))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "images.npz", inputs=rng.standard_normal((48, 3, 32, 32)).astype("float32"),
             labels=rng.integers(0, 5, 48))
    (tmp_path / "r.yaml").write_text(f"""\
version: 1
model: {{hf: {{path: {path}, task: AutoModelForImageClassification}}}}
data: {{source: tensors, path: images.npz, batch_size: 8}}
objective: {{kind: cross_entropy}}
pruning: {{budget: {{kind: macs, keep: 0.7}}, ranking: layer, head_ratio: 0.25, decay_steps: 2}}
training: {{steps: 6, log_every: 3, optimizer: {{name: adamw, lr: 1.0e-3, weight_decay: 0.0}}}}
output: {{dir: {tmp_path / 'run'}, hf: true}}
""")
    code, out, err = run_cli(["prune", "--recipe", tmp_path / "r.yaml", "--json", "-q"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["equivalence_error"] <= 1e-5 and summary["macs_after"] <= 0.7 * summary["macs_before"]
    saved = tmp_path / "run" / "model-hf"
    reloaded = no_warning_load(saved, T.AutoModelForImageClassification)
    assert reloaded.config.num_attention_heads < 4 or reloaded.config.intermediate_size < 64
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    x = {"pixel_values": torch.randn(2, 3, 32, 32)}
    assert torch.allclose(output(reloaded, x), output(compact, x), atol=1e-5)


def test_prune_a_wav2vec2_folder_writes_every_format_but_the_pickle_torch_refuses(tmp_path, capsys):
    """Wav2Vec2's positional convolution is weight_norm'ed (a parametrized module), which torch.save cannot
    pickle: every `dpm prune` of a Wav2Vec2 or HuBERT folder trained to the end and then failed writing
    the module format ("Serialization of parametrized modules is only supported through state_dict()").
    The module format is skipped with a note, said before training too; the folder and the artifact hold it."""
    import dpm_cli

    path = folder(tmp_path, T.Wav2Vec2Model, T.Wav2Vec2Config, SPEECH)
    np.savez(tmp_path / "audio.npz", inputs=np.random.default_rng(0).standard_normal((16, 16000)).astype("float32"))
    (tmp_path / "r.yaml").write_text(f"""\
version: 1
model: {{hf: {{path: {path}, task: AutoModel}}}}
data: {{source: tensors, path: audio.npz, batch_size: 4}}
objective: {{kind: distill, targets: [hidden]}}
pruning: {{budget: {{kind: macs, keep: 0.98}}, ranking: layer, head_ratio: 0, decay_steps: 2}}
training: {{steps: 6, log_every: 3, optimizer: {{name: adamw, lr: 1.0e-3, weight_decay: 0.0}}}}
output: {{dir: {tmp_path / 'run'}, hf: true, formats: [module, artifact]}}
""")
    capsys.readouterr()
    code, out, err = run_cli(["prune", "--recipe", tmp_path / "r.yaml", "--json"], capsys)
    assert code == 0, err
    assert "torch cannot pickle encoder.pos_conv_embed.conv" in err.split("dpm fine-tune")[0]  # before training
    summary = json.loads(out)
    assert sum("torch cannot pickle" in note for note in summary["notes"]) == 1
    assert "module" not in summary["outputs"] and not (tmp_path / "run" / "model.pt").exists()
    x = derived_example(load_hf(path).model)
    reloaded = no_warning_load(tmp_path / "run" / "model-hf", T.AutoModel)
    rebuilt = dpm_cli.load(summary["outputs"]["artifact"]).eval()
    assert torch.allclose(output(rebuilt, x), output(reloaded, x), atol=1e-5)


def test_aimv2_gated_ffn_named_ffn_is_pruned(tmp_path):
    """AIMv2's vision encoder names its gated FFN ffn.gate_proj / up_proj / down_proj: with gate_proj
    unknown, it was protected, its group vanished and a channels budget divided by zero."""
    model = load_hf(folder(tmp_path, T.Aimv2VisionModel, T.Aimv2VisionConfig,
                           dict(VIT, num_channels=3))).model
    x = derived_example(model)
    assert cut_half(model, x, 0.0).compact().max_rel_error <= 1e-5
    assert set(ffn_layers(model).values()) == {32}
    reloaded = no_warning_load(save_hf(model, None, tmp_path / "out", x), T.AutoModel)
    assert torch.allclose(output(reloaded, x), output(model, x), atol=1e-6)


def test_conformer_layers_two_ffns_are_two_entries_and_its_heads_replay_from_the_artifact(tmp_path):
    """Wav2Vec2-Conformer's layers hold two FFNs (ffn1, ffn2), which were not recognised ("does not
    recognise the feed-forward layers") and are listed apart (a layer's name would hide one of two
    widths from the folder check). Its heads, with their linear_pos rows and pos_bias_u/v rows (no head
    rule before), leave exactly, and the dpm artifact replays them."""
    import dpm_cli
    from artifact_helpers import save
    from dpm_cli.artifact import make_artifact
    from dpm_cli.hf.artifact import hf_provenance

    model = load_hf(folder(tmp_path, T.Wav2Vec2ConformerModel, T.Wav2Vec2ConformerConfig, SPEECH)).model
    x = derived_example(model)
    assert list(ffn_layers(model)) == [f"encoder.layers.{i}.ffn{j}" for i in (0, 1) for j in (1, 2)]
    prov, why = hf_provenance(model, x)
    assert why is None
    result = cut_half(model, x, 0.5).compact()
    assert result.max_rel_error <= 1e-5
    attn = model.encoder.layers[0].self_attn
    assert attn.pos_bias_u.shape == attn.pos_bias_v.shape == (2, 8) and attn.linear_pos.out_features == 16
    rebuilt = dpm_cli.load(save(make_artifact(model, prov.with_stage(result.history)), tmp_path / "m.dpm.pt")).eval()
    assert rebuilt.encoder.layers[1].self_attn.pos_bias_u.shape == (2, 8)
    assert torch.allclose(output(rebuilt, x), output(model, x), atol=1e-6)


def test_a_channels_budget_with_no_channel_structures_is_one_budget_error(tmp_path):
    """Only heads to prune (every FFN ignored) and a channels budget, which counts no heads: a
    BudgetError naming the budget, not ZeroDivisionError."""
    from dpm_cli.errors import BudgetError
    from dpm_cli.hf import ffn_roots, protected_modules

    model = load_hf(folder(tmp_path, T.ViTModel, T.ViTConfig, VIT)).model
    with pytest.raises(BudgetError, match="cannot be reached"):
        cut_half(model, derived_example(model), 0.0, ignore=protected_modules(model) + ffn_roots(model))


def test_dinov3_ffn_saved_and_heads_exact_through_its_partial_rotary_concat(tmp_path):
    """DINOv3's attention (q/k/v/o_proj with num_heads) matched no head rule, and torch-pruning could
    not trace it at all: its rotary embedding concatenates the class/register tokens with the rotated
    patch tokens, whose widths torch-pruning 1.6.1 fails to infer (IndexError; `engine.tp_fixes`)."""
    kwargs = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    path = folder(tmp_path, T.DINOv3ViTModel, T.DINOv3ViTConfig, kwargs)
    model = load_hf(path).model
    x = derived_example(model)
    assert cut_half(model, x, 0.0).compact().max_rel_error <= 1e-5
    reloaded = no_warning_load(save_hf(model, None, tmp_path / "out", x), T.AutoModel)
    assert torch.allclose(output(reloaded, x), output(model, x), atol=1e-6)
    heads = load_hf(path).model
    assert head_problem(heads, 0.5) is None
    assert cut_half(heads, x, 0.5).compact().max_rel_error <= 1e-5


@pytest.mark.parametrize("image_size", [10 ** 7, "big", -32, [32], True])
def test_a_hostile_image_size_in_the_config_is_one_line_before_anything_is_allocated(tmp_path, capsys, image_size):
    """The derived example's sizes come from the folder's config.json: a huge one would allocate
    terabytes, a wrong type raised inside torch. Now a ConfigError, one line, before any tensor exists;
    through the CLI (where the position embeddings no longer fit either) exit 2, one line."""
    from dpm_cli.errors import ConfigError

    from types import SimpleNamespace

    # a config object that, unlike transformers' own, does not validate its fields
    model = SimpleNamespace(config=SimpleNamespace(image_size=image_size, num_channels=3), main_input_name="pixel_values")
    with pytest.raises(ConfigError) as err:
        derived_example(model)
    assert "\n" not in str(err.value)
    path = folder(tmp_path, T.ViTModel, T.ViTConfig, VIT)
    config = json.loads((path / "config.json").read_text())
    config["image_size"] = image_size
    (path / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    code, out, err = run_cli(["report", path], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("width", [10 ** 9, "__import__('os').system('touch pwned')", -16, True, [16]])
def test_a_hostile_feature_width_in_a_wav2vec2_bert_config_is_one_line_and_nothing_runs(tmp_path, capsys,
                                                                                      monkeypatch, width):
    """Wav2Vec2-BERT's example input is shaped from config.json's feature_projection_input_dim: a huge,
    negative, wrong-typed or code-carrying value is one line (exit 2) before any tensor exists, nothing
    is evaluated and nothing written."""
    from types import SimpleNamespace

    from dpm_cli.errors import ConfigError

    model = SimpleNamespace(config=SimpleNamespace(feature_projection_input_dim=width), main_input_name="input_features")
    with pytest.raises(ConfigError) as err:
        derived_example(model)
    assert "\n" not in str(err.value)
    path = folder(tmp_path, T.Wav2Vec2BertModel, T.Wav2Vec2BertConfig, dict(SPEECH, feature_projection_input_dim=16))
    config = json.loads((path / "config.json").read_text())
    config["feature_projection_input_dim"] = width
    (path / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    capsys.readouterr()
    code, out, err = run_cli(["report", path], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before and not (tmp_path / "pwned").exists()


def test_a_speech_folder_with_a_tokenizer_is_not_fed_tokens(tmp_path, capsys):
    """A CTC model is saved with its processor: vocab.json makes a tokenizer load, and dpm built the
    example from it (input_ids), which the model cannot take. Its main input decides: audio from the config."""
    import json

    path = folder(tmp_path, T.Wav2Vec2ForCTC, T.Wav2Vec2Config, dict(SPEECH, vocab_size=8))
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "a": 5, "b": 6, "c": 7}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    T.Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json")).save_pretrained(str(path))
    assert load_hf(path, "AutoModelForCTC").tokenizer is not None
    code, out, err = run_cli(["report", path, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["input_shape"] == [1, 16000]  # one second of 16 kHz audio, not token ids


def test_extras_travel_with_the_folder_but_links_do_not(tmp_path):
    """The processor's settings and sentence-transformers' module folders (a Dense projection too) are
    copied into the pruned folder; a link in the source, which could point anywhere, is not followed."""
    import json

    from dpm_cli.hf.save import _copy_extras

    source, target = tmp_path / "src", tmp_path / "dst"
    (source / "2_Dense").mkdir(parents=True)
    target.mkdir()
    (source / "2_Dense" / "config.json").write_text("{}")
    (source / "modules.json").write_text(json.dumps([{"path": ""}, {"path": "2_Dense"}, {"path": "../outside"}]))
    (source / "preprocessor_config.json").write_text("{}")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("private")
    (source / "1_Pooling").symlink_to(secret, target_is_directory=True)
    (source / "2_Dense" / "link").symlink_to(secret / "key")
    _copy_extras(source, target)
    assert (target / "2_Dense" / "config.json").is_file() and (target / "preprocessor_config.json").is_file()
    assert (target / "modules.json").is_file()
    assert not (target / "1_Pooling").exists() and not (target / "2_Dense" / "link").exists()


def test_links_of_a_hub_cache_snapshot_are_copied_and_links_out_of_it_are_not(tmp_path):
    """The folder snapshot_download returns (`hub/models--org--name/snapshots/REV`) is links into
    `../../blobs`: they were all left behind, so a sentence-transformers model pruned from its cache lost
    modules.json and its 1_Pooling settings (it reloaded without its pooling and normalisation)."""
    import json
    import os

    from dpm_cli.hf.save import _copy_extras

    repo = tmp_path / "hub" / "models--org--encoder"
    source, blobs, target = repo / "snapshots" / "abc123", repo / "blobs", tmp_path / "dst"
    for folder in (source / "1_Pooling", blobs, target):
        folder.mkdir(parents=True)
    (blobs / "1").write_text(json.dumps([{"path": ""}, {"path": "1_Pooling"}]))
    (blobs / "2").write_text('{"pooling_mode_mean_tokens": true}')
    os.symlink("../../blobs/1", source / "modules.json")
    os.symlink("../../../blobs/2", source / "1_Pooling" / "config.json")
    secret = tmp_path / "hub" / "secret"
    secret.write_text("private")  # in the cache, but no blob of this repository
    os.symlink(secret, source / "sentence_bert_config.json")
    os.symlink(secret, source / "1_Pooling" / "stolen")
    _copy_extras(source, target)
    assert json.loads((target / "modules.json").read_text())[1]["path"] == "1_Pooling"
    assert not (target / "modules.json").is_symlink()  # the file itself, not a link into the cache
    assert json.loads((target / "1_Pooling" / "config.json").read_text()) == {"pooling_mode_mean_tokens": True}
    assert not (target / "sentence_bert_config.json").exists() and not (target / "1_Pooling" / "stolen").exists()


def test_the_saved_folder_is_readable_as_every_other_output(tmp_path):
    """save_hf builds the folder in a mkdtemp directory (mode 0700) and renamed it into place: the other
    outputs were 0644, the folder alone unreadable to a publish step running as another user."""
    import os

    from hf_helpers import bert_folder

    from dpm_cli.hf.load import load_hf
    from dpm_cli.hf.save import save_hf

    loaded = load_hf(bert_folder(tmp_path / "bert"))
    old = os.umask(0o022)
    try:
        folder = save_hf(loaded.model, loaded.tokenizer, tmp_path / "out")
    finally:
        os.umask(old)
    assert os.stat(folder).st_mode & 0o777 == 0o755
    assert {os.stat(p).st_mode & 0o777 for p in folder.iterdir() if p.is_file()} == {0o644}
