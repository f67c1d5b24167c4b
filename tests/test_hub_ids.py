"""A Hugging Face Hub id where dpm takes a path: `dpm prune BAAI/bge-small-en-v1.5 -r r.yaml`, or
`model.hf.path: BAAI/bge-small-en-v1.5` in a recipe, as transformers users write it. dpm downloads
nothing; the message was "no such checkpoint file", which does not say what to do."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import run_cli  # noqa: E402

from dpm_cli.hub_ids import hub_id_hint  # noqa: E402

RECIPE = """\
version: 1
model:
  hf: {path: BAAI/bge-small-en-v1.5}
data: {source: pydoc}
pruning: {budget: {kind: macs, keep: 0.5}}
training: {steps: 2}
"""


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of our own; `cache(id)` puts a snapshot of `id` in it."""
    import huggingface_hub.constants

    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))

    def cache(repo_id: str) -> Path:
        repo = root / f"models--{repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / ("a" * 40)
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text("{}")
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("a" * 40)
        return snapshot

    return cache


@pytest.mark.parametrize("command", [["prune", "BAAI/bge-small-en-v1.5", "-r", "r.yaml"],
                                     ["report", "BAAI/bge-small-en-v1.5"],
                                     ["check", "BAAI/bge-small-en-v1.5", "--max-params", "10M"],
                                     ["validate", "r.yaml"]])
def test_an_id_that_is_no_path_here_says_how_to_get_its_folder(command, tmp_path, monkeypatch, capsys, hub_cache):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(RECIPE)
    code, _, err = run_cli(command, capsys)
    assert code == 2 and "Traceback" not in err, err
    assert ("BAAI/bge-small-en-v1.5 reads as a Hugging Face Hub id, and dpm downloads nothing: download it first "
            "(hf download BAAI/bge-small-en-v1.5 --local-dir bge-small-en-v1.5) and give that folder") in err


def test_an_id_in_the_local_cache_is_answered_with_its_snapshot_folder(tmp_path, monkeypatch, hub_cache):
    monkeypatch.chdir(tmp_path)
    snapshot = hub_cache("BAAI/bge-small-en-v1.5")
    hint = hub_id_hint("BAAI/bge-small-en-v1.5")
    assert hint.endswith(f"the local Hugging Face cache has it: give its folder, {snapshot}")
    assert hub_id_hint("BAAI/other-model").startswith("; BAAI/other-model reads as a Hugging Face Hub id, and dpm "
                                                     "downloads nothing")


def test_paths_are_not_taken_for_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for path in ("runs/model", "org/model.pt", "org/model.dpm.pt", "models/m.safetensors", "./org/model",
                 "/abs/model", "org/name/extra", "model.pt"):
        assert hub_id_hint(path) == "", path
    assert hub_id_hint("Qwen/Qwen2.5-0.5B") != ""  # a dot in the name: still an id
