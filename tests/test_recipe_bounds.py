"""No recipe hangs or exhausts memory; hostile bytes give one escaped line and exit 2."""
from __future__ import annotations

import time

import numpy as np
import pytest

from cli_helpers import run_cli, write_checkpoint, write_recipe
from dpm_cli.errors import ConfigError
from dpm_cli.escaping import printable
from dpm_cli.limits import MAX_RECIPE_BYTES
from dpm_cli.pipeline.context import shape_mismatch
from dpm_cli.recipe import load_recipe, parse_recipe


def refused(text: str, *phrases: str, seconds: float = 3.0) -> str:
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        parse_recipe(text, "r.yaml")
    assert time.monotonic() - start < seconds, "refused fast"
    message = str(info.value)
    assert message.isprintable(), repr(message)
    for phrase in phrases:
        assert phrase in message, message
    return message


def alias_bomb(depth: int) -> str:
    """351 bytes at depth 7 took 60 s and 824 MB; depth 9 hung."""
    lines = ["version: 1", "model:", "  kwargs:", "    a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, depth + 1):
        lines.append(f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("depth", [7, 9, 20])
def test_alias_bomb_is_refused_at_once(depth):
    refused(alias_bomb(depth), "aliases", "100,000")


def test_a_few_aliases_are_still_fine():
    recipe = parse_recipe("version: 1\nmodel:\n  kwargs: {a: &w [1, 2], b: *w}\n", "r.yaml")
    assert recipe.model.kwargs == {"a": [1, 2], "b": [1, 2]}


def test_recursive_alias_is_refused():
    refused("version: 1\nmodel:\n  kwargs: {a: &a [*a]}\n", "cycle")


@pytest.mark.parametrize("depth", [100, 50_000])
def test_deep_nesting_is_refused_without_recursion_error(depth):
    """Finding: 50k-deep nesting raised RecursionError (exit 1)."""
    refused("version: 1\nmodel:\n  kwargs: {a: " + "[" * depth + "]" * depth + "}\n", "nests more than 64")


def test_nesting_through_aliases_is_bounded_too():
    text = "version: 1\nmodel:\n  kwargs:\n    a0: &a0 [1]\n" + "".join(
        f"    a{i}: &a{i} [[[[*a{i - 1}]]]]\n" for i in range(1, 20))
    refused(text, "levels deep")


def test_file_size_is_bounded(tmp_path):
    """Finding: a 50 MB recipe ran past 5 minutes."""
    path = tmp_path / "big.yaml"
    path.write_text("version: 1\n" + "# padding\n" * (MAX_RECIPE_BYTES // 10 + 10))
    start = time.monotonic()
    with pytest.raises(ConfigError, match="over 1 MiB"):
        load_recipe(path)
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("bad, shown", [("\x00", r"\x00"), ("\x1b", r"\x1b"), ("\x07", r"\x07")])
def test_control_characters_give_one_escaped_line_exit_2(tmp_path, capsys, bad, shown):
    """Finding: NUL bytes raised yaml.reader.ReaderError outside the try block: two lines, exit 1."""
    path = tmp_path / "r.yaml"
    path.write_text(f"version: 1\nmodel:\n  factory: a{bad}b\n")
    code, out, err = run_cli(["validate", path], capsys)
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1, err
    assert shown in lines[0] and ":3:" in lines[0] and "\x1b" not in err and "\x00" not in err


@pytest.mark.parametrize("override", ["pruning.budget.keep=\x1b[2J\x1b[31mred", "pruning.bud\nget.keep=0.5",
                                      "training.optimizer.name=\"a\\e[31mb\""])
def test_overrides_are_echoed_escaped(tmp_path, capsys, override):
    code, _, err = run_cli(["validate", write_recipe(tmp_path), override], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "\x1b" not in err


def test_keys_and_values_from_the_file_are_echoed_escaped(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text('version: 1\n"tra\\nining\\e[31m": 1\nmodel: {factory: "x\\ny\\e[0m"}\n')
    code, _, err = run_cli(["validate", path], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "\x1b" not in err, err
    assert r"tra\nining\x1b[31m" in err


def test_printable_escapes_and_cuts():
    assert printable("a\nb\x1b[31m\u202e") == r"a\nb\x1b[31m\u202e"
    assert printable("x" * 500, 20) == "x" * 17 + "..."
    assert printable("plain text, ü") == "plain text, ü"


@pytest.mark.parametrize("steps", ["1e18", "1000000000000000000"])
def test_absurd_step_count_is_refused_with_an_estimate(steps):
    message = refused(f"version: 1\ntraining: {{steps: {steps}}}\n", "training.steps", "years")
    assert "1e+18" in message


def test_integral_scientific_step_counts_are_accepted():
    assert parse_recipe("version: 1\ntraining: {steps: 1e3}\n", "r.yaml").training.steps == 1000


def test_absurd_input_shape_in_a_recipe_is_refused_with_the_size():
    refused("version: 1\nmodel: {input_shape: [1, 1, 100000, 100000]}\n", "37.3 GiB", "2 GiB")


@pytest.mark.parametrize("command", [["report"], ["check", "--max-params", "1G"]])
def test_absurd_input_shape_option_is_refused_before_allocating(tmp_path, capsys, command):
    ckpt = write_checkpoint(tmp_path)
    start = time.monotonic()
    code, _, err = run_cli([*command, ckpt, "--factory", "dpm_cli.models:mlp", "--input-shape", "1,1,100000,100000"],
                           capsys)
    assert code == 2 and "37.3 GiB" in err and len(err.splitlines()) == 1, err
    assert time.monotonic() - start < 30


def test_input_shape_without_batch_dimension_says_so():
    """Finding: 'model.input_shape [1, 28, 28] does not match the data's sample shape [1, 28, 28]'."""
    message = shape_mismatch([1, 28, 28], [1, 28, 28])
    assert "no batch dimension" in message and "[1, 1, 28, 28]" in message
    assert "dimension 2: 32 vs 28" in shape_mismatch([1, 1, 32, 28], [1, 28, 28])
    assert "2 dimension(s)" in shape_mismatch([1, 28, 28], [1, 28, 28, 1][:3] + [1])
    assert shape_mismatch([4, 1, 28, 28], [1, 28, 28]) is None


def test_input_shape_without_batch_dimension_through_the_cli(tmp_path, capsys):
    recipe, ckpt = write_recipe(tmp_path), write_checkpoint(tmp_path)
    code, _, err = run_cli(["prune", ckpt, "-r", recipe, "model.input_shape=[1, 8, 8]"], capsys)
    assert code == 2 and "no batch dimension" in err and "[1, 1, 8, 8]" in err, err


@pytest.mark.parametrize("inputs, labels, what", [
    (np.array([["a", "b"]] * 20), np.arange(20), "strings"),
    (np.random.rand(20, 1, 8, 8).astype("float32"), np.array(["x"] * 20), "strings"),
    (np.array([b"ab"] * 20), np.arange(20), "bytes"),
])
def test_npz_with_string_arrays_is_bad_input(tmp_path, capsys, inputs, labels, what):
    """Finding: a .npz with a string array ended in TypeError, exit 1."""
    recipe, ckpt = write_recipe(tmp_path), write_checkpoint(tmp_path)
    data = tmp_path / "d.npz"
    np.savez(data, inputs=inputs, labels=labels)
    code, _, err = run_cli(["prune", ckpt, "-r", recipe, "data.source=tensors", f"data.path={data}",
                            "data.num_samples=null"], capsys)
    assert code == 2 and what in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
