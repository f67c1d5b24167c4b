"""`dpm prune`, `dpm plan`, `dpm validate` end to end on the built-in digits data."""
from __future__ import annotations

import json

import torch

import dpm_cli
from cli_helpers import run_cli, setup  # noqa: F401  (fixture)


def test_prune_writes_compact_outputs_and_json(setup, tmp_path, capsys):
    recipe, ckpt = setup
    code, out, err = run_cli(["prune", ckpt, "--recipe", recipe, "--json", "--quiet"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["macs_after"] / summary["macs_before"] <= 0.5
    assert summary["equivalence_error"] <= 1e-4
    assert set(summary["outputs"]) == {"module", "artifact", "export"}
    assert summary["ce_before"] > 0 and summary["ce_after"] > 0  # held-out cross-entropy, labelled data
    assert summary["min_decay_top1"] is not None
    run = tmp_path / "run"
    for name in ("recipe.yaml", "metrics.jsonl", "events.jsonl", "state.pt", "summary.json"):
        assert (run / name).is_file(), name
    compact = torch.load(summary["outputs"]["module"], weights_only=False)
    rebuilt = dpm_cli.load(summary["outputs"]["artifact"])  # no unpickling of code
    x = torch.randn(5, 1, 8, 8)
    compact.eval(), rebuilt.eval()
    assert torch.allclose(compact(x), rebuilt(x))
    program = torch.export.load(summary["outputs"]["export"])
    assert torch.allclose(program.module()(x), compact(x), atol=1e-6)
    assert not list(run.glob(".*tmp*")), "no temporary files left behind"


def test_pruned_artifact_can_be_pruned_again(setup, tmp_path, capsys):
    recipe, ckpt = setup
    code, out, _ = run_cli(["prune", ckpt, "-r", recipe, "--json", "--quiet"], capsys)
    first = json.loads(out)
    second_run = tmp_path / "again"
    code, out, err = run_cli(["prune", first["outputs"]["artifact"], "-r", recipe, "--run-dir", second_run,
                              "--output", second_run / "m", "--json", "--quiet", "pruning.budget.keep=0.5"], capsys)
    assert code == 0, err
    second = json.loads(out)
    assert abs(second["macs_before"] - first["macs_after"]) < 1
    assert second["macs_after"] <= 0.5 * second["macs_before"]
    again = dpm_cli.load(second["outputs"]["artifact"])
    assert sum(p.numel() for p in again.parameters()) == second["params_after"]


def test_human_output_has_before_after_table(setup, capsys):
    recipe, ckpt = setup
    code, out, err = run_cli(["prune", ckpt, "-r", recipe], capsys)
    assert code == 0, err
    assert "before / after" in out and "MACs" in out and "equivalence error" in out
    assert "step" in err  # progress lines (plain, since stderr is not a terminal)


def test_plan_is_a_dry_run(setup, tmp_path, capsys):
    recipe, ckpt = setup
    code, out, err = run_cli(["plan", ckpt, "-r", recipe, "--json"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["macs_after"] / plan["macs_before"] <= 0.5
    assert plan["structures"] > 0
    assert not (tmp_path / "run").exists(), "plan trains nothing and writes nothing"


def test_validate(setup, capsys):
    recipe, _ = setup
    assert run_cli(["validate", recipe], capsys)[0] == 0
    code, out, _ = run_cli(["validate", recipe, "--show", "training.seed=3"], capsys)
    assert code == 0 and "seed: 3" in out
    code, out, _ = run_cli(["validate", recipe, "--json", "training.seed=3"], capsys)  # --json, as the other commands
    result = json.loads(out)
    assert code == 0 and result["valid"] is True and result["recipe"] == str(recipe) and result["model"] is None
    assert result["resolved"]["training"]["seed"] == 3 and result["resolved"]["pruning"]["criterion"] == "magnitude"
    assert result["decay"].startswith("N = ")
    code, out, err = run_cli(["validate", recipe, "--json", "training.steps=-3"], capsys)
    assert code == 2 and out == "" and err.startswith("error: ")  # bad input: one line on stderr, nothing on stdout


def test_validate_and_plan_show_the_resolved_decay(setup, capsys):
    recipe, ckpt = setup  # training.steps: 14
    fraction = ["pruning.decay_steps=null", "pruning.decay_fraction=0.5"]
    code, out, _ = run_cli(["validate", recipe, *fraction, "pruning.rectify.enabled=false"], capsys)
    assert code == 0 and "N = 7 steps (decay_fraction 0.5, of 14 fine-tuning steps)" in out
    code, out, err = run_cli(["validate", recipe, *fraction], capsys)  # SR doubles the phase: what prune refuses
    assert code == 2 and "the decay phase ends at step 15 but training has only 14 steps" in err
    code, out, _ = run_cli(["validate", recipe, "--show", *fraction, "training.steps=null", "training.epochs=2"], capsys)
    assert code == 0 and "# decay: N = 0.5 x the fine-tuning steps" in out  # epochs: the steps depend on the data
    code, out, err = run_cli(["plan", ckpt, "-r", recipe, "--json", *fraction], capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["decay_steps"] == 7 and plan["decay_phase_end"] == 15  # selected at 1, SR doubles the phase
    assert any("dpm prune will refuse" in note for note in plan["notes"])
    code, out, err = run_cli(["plan", ckpt, "-r", recipe, "pruning.decay_steps=null"], capsys)
    assert code == 0, err
    assert "N = 4 steps (decay_fraction 0.25, the default, of 14 fine-tuning steps)" in " ".join(out.split())


def test_single_step_pruning_reports_its_anytime_accuracy(setup, capsys):
    recipe, ckpt = setup  # evals at steps 10 and 14 (epoch ends); the cut is zero after step 2
    code, out, err = run_cli(["prune", ckpt, "-r", recipe, "--json", "-q", "pruning.decay_steps=1",
                              "pruning.rectify.enabled=false"], capsys)
    assert code == 0, err
    assert json.loads(out)["min_decay_top1"] is not None


def test_a_large_model_is_announced_before_it_is_hashed_and_loaded(setup, capsys, monkeypatch):
    """Nothing was printed while dpm hashed a model for the provenance record and loaded it: for a
    folder of several GB that is minutes of silence. A model past LARGE_INPUT gets one line first."""
    import importlib

    pipeline = importlib.import_module("dpm_cli.pipeline.prune")  # the module: the package exports prune()
    recipe, ckpt = setup
    monkeypatch.setattr(pipeline, "LARGE_INPUT", 1)  # the test's checkpoint counts as large
    code, _, err = run_cli(["prune", ckpt, "-r", recipe], capsys)
    assert code == 0, err
    assert err.index(f"reading {ckpt} (0.0 GiB): its hash for the provenance record, then the model") < err.index("decay:")
    monkeypatch.setattr(pipeline, "LARGE_INPUT", 2**40)
    code, _, err = run_cli(["prune", ckpt, "-r", recipe, "--force"], capsys)
    assert code == 0, err
    assert "its hash for the provenance record" not in err
