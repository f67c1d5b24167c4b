"""Provenance: dpm prune records what produced a model (content hashes, versions); dpm check
--built-from gates on it; dpm prune --reuse skips training only when everything matches."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from cli_helpers import run_cli
from dpm_cli import provenance
from dpm_cli.models import mlp
from dpm_cli.recipe import load_recipe

RECIPE = """\
version: 1
model:
  factory: dpm_cli.models:mlp
  kwargs: {in_features: 64, hidden: [32, 16], num_classes: 4}
  input_shape: [1, 1, 8, 8]
data:
  source: tensors
  path: data.pt
  batch_size: 32
pruning:
  budget: {kind: macs, keep: 0.5}
  decay_steps: 3
training:
  steps: 8
  log_every: 4
  optimizer: {name: sgd, lr: 0.05}
output:
  dir: run
"""


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """One pruned run (recipe, data, checkpoint, run dir with outputs) that tests copy and change."""
    root = tmp_path_factory.mktemp("prov")
    g = torch.Generator().manual_seed(0)
    torch.save({"inputs": torch.randn(120, 1, 8, 8, generator=g), "labels": torch.randint(0, 4, (120,), generator=g)},
               root / "data.pt")
    torch.manual_seed(0)
    torch.save(mlp(in_features=64, hidden=[32, 16], num_classes=4).state_dict(), root / "dense.pt")
    (root / "r.yaml").write_text(RECIPE)
    return root


@pytest.fixture()
def work(built, tmp_path, capsys) -> Path:
    shutil.copytree(built, tmp_path / "w")
    w = tmp_path / "w"
    if not (built / "run").exists():  # prune once per module; later tests copy the result
        code, _, err = run_cli(["prune", built / "dense.pt", "-r", built / "r.yaml", "--run-dir", built / "run",
                                "-q", "--json"], capsys)
        assert code == 0, err
        shutil.copytree(built / "run", w / "run")
    return w


def prune(w: Path, capsys, *extra) -> tuple[int, dict | None, str]:
    code, out, err = run_cli(["prune", w / "dense.pt", "-r", w / "r.yaml", "--run-dir", w / "run", "-q", "--json",
                              *extra], capsys)
    return code, (json.loads(out) if code == 0 else None), err


def test_prune_records_hashes_and_versions(work):
    summary = json.loads((work / "run" / "summary.json").read_text())
    rec = summary["provenance"]
    assert rec["checkpoint"] == {"file": "dense.pt", "sha256": sha(work / "dense.pt")}
    recipe = load_recipe(work / "r.yaml")
    assert rec["recipe"]["sha256"] == provenance.sha256_json(provenance.canonical_recipe(recipe))
    assert rec["data"]["description"] == {"source": "tensors", "files": {"data.pt": sha(work / "data.pt")}}
    assert rec["versions"]["torch"] == torch.__version__.split("+")[0] and rec["versions"]["dpm"]
    assert rec["versions"]["torch_pruning"]
    assert rec["key"] == provenance.input_key(rec)
    for fmt, path in summary["outputs"].items():  # every output's hash, to tell a stale file from its own
        assert summary["output_sha256"][fmt] == sha(work / "run" / Path(path).name)
    artifact = torch.load(work / "run" / "model.dpm.pt", weights_only=True)
    assert artifact["metadata"]["provenance"] == rec


def test_canonical_recipe_ignores_outputs_and_paths_but_not_settings(work):
    recipe = load_recipe(work / "r.yaml")
    same = load_recipe(work / "r.yaml", ["output.dir=elsewhere", "output.name=m"])
    other = load_recipe(work / "r.yaml", ["training.steps=9"])
    digest = lambda r: provenance.sha256_json(provenance.canonical_recipe(r))  # noqa: E731
    assert digest(recipe) == digest(same) != digest(other)


def test_reuse_returns_the_earlier_result_without_training(work, capsys):
    before = {p.name: sha(p) for p in (work / "run").iterdir() if p.is_file()}
    code, summary, _ = prune(work, capsys, "--reuse")
    assert code == 0 and summary["reused"] is True
    assert "reused the earlier result" in summary["notes"][-1]
    assert {p.name: sha(p) for p in (work / "run").iterdir() if p.is_file()} == before  # nothing written


@pytest.mark.parametrize("change, reason", [
    (lambda w: (w / "dense.pt").write_bytes((w / "dense.pt").read_bytes() + b"\0"), "checkpoint: sha256"),
    (lambda w: torch.save({"inputs": torch.randn(120, 1, 8, 8), "labels": torch.zeros(120, dtype=torch.long)},
                          w / "data.pt"), "data: tensors (data.pt"),
    (lambda w: (w / "r.yaml").write_text(RECIPE.replace("steps: 8", "steps: 9")), "recipe: training.steps 8 -> 9"),
    (lambda w: (w / "run" / "model.pt").write_bytes(b"stale"), "model.pt changed since it was written"),
    (lambda w: (w / "run" / "model.pt2").unlink(), "model.pt2 is missing"),
    (lambda w: (w / "run" / "summary.json").write_text("{}"), "no provenance recorded"),
])
def test_reuse_refuses_any_mismatch_and_touches_nothing(work, capsys, change, reason):
    change(work)
    before = {p.name: sha(p) for p in (work / "run").iterdir() if p.is_file()}
    code, _, err = prune(work, capsys, "--reuse")
    assert code == 2 and reason in err and "pass --force with --reuse to rebuild" in err
    assert len(err.strip().splitlines()) == 1
    assert {p.name: sha(p) for p in (work / "run").iterdir() if p.is_file()} == before


def test_reuse_with_force_rebuilds_a_mismatch(work, capsys):
    (work / "r.yaml").write_text(RECIPE.replace("steps: 8", "steps: 9"))
    code, summary, err = prune(work, capsys, "--reuse", "--force")
    assert code == 0, err
    assert summary["reused"] is False and summary["steps"] == 9
    assert summary["provenance"]["recipe"]["canonical"]["training"]["steps"] == 9
    code, again, _ = prune(work, capsys, "--reuse")  # and the rebuilt result is reused next time
    assert code == 0 and again["reused"] is True


def test_reuse_on_a_fresh_run_dir_trains(work, capsys):
    shutil.rmtree(work / "run")
    code, summary, err = prune(work, capsys, "--reuse")
    assert code == 0 and summary["reused"] is False, err


def built_from(w: Path, capsys, *extra, model: str = "model.dpm.pt") -> tuple[int, dict | None, str]:
    code, out, err = run_cli(["check", w / "run" / model, "-r", w / "r.yaml", "--built-from", w / "dense.pt",
                              "--json", *extra], capsys)
    return code, (json.loads(out) if out.strip() else None), err


def test_built_from_passes_on_the_exact_inputs(work, capsys):
    code, doc, err = built_from(work, capsys)
    assert code == 0, err
    gate = doc["gates"][0]
    assert gate["name"] == "built-from" and gate["passed"] and gate["limit"] is None
    assert gate["detail"] == "same checkpoint, recipe and data as recorded"
    assert doc["provenance"]["passed"] and doc["provenance"]["recorded"]["key"] == doc["provenance"]["given"]["key"]
    assert "canonical" not in doc["provenance"]["recorded"]["recipe"]  # hashes, not the whole recipe


@pytest.mark.parametrize("change, extra, reason", [
    (lambda w: (w / "dense.pt").write_bytes((w / "dense.pt").read_bytes() + b"\0"), [], "checkpoint: sha256"),
    (lambda w: None, ["training.steps=9"], "recipe: training.steps 8 -> 9"),
    (lambda w: torch.save({"inputs": torch.randn(120, 1, 8, 8)}, w / "data.pt"), [], "data: tensors (data.pt"),
])
def test_built_from_fails_on_other_inputs(work, capsys, change, extra, reason):
    change(work)
    code, doc, err = built_from(work, capsys, *extra)
    assert code == 1 and not doc["passed"]
    assert reason in doc["gates"][0]["detail"] and doc["provenance"]["differences"]
    assert "check failed: 1 of 1 gates (built-from)" in err


def test_built_from_needs_the_artifact_and_the_recipe(work, capsys):
    code, _, err = built_from(work, capsys, "--trust-checkpoint", model="model.pt")
    assert code == 2 and "dpm artifact" in err
    code, _, err = run_cli(["check", work / "run" / "model.dpm.pt", "--built-from", work / "dense.pt"], capsys)
    assert code == 2 and "pass --recipe" in err


def test_a_hugging_face_folder_is_hashed_by_its_files_not_its_path(tmp_path):
    """A recipe naming a folder recorded only its path: a weight changed in place kept the same key, so
    `--reuse` reused a stale result; and `dpm prune FOLDER` stopped ("no such checkpoint file")."""
    pytest.importorskip("transformers")
    from hf_helpers import bert_folder, text_file, write_recipe

    folder = bert_folder(tmp_path / "bert")
    data = text_file(tmp_path / "t.txt", 8)
    recipe = load_recipe(write_recipe(tmp_path, folder, data))
    first = provenance.record(recipe, None)
    assert first["checkpoint"] == {"file": "bert", "sha256": provenance.sha256_path(folder)}
    assert first["recipe"]["canonical"]["model"]["hf"]["path"] is None
    assert provenance.record(recipe, folder)["key"] == first["key"]  # MODEL given: the same folder
    moved = tmp_path / "elsewhere" / "bert"
    shutil.copytree(folder, moved)
    assert provenance.record(load_recipe(write_recipe(tmp_path, moved, data)), None)["key"] == first["key"]
    weights = moved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")  # a weight changes in place
    assert provenance.record(load_recipe(write_recipe(tmp_path, moved, data)), None)["key"] != first["key"]
    data.write_text(data.read_text() + "one more line of text\n")  # and the text data is hashed too
    assert provenance.record(recipe, None)["data"]["sha256"] != first["data"]["sha256"]


def test_a_folders_hash_leaves_out_git_and_download_caches(tmp_path):
    """A folder cloned from the Hub holds `.git` (every weight again, and files a fetch rewrites), and
    `hf download --local-dir` stamps `.cache/huggingface` on every download: both changed the hash of an
    unchanged model, so --reuse trained again and --built-from failed. Any file of the model still counts."""
    folder = tmp_path / "m"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "model.safetensors").write_bytes(b"weights")
    plain = provenance.sha256_path(folder)
    (folder / ".git" / "lfs").mkdir(parents=True)
    (folder / ".git" / "FETCH_HEAD").write_text("abc\n")
    (folder / ".git" / "lfs" / "object").write_bytes(b"weights")
    (folder / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "download" / "config.json.metadata").write_text("etag\n1765000000.1\n")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    assert provenance.sha256_path(folder) == plain
    (folder / ".git" / "FETCH_HEAD").write_text("def\n")
    assert provenance.sha256_path(folder) == plain
    (folder / "sub" / "model.safetensors").write_bytes(b"weightz")
    assert provenance.sha256_path(folder) != plain


def test_a_record_from_before_a_recipe_key_was_added_still_matches_at_its_default(work):
    """A folder built by an earlier dpm, whose recipe schema lacked `data.val_samples`, failed
    `--built-from` with "recipe: differs" under this one: the key, null by default, changed the hash."""
    recipe = load_recipe(work / "r.yaml")
    expected = provenance.record(recipe, work / "dense.pt")
    older = json.loads(json.dumps(expected))
    del older["recipe"]["canonical"]["data"]["val_samples"]
    older["recipe"]["sha256"] = provenance.sha256_json(older["recipe"]["canonical"])
    assert older["recipe"]["sha256"] != expected["recipe"]["sha256"]
    assert provenance.differences(older, expected, versions=False) == []
    capped = provenance.record(load_recipe(work / "r.yaml", ["data.val_samples=10"]), work / "dense.pt")
    assert provenance.differences(older, capped, versions=False) == ["recipe: data.val_samples None -> 10"]
    changed = provenance.record(load_recipe(work / "r.yaml", ["training.steps=9"]), work / "dense.pt")
    assert provenance.differences(older, changed, versions=False) == ["recipe: training.steps 8 -> 9"]
