"""The pickle-free dpm artifact of a transformers model: what ships when no standard config can hold
the pruned shape (BertConfig has one head count and one FFN width for all layers, and no pruned_heads)."""
from __future__ import annotations

import json
import sys
import uuid

import pytest
import torch

transformers = pytest.importorskip("transformers")

import dpm_cli  # noqa: E402
from artifact_helpers import save, write_marker_module  # noqa: E402
from cli_helpers import run_cli  # noqa: E402
from hf_helpers import bert_folder, text_file, write_recipe  # noqa: E402

from dpm_cli import DecayPruner, DPMConfig  # noqa: E402
from dpm_cli.artifact import make_artifact, parse_artifact, rebuild_artifact  # noqa: E402
from dpm_cli.batch import output_fields  # noqa: E402
from dpm_cli.errors import CheckpointError, ConfigError  # noqa: E402
from dpm_cli.hf import HFFormatError, load_hf, protected_modules, save_hf, token_example  # noqa: E402
from dpm_cli.hf.artifact import HF_FACTORY, hf_provenance  # noqa: E402
from dpm_cli.models.hf_config import from_config  # noqa: E402


@pytest.fixture
def bert(tmp_path):
    return bert_folder(tmp_path / "bert")


def _per_layer_pruned(folder):
    """A tiny BERT with 1 head of 4 removed in layer 0 and 2 in layer 1, FFN widths 48 and 32 of 64,
    plus the artifact provenance taken before pruning (as `dpm prune` takes it)."""
    loaded = load_hf(folder)
    model, x = loaded.model, token_example(loaded.tokenizer, 24)
    prov, why = hf_provenance(model, x)
    assert why is None
    pruner = DecayPruner(model, x, DPMConfig(budget=0.8, decay_steps=1, ignore=protected_modules(model)))
    index = {g.name: i for i, g in enumerate(pruner.groups)}
    keys = ([(index["encoder.layer.0.attention"], 1), (index["encoder.layer.1.attention"], 0),
             (index["encoder.layer.1.attention"], 2)]
            + [(index["encoder.layer.0.intermediate.dense"], c) for c in range(0, 64, 4)]
            + [(index["encoder.layer.1.intermediate.dense"], c) for c in range(0, 64, 2)])
    pruner.prune_now(keys)
    result = pruner.compact()
    return loaded, x, prov.with_stage(result.history)


def test_bert_with_per_layer_heads_and_ffn_widths_round_trips_through_the_artifact(tmp_path, bert):
    loaded, x, prov = _per_layer_pruned(bert)
    model = loaded.model.eval()
    layers = model.encoder.layer
    assert [m.attention.self.num_attention_heads for m in layers] == [3, 2]
    assert [m.intermediate.dense.out_features for m in layers] == [48, 32]
    with pytest.raises(HFFormatError, match=r"differ per layer \(\[48, 32\]\).*ship the dpm artifact"):
        save_hf(model, loaded.tokenizer, tmp_path / "hf", x)  # the standard format cannot hold it

    path = save(make_artifact(model, prov), tmp_path / "bert.dpm.pt")
    obj = torch.load(path, weights_only=True)  # no pickled code anywhere in the file
    assert obj["factory"] == HF_FACTORY and obj["input_shape"] is None
    config = obj["factory_kwargs"]["config"]
    assert obj["factory_kwargs"]["architecture"] == "BertModel" and config["num_attention_heads"] == 4
    assert not {"_name_or_path", "transformers_version", "auto_map"} & set(config)  # where it came from: dropped
    assert {k: v.dtype for k, v in obj["example_inputs"].items()} == {
        "input_ids": torch.long, "token_type_ids": torch.long, "attention_mask": torch.long}
    for rebuilt in (rebuild_artifact(obj, str(path)), dpm_cli.load(path)):  # allow-listed: no trust needed
        rebuilt.eval()
        r_layers = rebuilt.encoder.layer
        assert [m.attention.self.num_attention_heads for m in r_layers] == [3, 2]  # rebooked by the replay
        assert [m.attention.self.all_head_size for m in r_layers] == [24, 16]
        assert [m.attention.self.query.out_features for m in r_layers] == [24, 16]
        assert [m.intermediate.dense.out_features for m in r_layers] == [48, 32]
        state = rebuilt.state_dict()
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        with torch.no_grad():
            want, got = output_fields(model(**x)), output_fields(rebuilt(**x))
        assert set(want) == set(got) == {"output.last_hidden_state", "output.pooler_output"}
        for name in want:
            assert torch.allclose(got[name], want[name], rtol=0, atol=1e-6), name


def test_cli_prune_writes_the_artifact_and_report_counts_it_at_the_sequence_length(tmp_path, bert, capsys):
    # Per-layer widths and heads (heads compete in the budget): no config can hold them, the artifact can.
    recipe = write_recipe(tmp_path, bert, text_file(tmp_path / "t.txt"), ranking="global", head_ratio=None)
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "pruning.budget.keep=0.7", "output.hf=false"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    run = tmp_path / "run"
    assert summary["outputs"]["artifact"] == str(run / "model.dpm.pt")
    assert not any("artifact not written" in n for n in summary["notes"])
    code, out, err = run_cli(["report", run / "model.dpm.pt", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["input_shape"] == [1, 24]  # the recipe's model.seq_len, stored in the artifact
    assert report["models"][0]["macs"] == summary["macs_after"]
    code, _, err = run_cli(["check", run / "model.dpm.pt", "--max-macs", str(summary["macs_after"])], capsys)
    assert code == 0, err
    compact = torch.load(run / "model.pt", weights_only=False).eval()
    rebuilt = dpm_cli.load(run / "model.dpm.pt").eval()
    assert [m.attention.self.num_attention_heads for m in rebuilt.encoder.layer] == [
        m.attention.self.num_attention_heads for m in compact.encoder.layer]
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in compact.state_dict().items())
    x = torch.load(run / "model.dpm.pt", weights_only=True)["example_inputs"]
    assert x["input_ids"].shape == (1, 24)
    with torch.no_grad():
        want, got = output_fields(compact(**x)), output_fields(rebuilt(**x))
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=0, atol=1e-6), name


def _tiny_artifact(tmp_path):
    kwargs = {"architecture": "BertModel",
              "config": {"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 32, "max_position_embeddings": 16}}
    torch.manual_seed(0)
    model = from_config(**kwargs)
    x = {"input_ids": torch.randint(0, 40, (1, 8)), "attention_mask": torch.ones(1, 8, dtype=torch.long)}
    prov, why = hf_provenance(model, x)
    assert why is None
    return make_artifact(model, prov)


def _refused(args, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_hostile_configs_in_an_artifact_are_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    name = f"evil_hf_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    write_marker_module(tmp_path, name, marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    clean = _tiny_artifact(tmp_path)
    assert isinstance(rebuild_artifact(clean), transformers.BertModel)  # the unaltered artifact loads
    hostile = [
        ({"auto_map": {"AutoModel": f"{name}.build"}}, None, "auto_map"),
        ({"trust_remote_code": True}, None, "trust_remote_code"),
        ({"auto_map": None}, None, "auto_map"),  # present at all: a config never needs it
        ({"text_config": {"auto_map": None, "trust_remote_code": False}}, None, "auto_map"),  # nested
        ({"_attn_implementation": "kernels-community/flash-attn"}, None, "_attn_implementation"),
        ({"attn_implementation": "flash_attention_2"}, None, "attention implementations"),
        ({"_name_or_path": "/some/folder"}, None, "_name_or_path"),
        ({}, f"{name}.build", "not a transformers model class name"),  # a dotted path
        ({}, "os", "is not a transformers model class"),
        ({}, "BertTokenizer", "is not a transformers model class"),  # in transformers, not a model
        ({}, "_private", "not a transformers model class name"),
    ]
    for extra, architecture, fragment in hostile:
        art = {**clean, "factory_kwargs": {"architecture": architecture or "BertModel",
                                           "config": {**clean["factory_kwargs"]["config"], **extra}}}
        path = save(art, tmp_path / "hostile.dpm.pt")
        err = _refused(["report", path, "--json"], capsys)
        assert fragment in err, (extra, architecture, err)
        with pytest.raises((CheckpointError, ConfigError)):
            dpm_cli.load(path)
    assert not marker.exists() and name not in sys.modules


@pytest.mark.parametrize("inputs, fragment", [
    ({"input_ids": torch.full((1, 8), -1)}, "outside [0, 2**31)"),
    ({"_hidden": torch.zeros(1, 8, dtype=torch.long)}, "argument names"),
    ({"input_ids": [1, 2, 3]}, "dense integer, bool or float tensor"),
    ({"input_ids": torch.zeros(1, 8, dtype=torch.complex64)}, "dense integer, bool or float tensor"),
    ({}, "argument names"),
])
def test_malformed_example_inputs_are_refused(tmp_path, capsys, inputs, fragment):
    art = {**_tiny_artifact(tmp_path), "example_inputs": inputs}
    path = save(art, tmp_path / "bad.dpm.pt")
    with pytest.raises(CheckpointError, match="malformed dpm artifact"):
        parse_artifact(torch.load(path, weights_only=True))
    assert fragment in _refused(["report", path], capsys)


def test_from_config_refuses_what_the_artifact_gate_refuses():
    for config in ({"auto_map": None}, {"sub": [{"trust_remote_code": False}]}, {"_attn_implementation": "x/y"}):
        with pytest.raises(ConfigError):
            from_config("BertModel", config)
    for architecture in ("transformers.BertModel", "BertConfig", "_BertModel"):
        with pytest.raises(ConfigError, match="not a transformers model class"):
            from_config(architecture, {})
    assert isinstance(from_config("BertModel", {"hidden_size": 8, "num_attention_heads": 2,
                                                "_attn_implementation": "eager"}), transformers.BertModel)


def test_a_config_that_names_a_path_is_not_stored_and_says_why(bert):
    config = json.loads((bert / "config.json").read_text())
    config["id2label"] = {"0": "a/b"}  # looks like a path: an artifact may not carry it
    config["label2id"] = {"a/b": 0}
    (bert / "config.json").write_text(json.dumps(config))
    loaded = load_hf(bert)
    prov, why = hf_provenance(loaded.model, token_example(loaded.tokenizer, 8))
    assert prov is None and "id2label" in why and "a path" in why
