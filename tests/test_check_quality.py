"""dpm check's quality gates: accuracy drop, accuracy, loss increase and cosine against the baseline,
measured exactly (values recomputed here), with their exit codes, JSON and Markdown, data sources and
the exit-2 cases (no data, no labels, bad limits)."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cli_helpers import run_cli
from dpm_cli.report.evaldata import resolve_eval_data
from dpm_cli.report.progress import sample_progress
from dpm_cli.report.quality import measure_quality

SHAPE = ["--input-shape", "1,3,16,16", "--trust-checkpoint"]
N = 40


def tiny_cnn(width: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(width * 4, 10)).eval()


@pytest.fixture()
def world(tmp_path: Path) -> dict:
    """A baseline, a smaller model, and data labelled with the baseline's own predictions (so the
    baseline scores exactly 100%), plus the numbers the gates must report, computed here."""
    base, small = tiny_cnn(8, 0), tiny_cnn(4, 1)
    with torch.no_grad():  # the small model is the baseline with half its channels cut: related, not equal
        small[0].weight.copy_(base[0].weight[:4]); small[0].bias.copy_(base[0].bias[:4])
        small[4].weight.copy_(base[4].weight[:, :16]); small[4].bias.copy_(base[4].bias)
    x = torch.randn(N, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        yb, ys = base(x), small(x)
    y = yb.argmax(1)
    paths = {"base": tmp_path / "base.pt", "small": tmp_path / "small.pt", "data": tmp_path / "eval.pt",
             "unlabeled": tmp_path / "calib.pt"}
    torch.save(base, paths["base"])
    torch.save(small, paths["small"])
    torch.save({"inputs": x, "labels": y}, paths["data"])
    torch.save({"inputs": x}, paths["unlabeled"])
    top1 = 100.0 * int((ys.argmax(1) == y).sum()) / N
    expect = {"top1": top1, "drop": 100.0 - top1,
              "loss_increase": float(F.cross_entropy(ys, y) - F.cross_entropy(yb, y)),
              "cosine": float(F.cosine_similarity(ys, yb, dim=1).mean())}
    assert 0 < top1 < 100  # the gates below test both sides of real values
    return {**{k: str(v) for k, v in paths.items()}, "expect": expect, "tmp": tmp_path}


def check(w: dict, capsys, *gates: str, data: str | None = "data", baseline: bool = True, fmt: str = "--json"):
    args = ["check", w["small"], *SHAPE, *gates, *([fmt] if fmt else [])]
    args += ["--baseline", w["base"]] if baseline else []
    args += ["--data", w[data]] if data else []
    code, out, err = run_cli(args, capsys)
    return code, (json.loads(out) if fmt == "--json" and out.strip() else out), err


def gate(doc: dict, name: str) -> dict:
    return next(g for g in doc["gates"] if g["name"] == name)


@pytest.mark.parametrize("name, key, nudge", [
    ("max-accuracy-drop", "drop", -0.01),      # an upper limit: a hair below the measured value fails
    ("max-loss-increase", "loss_increase", -1e-4),
    ("min-accuracy", "top1", 0.01),            # a lower limit: a hair above fails
    ("min-cosine", "cosine", 1e-4),
])
def test_quality_gate_passes_at_its_value_and_fails_past_it(world, capsys, name, key, nudge):
    value = world["expect"][key]
    code, doc, _ = check(world, capsys, f"--{name}", f"{value - nudge:.6f}")
    assert code == 0 and doc["passed"] and gate(doc, name)["passed"]
    assert gate(doc, name)["measured"] == pytest.approx(value, abs=1e-4)
    code, doc, err = check(world, capsys, f"--{name}", f"{value + nudge:.6f}")
    assert code == 1 and not doc["passed"] and not gate(doc, name)["passed"]
    assert f"check failed: 1 of 1 gates ({name})" in err


def test_json_carries_the_measured_values_the_data_and_the_sample_count(world, capsys):
    e = world["expect"]
    code, doc, _ = check(world, capsys, "--max-accuracy-drop", "100", "--min-cosine", "-1", "--max-loss-increase", "9")
    assert code == 0
    ev = doc["evaluation"]
    assert ev["samples"] == N and ev["labeled"] is True
    assert ev["data"].startswith("tensors eval.pt (all samples)")
    assert ev["baseline"]["top1"] == 100.0 and ev["model"]["top1"] == pytest.approx(e["top1"])
    assert ev["accuracy_drop"] == pytest.approx(e["drop"]) and ev["cosine"] == pytest.approx(e["cosine"], abs=1e-6)
    assert ev["loss_increase"] == pytest.approx(e["loss_increase"], abs=1e-5)
    assert {g["unit"] for g in doc["gates"]} == {"points", "cosine", "loss"}
    assert all(set(g) == {"name", "limit", "measured", "unit", "passed", "detail"} for g in doc["gates"])


def test_markdown_and_table_say_what_was_evaluated(world, capsys):
    e = world["expect"]
    code, out, _ = check(world, capsys, "--min-accuracy", "99", fmt="--markdown")
    assert code == 1
    assert "| min-accuracy | 99.00% | " + f"{e['top1']:.2f}% | **FAIL** |" in out
    assert "Evaluated on tensors eval.pt (all samples), 3x16x16, " in out and f" classes: {N} samples;" in out
    assert "baseline top-1 100.00%" in out
    code, out, _ = check(world, capsys, "--min-accuracy", "1", fmt=None)
    assert code == 0 and f"{N} samples" in out and "min-accuracy" in out


def test_min_accuracy_needs_no_baseline(world, capsys):
    code, doc, _ = check(world, capsys, "--min-accuracy", "1", baseline=False)
    assert code == 0 and doc["evaluation"]["baseline"] is None and doc["evaluation"]["cosine"] is None


def test_cosine_gate_on_unlabeled_data(world, capsys):
    code, doc, _ = check(world, capsys, "--min-cosine", "-1", data="unlabeled")
    assert code == 0 and doc["evaluation"]["labeled"] is False
    assert doc["evaluation"]["cosine"] == pytest.approx(world["expect"]["cosine"], abs=1e-6)
    assert doc["evaluation"]["model"]["top1"] is None


@pytest.mark.parametrize("gates, data, message", [
    (["--max-accuracy-drop", "1"], None, "evaluate on data: pass --recipe"),            # no data at all
    (["--max-accuracy-drop", "1"], "unlabeled", "need labels, but tensors calib.pt"),   # data without labels
    (["--max-loss-increase", "1"], "unlabeled", "need labels"),
    (["--min-accuracy", "1"], "unlabeled", "need labels"),
    (["--min-cosine", "1.5"], "data", "--min-cosine 1.5 is out of range"),
    (["--max-accuracy-drop", "-1"], "data", "--max-accuracy-drop -1.0 is out of range"),
    (["--min-accuracy", "101"], "data", "out of range"),
    (["--min-macs-reduction", "1"], "data", "--data given but no gate evaluates on it"),
])
def test_gates_without_what_they_need_exit_2_in_one_line(world, capsys, gates, data, message):
    code, out, err = check(world, capsys, *gates, data=data)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == ""


def test_accuracy_gate_without_baseline_for_drop_exits_2(world, capsys):
    code, _, err = check(world, capsys, "--max-accuracy-drop", "1", baseline=False)
    assert code == 2 and "--baseline" in err


def test_model_that_does_not_fit_the_data_exits_2(world, capsys, tmp_path):
    torch.save({"inputs": torch.randn(4, 1, 8, 8), "labels": torch.zeros(4, dtype=torch.long)}, tmp_path / "w.pt")
    code, _, err = run_cli(["check", world["small"], *SHAPE, "--min-accuracy", "1", "--data", tmp_path / "w.pt"],
                           capsys)
    assert code == 2 and "does not run on the evaluation data" in err


def test_recipe_validation_data_is_the_split_prune_uses(world, capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"version: 1\ndata:\n  source: tensors\n  path: {world['data']}\n  val_fraction: 0.25\n")
    code, out, err = run_cli(["check", world["small"], *SHAPE, "-r", recipe, "--baseline", world["base"],
                              "--max-accuracy-drop", "100", "--json"], capsys)
    assert code == 0, err
    ev = json.loads(out)["evaluation"]
    assert ev["samples"] == N // 4 and ev["data"].startswith("validation part of tensors eval.pt")
    # overrides change the recipe as in dpm prune
    code, out, err = run_cli(["check", world["small"], "data.val_fraction=0.5", *SHAPE, "-r", recipe,
                              "--min-accuracy", "1", "--json"], capsys)
    assert code == 0, err and json.loads(out)["evaluation"]["samples"] == N // 2


def test_file_with_validation_arrays_evaluates_those(tmp_path):
    x = torch.randn(10, 2)
    torch.save({"inputs": x, "labels": torch.zeros(10, dtype=torch.long), "val_inputs": x[:3],
                "val_labels": torch.ones(3, dtype=torch.long)}, tmp_path / "d.pt")
    data = resolve_eval_data(str(tmp_path / "d.pt"), None)
    assert data.samples == 3 and data.labeled and "val_inputs" in data.description


DATA_FACTORY = """
import torch
from torch.utils.data import TensorDataset

def datasets(n=12):
    x = torch.randn(n, 2)
    return TensorDataset(x, torch.zeros(n, dtype=torch.long)), TensorDataset(x[:5], torch.ones(5, dtype=torch.long))
"""


def test_every_source_prune_accepts(tmp_path, monkeypatch):
    (tmp_path / "dpm_test_evalfactory.py").write_text(textwrap.dedent(DATA_FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "dpm_test_evalfactory", raising=False)
    factory = resolve_eval_data("dpm_test_evalfactory:datasets", None)
    assert factory.samples == 5 and factory.labeled
    digits = resolve_eval_data("digits", None)
    from dpm_cli.data import load_data

    assert digits.samples == len(load_data("digits").val) == 359  # prune's held-out 20% of 1797
    assert digits.labeled and "digits" in digits.description
    rand = resolve_eval_data("random", None)
    assert rand.samples > 0 and "RANDOM" in rand.description
    with pytest.raises(Exception, match="no such file"):
        resolve_eval_data("nothing-here", None)
    assert resolve_eval_data(None, None) is None


def test_identical_models_measure_exactly_no_change():
    model = tiny_cnn(4, 3)
    x = torch.randn(20, 3, 16, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
    seen = []
    q = measure_quality(model, [(x[:12], y[:12]), (x[12:], y[12:])], baseline=model, progress=seen.append)
    assert q.accuracy_drop == 0.0 and q.loss_increase == 0.0 and q.model.top1 == 100.0
    assert q.cosine == pytest.approx(1.0, abs=1e-6) and q.samples == 20 and seen == [12, 20]
    assert model.training is False  # left as it was


def test_progress_bar_only_when_asked(capsys):
    with sample_progress(10, "evaluating model", enabled=False) as advance:
        advance(10)
    assert capsys.readouterr().err == ""
    with sample_progress(10, "evaluating model", enabled=True) as advance:
        advance(10)
    captured = capsys.readouterr()
    assert captured.out == ""  # stderr only: --json and --markdown on stdout stay clean


@pytest.mark.parametrize("extra, message", [
    (["second.pt"], "unexpected argument 'second.pt'"),           # a stray path is not an override
    (["training.steps=3"], "overrides change a recipe; pass --recipe"),
    (["--device", "tpu"], "--device 'tpu': choose cpu, cuda or auto"),
])
def test_bad_arguments_exit_2(world, capsys, extra, message):
    code, _, err = run_cli(["check", world["small"], *extra, *SHAPE, "--min-accuracy", "1", "--data", world["data"]],
                           capsys)
    assert code == 2 and message in err


def test_padded_positions_of_per_token_outputs_do_not_count_in_the_cosine():
    """A decoder's logits at its padding are computed but mean nothing; they entered the flattened
    cosine of --min-cosine. Two models that agree on every real token now measure 1.0."""

    class PerToken(torch.nn.Module):
        def __init__(self, garbage: float):
            super().__init__()
            self.embed, self.garbage = torch.nn.Embedding(10, 4), garbage

        def forward(self, input_ids, attention_mask):
            out = self.embed(input_ids)  # (batch, tokens, 4)
            return out + self.garbage * (1 - attention_mask)[..., None]  # differs only where padded

    torch.manual_seed(0)
    a, b = PerToken(0.0), PerToken(5.0)
    b.embed.load_state_dict(a.embed.state_dict())
    x = {"input_ids": torch.randint(0, 10, (3, 6)), "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])}
    q = measure_quality(a, [x], baseline=b)
    assert q.cosine == pytest.approx(1.0, abs=1e-6)
