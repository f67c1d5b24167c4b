"""Property tests of the recipe loader: mutated recipes give a Recipe or a DpmError line, nothing else.

Structural mutations (keys deleted, inserted, retyped; random scalars; deep nesting) and byte-level
mutations of every shipped recipe in recipes/, and random overrides. Any other exception, or an error
message that is not one printable line, fails. Fast by default (a few hundred examples in all);
`DPM_FUZZ_PROFILE=long` runs 10,000 examples per test.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpm_cli.errors import DpmError
from dpm_cli.recipe import load_recipe, parse_recipe

LONG = os.environ.get("DPM_FUZZ_PROFILE") == "long"
FUZZ = settings(max_examples=10_000 if LONG else 120, deadline=None, derandomize=not LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
TEXTS = {path.name: path.read_bytes() for path in RECIPES}
TREES = {name: yaml.safe_load(text) for name, text in TEXTS.items()}


def outcome(call) -> None:
    """Run the loader; a DpmError must be one printable line, any other exception fails the test."""
    try:
        call()
    except DpmError as err:
        message = str(err)
        assert message and message.isprintable(), repr(message)
        assert len(message) < 2000, message[:200]


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["1e18", "1e-3", ".inf", "yes", "~", "!!python/none"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)


def paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += paths(value, prefix + (key,))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += paths(value, prefix + (index,))
    return found


def mutate(tree: Any, path: tuple, action: str, value: Any, key: str) -> Any:
    if not path:
        return {"delete": {}, "insert": {**tree, key: value} if isinstance(tree, dict) else value,
                "replace": value, "nest": [[[[[[[[tree]]]]]]]]}[action]
    head, rest = path[0], path[1:]
    copy = dict(tree) if isinstance(tree, dict) else list(tree)
    if action == "delete" and not rest:
        del copy[head]
        return copy
    copy[head] = mutate(tree[head], rest, action, value, key)
    return copy


@FUZZ
@given(st.sampled_from(sorted(TREES)), st.data(), st.sampled_from(["delete", "insert", "replace", "nest"]),
       values, st.one_of(st.sampled_from(["steps", "lr", "keep", "kwargs", "version", "dir"]), st.text(max_size=12)))
def test_structural_mutations_of_shipped_recipes(name, data, action, value, key):
    tree = TREES[name]
    path = data.draw(st.sampled_from(paths(tree)))
    mutated = mutate(tree, path, action, value, key)
    text = yaml.safe_dump(mutated, allow_unicode=True)
    outcome(lambda: parse_recipe(text, name, check_files=False))


@settings(FUZZ, max_examples=10_000 if LONG else 40)
@given(st.integers(1, 120), st.integers(0, 50))
def test_deep_and_wide_nesting(depth, width):
    text = "version: 1\nmodel:\n  kwargs: {a: " + "[" * depth + ", ".join(["0"] * width) + "]" * depth + "}\n"
    outcome(lambda: parse_recipe(text, "r.yaml", check_files=False))


# One folder for every example (hypothesis does not take function-scoped fixtures such as tmp_path),
# removed when the session ends: each run left one behind in /tmp.
_DIR = Path(tempfile.mkdtemp(prefix="dpm-fuzz-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)


@FUZZ
@given(st.sampled_from(sorted(TEXTS)), st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "repeat"]),
                                                          st.floats(0, 1), st.binary(min_size=1, max_size=8)),
                                                min_size=1, max_size=6))
def test_byte_mutations_of_shipped_recipes(name, edits):
    data = bytearray(TEXTS[name])
    for op, where, blob in edits:
        i = int(where * max(0, len(data) - 1))
        if op == "flip" and data:
            data[i] ^= blob[0] or 1
        elif op == "insert":
            data[i:i] = blob
        elif op == "delete":
            del data[i:i + len(blob)]
        elif op == "repeat":
            data[i:i] = bytes(data[i:i + 64]) * (blob[0] % 8)
    path = _DIR / name
    path.write_bytes(bytes(data))
    outcome(lambda: load_recipe(path, check_files=False))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["training.steps", "pruning.budget.keep", "model.kwargs", "model.kwargs.x",
                                           "data", "pruning.ignore", "training.optimizer.lr", "x.y", "", "a..b"]),
                          st.text(max_size=20)), max_size=3))
def test_random_overrides(overrides):
    texts = [f"{key}={value}" for key, value in overrides]
    outcome(lambda: parse_recipe(TEXTS["mnist-demo.yaml"].decode(), "mnist-demo.yaml", texts, check_files=False))


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_shipped_recipes_load_unmutated(name):
    parse_recipe(TEXTS[name].decode(), name, check_files=False)
