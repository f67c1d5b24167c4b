"""Recipe layer: defaults, validation messages (file, line, key path), overrides, round trip."""
from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import pytest
import yaml

from dpm_cli.errors import ConfigError
from dpm_cli.recipe import (
    Recipe,
    default_recipe,
    describe_schema,
    dump_recipe,
    load_recipe,
    parse_override,
    parse_recipe,
)


def _parse(text: str, overrides: tuple[str, ...] = (), **kwargs) -> Recipe:
    return parse_recipe(textwrap.dedent(text), "r.yaml", overrides, **kwargs)


def _error(text: str, overrides: tuple[str, ...] = (), **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        _parse(text, overrides, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults and the schema description -------------------------------------------------------


def test_version_alone_gives_the_documented_defaults():
    recipe = _parse("version: 1\n")
    assert recipe == default_recipe()
    assert recipe.data.source == "mnist" and recipe.data.val_fraction == 0.2
    assert recipe.pruning.budget.kind == "macs" and recipe.pruning.budget.keep == 0.5
    assert recipe.pruning.rectify.rate_quantile == 0.99 and recipe.pruning.rectify.patience == 3
    assert recipe.pruning.decay_steps is None and recipe.pruning.decay_fraction is None  # N = 25% of the run
    assert recipe.training.optimizer.lr == 0.05
    assert recipe.pruning.max_equivalence_error == 1e-4
    assert recipe.training.epochs == 3 and recipe.training.steps is None
    assert recipe.training.optimizer.betas == (0.9, 0.999)
    assert recipe.training.optimizer.weight_decay == 5e-4
    assert recipe.output.formats == ("module", "artifact", "export")
    assert recipe.model.kwargs == {} and recipe.pruning.ignore == ()


def test_recipes_are_frozen_and_do_not_share_mutable_defaults():
    recipe = default_recipe()
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.pruning.rounds = 2  # type: ignore[misc]
    recipe.model.kwargs["x"] = 1
    assert default_recipe().model.kwargs == {}


def test_empty_sections_mean_defaults_and_values_are_read():
    recipe = _parse("""\
        version: 1
        notes: a quick run
        model:
        pruning:
          budget: {kind: params, keep: 0.3}
          ignore: [fc, "layer1.*"]
        training:
          optimizer: {name: adamw, lr: 1, betas: [0.8, 0.99]}
    """)
    assert recipe.model == default_recipe().model
    assert recipe.pruning.budget.kind == "params" and recipe.pruning.budget.keep == 0.3
    assert recipe.pruning.ignore == ("fc", "layer1.*")
    assert recipe.training.optimizer.lr == 1.0 and isinstance(recipe.training.optimizer.lr, float)
    assert recipe.notes == "a quick run"


def test_scientific_notation_without_a_dot_is_a_number():
    # PyYAML reads `1e-3` as a string (YAML 1.1); number fields accept it anyway.
    assert _parse("version: 1\ntraining:\n  optimizer:\n    lr: 1e-3\n").training.optimizer.lr == 0.001


def test_describe_schema_lists_every_leaf_key_with_default_and_help():
    rows = {path: (default, help) for path, default, help in describe_schema()}
    assert rows["pruning.budget.keep"][0] == "0.5"
    assert "(0, 1]" in rows["pruning.budget.keep"][1]
    assert rows["output.formats"][0] == "[module, artifact, export]"
    assert rows["data.path"][0] == "null"
    assert "mnist | digits" in rows["data.source"][1]
    assert list(rows) == list(_flatten(default_recipe().to_dict()))  # every leaf, schema order


def _flatten(data: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in data.items():
        if isinstance(value, dict) and not key.endswith("kwargs"):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --- round trip --------------------------------------------------------------------------------


def test_dump_parses_back_to_an_equal_recipe(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(textwrap.dedent("""\
        version: 1
        model:
          factory: dpm_cli.models:resnet56
          kwargs: {num_classes: 10, widths: [16, 32]}
          checkpoint: w.pt
          input_shape: [1, 3, 32, 32]
        pruning:
          ignore: [fc]
          rectify: {rate_quantile: null}
        training: {steps: 500, grad_clip: 5}
    """))
    recipe = load_recipe(recipe_file)
    text = dump_recipe(recipe)
    assert parse_recipe(text) == recipe
    assert yaml.safe_load(text)["training"]["optimizer"]["lr"] == 0.05  # defaults written out
    assert parse_recipe(dump_recipe(default_recipe())) == default_recipe()


def test_to_dict_is_plain_yaml_data():
    data = _parse("version: 1\nmodel:\n  input_shape: [1, 8]\n").to_dict()
    assert data["model"]["input_shape"] == [1, 8]
    assert data["pruning"]["budget"] == {"kind": "macs", "keep": 0.5}
    yaml.safe_dump(data)  # raises on tuples or other Python objects


# --- value errors: line and key path -----------------------------------------------------------


def test_out_of_range_names_line_key_range_and_fix():
    message = _error("""\
        version: 1
        pruning:
          budget:
            keep: 1.5
    """)
    assert message == (
        "r.yaml:4: pruning.budget.keep: 1.5 is out of range (0, 1]; "
        "give the fraction of the original model to keep, e.g. 0.5"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("training:\n  optimizer:\n    lr: fast\n", "r.yaml:4: training.optimizer.lr: expected a number, got 'fast'"),
        ("training:\n  optimizer:\n    lr: yes\n", "r.yaml:4: training.optimizer.lr: expected a number, got true"),
        ("training:\n  bf16: 1\n", "r.yaml:3: training.bf16: expected true or false, got 1"),
        ("data:\n  batch_size: 2.5\n", "r.yaml:3: data.batch_size: expected an integer, got 2.5"),
        ("data:\n  batch_size: true\n", "r.yaml:3: data.batch_size: expected an integer, got true"),
        ("data:\n  batch_size: 0\n", "r.yaml:3: data.batch_size: 0 is out of range: must be >= 1"),
        ("data:\n  batch_size:\n", "r.yaml:3: data.batch_size: null is not allowed here"),
        ("data:\n  source: mnst\n", "r.yaml:3: data.source: 'mnst' is not one of mnist | digits"),
        ("output:\n  name: 123\n", "r.yaml:3: output.name: expected a string, got 123; quote it"),
        ("model:\n  kwargs: [1]\n", "r.yaml:3: model.kwargs: expected a mapping"),
        ("training:\n  optimizer:\n    betas: [0.9]\n", "r.yaml:4: training.optimizer.betas: expected a list of 2"),
        ("output:\n  formats: []\n", "r.yaml:3: output.formats: must not be empty"),
        ("output:\n  formats: module\n", "r.yaml:3: output.formats: expected a list, got 'module'"),
        ("output:\n  formats: [module, module]\n", "r.yaml:3: output.formats[1]: 'module' is listed twice"),
        ("training:\n  optimizer:\n    lr: .inf\n", "r.yaml:4: training.optimizer.lr: expected a finite number"),
        ("pruning: 3\n", "r.yaml:2: pruning: expected a section"),
        ("model:\n  factory: mymodule.build\n", "r.yaml:3: model.factory: 'mymodule.build' is not of the form"),
        ("output:\n  name: a/b\n", "r.yaml:3: output.name: 'a/b' is a path"),
    ],
)
def test_value_errors(text, expected):
    assert _error("version: 1\n" + text).startswith(expected)


def test_list_items_are_reported_at_their_own_line():
    message = _error("version: 1\nmodel:\n  input_shape:\n    - 1\n    - 3\n    - 0\n")
    assert message.startswith("r.yaml:6: model.input_shape[2]: 0 is out of range: must be >= 1")


def test_did_you_mean_for_unknown_keys():
    assert _error("version: 1\npruning:\n  critrion: taylor\n") == (
        "r.yaml:3: pruning.critrion: unknown key; did you mean 'criterion'?"
    )
    assert _error("version: 1\ntrainig: {}\n") == "r.yaml:2: trainig: unknown key; did you mean 'training'?"


def test_unknown_key_without_close_match_lists_valid_keys():
    message = _error("version: 1\npruning:\n  budget:\n    zzz: 1\n")
    assert message == "r.yaml:4: pruning.budget.zzz: unknown key; valid keys here: kind, keep"


def test_duplicate_keys_are_refused():
    message = _error("version: 1\npruning:\n  rounds: 2\n  rounds: 3\n")
    assert message.startswith("r.yaml:4: pruning.rounds: duplicate key (also on line 3)")


# --- version, malformed YAML, empty and missing files ------------------------------------------


def test_missing_version():
    assert _error("pruning: {rounds: 2}\n") == "r.yaml: version: missing; add 'version: 1' at the top"


def test_unsupported_version_names_the_supported_one():
    message = _error("notes: new\nversion: 2\n")
    assert message.startswith("r.yaml:2: version: 2 is not supported; this dpm reads version 1 recipes")


def test_version_must_be_an_integer():
    assert _error("version: '1'\n").startswith("r.yaml:1: version: expected an integer, got '1'")


@pytest.mark.parametrize(
    "text, location",
    [
        ("version: 1\npruning:\n  budget: [\n", "r.yaml:4:1: invalid YAML: "),
        ("version: 1\npruning:\n  rounds: 2\n bad: 1\n", "r.yaml:4:2: invalid YAML: "),
        ("version: 1\npruning:\n\trounds: 2\n", "r.yaml:3:1: invalid YAML: found character '\\t'"),
        ("version: 1\n---\nversion: 1\n", "r.yaml:2:1: invalid YAML: expected a single document"),
    ],
)
def test_malformed_yaml_gives_line_and_column(text, location):
    assert _error(text).startswith(location)


def test_yaml_tags_are_refused():
    message = _error("version: 1\nnotes: !!python/object:os.system {}\n")
    assert message.startswith("r.yaml:2:8: invalid YAML: could not determine a constructor")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_recipe(text):
    assert _error(text) == "r.yaml: the recipe is empty; start it with 'version: 1'"


@pytest.mark.parametrize("text, got", [("- a\n- b\n", "got a list"), ("hello\n", "got the value 'hello'")])
def test_top_level_must_be_a_mapping(text, got):
    message = _error(text)
    assert message.startswith("r.yaml:1: the top level must be a mapping") and message.endswith(got)


def test_missing_recipe_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_recipe("r.yaml")
    assert str(info.value) == "r.yaml: no such recipe file"


# --- cross-field checks ------------------------------------------------------------------------


def test_tensors_source_needs_a_path():
    message = _error("version: 1\ndata:\n  source: tensors\n")
    assert message.startswith("r.yaml:3: data.path: required when data.source is 'tensors'")


def test_path_is_refused_unless_source_is_tensors():
    # Reported before the file check: the path is wrong whether or not the file exists.
    message = _error("version: 1\ndata:\n  path: missing.pt\n")
    assert message.startswith("r.yaml:3: data.path: only used when data.source is 'tensors' (it is 'mnist')")


def test_factory_source_needs_a_factory_and_vice_versa():
    assert _error("version: 1\ndata:\n  source: factory\n").startswith(
        "r.yaml:3: data.factory: required when data.source is 'factory'"
    )
    assert _error("version: 1\ndata:\n  factory: pkg.data:loaders\n").startswith(
        "r.yaml:3: data.factory: only used when data.source is 'factory'"
    )
    recipe = _parse("version: 1\ndata: {source: factory, factory: 'pkg.data:loaders'}\n")
    assert recipe.data.factory == "pkg.data:loaders"


def test_round_interval_must_cover_the_decay():
    message = _error("version: 1\npruning:\n  decay_steps: 100\n  round_interval: 50\n")
    assert message.startswith("r.yaml:4: pruning.round_interval: 50 is shorter than pruning.decay_steps (100)")
    assert _parse("version: 1\npruning: {decay_steps: 100, round_interval: 100}\n").pruning.round_interval == 100


def test_training_needs_epochs_or_steps():
    message = _error("version: 1\ntraining:\n  epochs: null\n")
    assert message.startswith("r.yaml:2: training: neither training.epochs nor training.steps is set")
    assert _parse("version: 1\ntraining: {epochs: null, steps: 10}\n").training.steps == 10


def test_distill_needs_no_labels():
    recipe = _parse("version: 1\nobjective: {kind: distill}\ndata: {source: random}\n")
    assert recipe.objective.kind == "distill"


# --- files named in the recipe -----------------------------------------------------------------


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "set.npz").write_bytes(b"")
    (folder / "w.pt").write_bytes(b"")
    (folder / "r.yaml").write_text("version: 1\nmodel: {checkpoint: w.pt}\ndata: {source: tensors, path: data/set.npz}\n")
    monkeypatch.chdir(tmp_path)  # the working directory is not the recipe's folder
    recipe = load_recipe("recipes/r.yaml")
    assert recipe.model.checkpoint == str(folder / "w.pt")
    assert recipe.data.path == str(folder / "data" / "set.npz")


def test_missing_file_names_key_and_line(tmp_path):
    (tmp_path / "r.yaml").write_text("version: 1\nmodel:\n  factory: m.x:f\n  checkpoint: nope.pt\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(tmp_path / "r.yaml")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'r.yaml'}:4: model.checkpoint: no such file '{tmp_path / 'nope.pt'}'")
    assert "recipe's folder" in message


def test_file_checks_can_be_skipped():
    recipe = _parse("version: 1\nmodel: {checkpoint: /nowhere/w.pt}\n", check_files=False)
    assert recipe.model.checkpoint == os.path.abspath("/nowhere/w.pt")


# --- overrides ---------------------------------------------------------------------------------


def test_overrides_are_parsed_as_yaml_values():
    recipe = _parse(
        "version: 1\ndata:\n  source: tensors\n  path: x.npz\n",
        (
            "pruning.budget.keep=0.25",
            "training.optimizer.name=adamw",
            "pruning.ignore=[fc,layer1.*]",
            "data.source=mnist",
            "data.path=null",
            "model.kwargs.depth=20",
        ),
    )
    assert recipe.pruning.budget.keep == 0.25
    assert recipe.training.optimizer.name == "adamw"
    assert recipe.pruning.ignore == ("fc", "layer1.*")
    assert recipe.data.source == "mnist" and recipe.data.path is None
    assert recipe.model.kwargs == {"depth": 20}


def test_parse_override_splits_on_the_first_equals_sign():
    assert parse_override("model.factory=pkg.mod:build") == (["model", "factory"], "pkg.mod:build")
    assert parse_override("notes=a=b") == (["notes"], "a=b")


def test_later_overrides_win():
    assert _parse("version: 1\n", ("pruning.rounds=2", "pruning.rounds=3")).pruning.rounds == 3


def test_override_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "r.yaml").write_text("version: 1\n")
    (tmp_path / "w.pt").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe("recipes/r.yaml", ["model.checkpoint=w.pt"])
    assert recipe.model.checkpoint == str(tmp_path / "w.pt")


@pytest.mark.parametrize(
    "override, expected",
    [
        ("pruning.budget.kep=0.3", "override 'pruning.budget.kep=0.3': pruning.budget.kep: unknown key; did you mean 'keep'?"),
        ("prunning.rounds=2", "override 'prunning.rounds=2': prunning: unknown key; did you mean 'pruning'?"),
        ("pruning.rounds", "override 'pruning.rounds': expected KEY.PATH=VALUE, e.g. pruning.budget.keep=0.25"),
        ("a..b=1", "override 'a..b=1': 'a..b' is not a key path"),
        ("data.path=", "override 'data.path=': no value after '='; write data.path=null to clear it"),
        ("pruning.ignore=[fc", "override 'pruning.ignore=[fc': cannot parse the value '[fc' as YAML"),
        ("pruning.budget.keep.x=1", "override 'pruning.budget.keep.x=1': pruning.budget.keep: is a single value"),
    ],
)
def test_override_syntax_and_key_errors(override, expected):
    assert _error("version: 1\n", (override,)).startswith(expected)


def test_override_value_errors_say_override_instead_of_a_line():
    message = _error("version: 1\npruning:\n  budget:\n    keep: 0.5\n", ("pruning.budget.keep=1.5",))
    assert message.startswith(
        "r.yaml (override 'pruning.budget.keep=1.5'): pruning.budget.keep: 1.5 is out of range (0, 1]"
    )
    message = _error("version: 1\n", ("model.input_shape=[1, 0]",))
    assert message.startswith("r.yaml (override 'model.input_shape=[1, 0]'): model.input_shape[1]: 0 is out of range")


def test_override_cross_field_error_points_at_the_override():
    message = _error("version: 1\n", ("data.source=tensors",))
    assert message.startswith("r.yaml (override 'data.source=tensors'): data.path: required when")


def test_apply_overrides_leaves_its_input_alone():
    from dpm_cli.recipe.overrides import apply_overrides

    raw = {"version": 1, "pruning": {"rounds": 2}}
    result, origins = apply_overrides(raw, ["pruning.rounds=5", "model.kwargs.depth=20"])
    assert raw == {"version": 1, "pruning": {"rounds": 2}}
    assert result["pruning"]["rounds"] == 5 and result["model"] == {"kwargs": {"depth": 20}}
    assert origins == {"pruning.rounds": "pruning.rounds=5", "model.kwargs.depth": "model.kwargs.depth=20"}


def test_decay_steps_and_decay_fraction_exclude_each_other():
    with pytest.raises(ConfigError, match="keep one of them"):
        _parse("version: 1\npruning: {decay_steps: 10, decay_fraction: 0.2}\n")


@pytest.mark.parametrize("pruning, expected", [("{}", 25), ("{decay_fraction: 0.1}", 10), ("{decay_steps: 7}", 7),
                                               ("{decay_fraction: 0.001}", 1)])
def test_decay_steps_resolve_against_the_run_length(pruning, expected):
    from dpm_cli.pipeline.context import dpm_config

    recipe = _parse(f"version: 1\npruning: {pruning}\n")
    assert dpm_config(recipe, steps=100).decay_steps == expected


def test_an_override_of_one_decay_key_is_named_with_the_fix():
    message = _error("version: 1\npruning:\n  decay_fraction: 0.25\n", ("pruning.decay_steps=7",))
    assert message.startswith("r.yaml (override 'pruning.decay_steps=7'): pruning.decay_steps: both pruning.decay_steps")
    assert message.endswith("also pass pruning.decay_fraction=null)")
    assert _parse("version: 1\npruning:\n  decay_fraction: 0.25\n",
                  ("pruning.decay_steps=7", "pruning.decay_fraction=null")).pruning.decay_steps == 7


def test_round_interval_is_checked_against_a_resolved_fraction():
    from dpm_cli.pipeline.context import dpm_config

    recipe = _parse("version: 1\npruning: {round_interval: 10, rounds: 2}\n")  # N unknown until the run's length is
    assert dpm_config(recipe, steps=40).round_interval == 10  # N = 10
    with pytest.raises(ConfigError, match=r"pruning.round_interval \(10\) is shorter than the decay, N = 25 steps "
                                          r"\(decay_fraction 0.25, the default, of 100 fine-tuning steps\)"):
        dpm_config(recipe, steps=100)


@pytest.mark.parametrize("steps", [2, 3, 5, 6, 10, 14, 186])
def test_the_default_decay_fits_a_run_with_self_rectifying(steps):
    # One round from step 0 with SR on (decay phase 2N) must fit in every run of 2 or more steps.
    import torch

    from dpm_cli.engine import DecayPruner
    from dpm_cli.models import mlp
    from dpm_cli.pipeline.context import dpm_config

    recipe = default_recipe()
    assert recipe.pruning.rectify.enabled and recipe.pruning.rounds == 1 and recipe.pruning.start_step == 0
    pruner = DecayPruner(mlp(in_features=16, hidden=[8], num_classes=4), torch.zeros(1, 16), dpm_config(recipe, steps))
    assert pruner.decay_phase_end <= steps


def test_describe_decay_gives_n_or_the_rule():
    from dpm_cli.recipe.schema import describe_decay

    p = default_recipe().pruning
    assert describe_decay(p, 186) == "N = 46 steps (decay_fraction 0.25, the default, of 186 fine-tuning steps)"
    assert "dpm plan shows N" in describe_decay(p, None)
    assert describe_decay(dataclasses.replace(p, decay_steps=60), None) == "N = 60 steps (pruning.decay_steps)"


def test_a_data_path_that_is_a_folder_is_named_as_one(tmp_path):
    """`data.path: corpus/` (a folder of text files) failed at the start of the run with "cannot read it
    to hash it (Is a directory)"; `dpm check --data corpus` said "no such file"."""
    (tmp_path / "corpus").mkdir()
    for source in ("text", "tensors"):
        message = _error(f"""
            version: 1
            data: {{source: {source}, path: corpus}}
            """, base_dir=tmp_path)
        assert "data.path: '" in message and "corpus' is a folder; set it to a" in message
    from dpm_cli.report.evaldata import resolve_eval_data

    with pytest.raises(ConfigError, match="--data '.*corpus' is a folder; give one file"):
        resolve_eval_data(str(tmp_path / "corpus"), None)
