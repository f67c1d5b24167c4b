"""Folders whose model is code inside them (config.json `auto_map`), and folders whose tokenizer is broken.

Found by running such folders through `dpm prune`: a folder of an unknown model_type failed with
transformers' "does not recognize this architecture" cut mid-sentence; one whose architecture only its
auto_map names was loaded as a bare encoder ("the model returns no logits"); one whose code is another
model under a known model_type (a rotary encoder saved as `bert`) would have been pruned as BERT; and a
tokenizer that does not load was reported as "the model folder has none", and the pruned folder would
have been written without one. No test runs the folder's code: each checks that nothing did.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import bert_folder, no_warning_load, text_file, write_recipe  # noqa: E402

from dpm_cli.errors import CheckpointError  # noqa: E402
from dpm_cli.hf.load import load_hf  # noqa: E402

CLASSIFY = "{kind: cross_entropy}"


def custom_folder(tmp_path: Path, name: str, **config_changes) -> tuple[Path, Path]:
    """A BERT classifier folder whose config.json registers its own code, and the file that code would
    write if it ever ran."""
    folder = bert_folder(tmp_path / name, "AutoModelForSequenceClassification")
    marker = tmp_path / f"{name}-code-ran"
    (folder / "modeling_x.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(architectures=["XForClassification"],
                  auto_map={"AutoModel": "modeling_x.XModel",
                            "AutoModelForSequenceClassification": "modeling_x.XForClassification"},
                  **config_changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_an_unknown_model_type_with_its_own_code_is_one_line_and_nothing_runs(tmp_path, capsys):
    folder, marker = custom_folder(tmp_path, "gte", model_type="new")
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.jsonl", labelled=True), task="auto",
                          objective=CLASSIFY)
    capsys.readouterr()  # building the folder printed transformers' progress
    code, out, err = run_cli(["prune", "-r", recipe], capsys)
    assert code == 2
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "auto_map: AutoModelForSequenceClassification -> modeling_x.XForClassification" in line
    assert "model_type 'new'" in line and "trust_remote_code=True" in line and "DecayPruner" in line
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_another_model_under_a_known_type_is_refused_by_its_weights(tmp_path):
    folder, marker = custom_folder(tmp_path, "rotary")
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")  # its code has rotary positions, not a table
    table = next(k for k in weights if "position_embeddings" in k)
    weights["bert.embeddings.rotary.inv_freq"] = weights.pop(table)[0, :4].contiguous()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as refused:
        load_hf(folder)
    message = str(refused.value)
    assert "does not match its weights" in message and "1 missing, e.g. bert.embeddings.position_embeddings" in message
    assert "1 not used, e.g. bert.embeddings.rotary.inv_freq" in message
    assert not marker.exists()


def test_built_in_class_holding_every_weight_is_pruned_and_saved_without_the_code(tmp_path, capsys):
    folder, marker = custom_folder(tmp_path, "phi3like")
    loaded = load_hf(folder)  # the architecture only auto_map names: its Auto class keeps the classifier
    assert loaded.task == "AutoModelForSequenceClassification"
    assert any("names its own code" in n and "holds exactly the folder's weights" in n for n in loaded.notes)
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.jsonl", labelled=True), task="auto",
                          objective=CLASSIFY)
    code, out, err = run_cli(["prune", "-r", recipe], capsys)
    assert code == 0, err
    saved = tmp_path / "run" / "model-hf"
    config = json.loads((saved / "config.json").read_text())
    # the pruned folder is what transformers' own class computes: nothing points at code it does not hold
    assert "auto_map" not in config and config["architectures"] == ["BertForSequenceClassification"]
    assert not (saved / "modeling_x.py").exists()
    no_warning_load(saved, transformers.AutoModelForSequenceClassification)
    assert not marker.exists()


def test_a_tokenizer_that_does_not_load_is_named_not_taken_for_none(tmp_path, capsys):
    folder = bert_folder(tmp_path / "m")
    (folder / "vocab.txt").unlink()
    (folder / "tokenizer.json").write_text('{"version": "1.0", "trunc')
    with pytest.raises(CheckpointError, match="its tokenizer does not load .*JSONDecodeError"):
        load_hf(folder)
    code, out, err = run_cli(["report", folder], capsys)
    assert code == 2 and "its tokenizer does not load" in err and "has none" not in err
