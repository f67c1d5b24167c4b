"""dpm check: every gate's exit code (0 pass, 1 fail, 2 bad input) through the CLI, JSON output, and
the pure gate evaluation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from cli_helpers import exit_code as run_cli
from dpm_cli.errors import ConfigError
from dpm_cli.report import Limits, check_model, count_model, evaluate_gates

SHAPE = ["--input-shape", "1,3,16,16"]




def tiny_cnn(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 10))


# MACs at 1x3x16x16: conv 16*16*27 per channel, plus the head
MACS = {8: 8 * 16 * 16 * 27 + 8 * 10, 4: 4 * 16 * 16 * 27 + 4 * 10}
PARAMS = {8: 8 * 27 + 8 + 8 * 10 + 10, 4: 4 * 27 + 4 + 4 * 10 + 10}


@pytest.fixture()
def ckpts(tmp_path: Path) -> dict[str, str]:
    paths = {}
    for name, width in (("orig", 8), ("compact", 4)):
        path = tmp_path / f"{name}.pt"
        torch.save(tiny_cnn(width), path)
        paths[name] = str(path)
    return paths


def check(ckpts: dict[str, str], *gates: str) -> int:
    return run_cli(["check", ckpts["compact"], "--trust-checkpoint", *SHAPE, *gates])


@pytest.mark.parametrize("gates, code", [
    (["--max-macs", str(MACS[4])], 0),  # equal to the limit passes
    (["--max-macs", str(MACS[4] - 1)], 1),
    (["--max-macs", "1M"], 0),
    (["--max-params", str(PARAMS[4])], 0),
    (["--max-params", "100"], 1),
    (["--max-latency-ms", "10000", "--repeats", "2", "--threads", "1"], 0),
    (["--max-latency-ms", "0.000001", "--repeats", "2", "--threads", "1"], 1),
    (["--max-macs", "1M", "--max-params", "100"], 1),  # one failing gate fails the check
])
def test_absolute_gates(ckpts, gates, code):
    assert check(ckpts, *gates) == code


@pytest.mark.parametrize("gates, code", [
    (["--min-macs-reduction", "2.0"], 0),  # 8 -> 4 channels: exactly 2x fewer MACs
    (["--min-macs-reduction", "2.01"], 1),
    (["--min-params-reduction", "1.5"], 0),
    (["--min-params-reduction", "3"], 1),
    (["--min-speedup", "0.01", "--repeats", "3", "--threads", "1"], 0),
    (["--min-speedup", "1000", "--repeats", "3", "--threads", "1"], 1),
])
def test_baseline_gates(ckpts, gates, code):
    assert check(ckpts, "--baseline", ckpts["orig"], *gates) == code


@pytest.mark.parametrize("args", [
    [],  # no gates
    ["--max-macs", "lots"],
    ["--max-macs", "-5"],
    ["--max-latency-ms", "0"],
    ["--min-speedup", "1.5"],  # needs --baseline
    ["--min-macs-reduction", "2", "--baseline", "/nonexistent/orig.pt"],
    ["--max-macs", "1M", "--batch-size", "0"],
    ["--max-macs", "1M", "--json", "--markdown"],
])
def test_bad_gates_exit_2(ckpts, args, capsys):
    assert check(ckpts, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


def test_bad_model_or_shape_exit_2(ckpts, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint")
    assert run_cli(["check", str(garbage), *SHAPE, "--max-macs", "1M"]) == 2
    assert run_cli(["check", ckpts["compact"], "--trust-checkpoint", "--input-shape", "1;3", "--max-macs", "1M"]) == 2
    assert run_cli(["check", ckpts["compact"], *SHAPE, "--max-macs", "1M"]) == 2  # pickle without trust
    assert run_cli(["check", ckpts["compact"], "--trust-checkpoint", "--max-macs", "1M"]) == 2  # no shape


def test_json_output(ckpts, capsys):
    code = check(ckpts, "--baseline", ckpts["orig"], "--min-macs-reduction", "2", "--max-params", "100", "--json")
    assert code == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1 and doc["kind"] == "dpm.check" and doc["passed"] is False
    assert set(doc) == {"schema_version", "kind", "passed", "units", "input_shape", "batch_size", "gates", "model",
                        "baseline", "latency", "evaluation", "provenance"}  # keys are only ever added
    assert doc["evaluation"] is None and doc["provenance"] is None  # no quality or provenance gate
    gates = {g["name"]: g for g in doc["gates"]}
    assert set(gates["max-params"]) == {"name", "limit", "measured", "unit", "passed", "detail"}
    assert gates["max-params"]["passed"] is False and gates["max-params"]["measured"] == PARAMS[4]
    assert gates["min-macs-reduction"]["passed"] is True
    assert gates["min-macs-reduction"]["measured"] == pytest.approx(MACS[8] / MACS[4])
    assert doc["model"]["macs"] == MACS[4] and doc["baseline"]["macs"] == MACS[8]
    assert doc["latency"] is None  # no latency gate: nothing timed


def test_table_shows_gate_limit_value_and_verdict(ckpts, capsys):
    assert check(ckpts, "--max-macs", "1M", "--max-params", "100") == 1
    captured = capsys.readouterr()
    assert "max-macs" in captured.out and "pass" in captured.out and "FAIL" in captured.out
    assert "1.00M" in captured.out  # the limit
    assert "check failed: 1 of 2 gates (max-params)" in captured.err


def test_evaluate_gates_is_pure_and_inclusive():
    x = torch.randn(1, 3, 16, 16)
    compact = count_model(tiny_cnn(4), x)
    orig = count_model(tiny_cnn(8), x)
    limits = Limits(max_macs=MACS[4], max_latency_ms=2.0, min_speedup=1.5, min_macs_reduction=2.0)
    results = {g.name: g for g in evaluate_gates(limits, compact, baseline=orig, latency_ms=2.0, speedup=1.4)}
    assert results["max-macs"].passed and results["max-latency-ms"].passed
    assert not results["min-speedup"].passed and results["min-macs-reduction"].passed
    assert set(results) == {"max-macs", "max-latency-ms", "min-speedup", "min-macs-reduction"}


def test_check_model_library_api():
    result = check_model(tiny_cnn(4), (1, 3, 16, 16), Limits(max_params=PARAMS[4]), baseline=None)
    assert result.passed and result.count.params == PARAMS[4]
    with pytest.raises(ConfigError):
        check_model(tiny_cnn(4), (1, 3, 16, 16), Limits())
