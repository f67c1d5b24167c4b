"""Every shipped recipe begins with the command that runs it and validates."""
from __future__ import annotations

from pathlib import Path

import pytest

from dpm_cli.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))


def test_recipes_exist():
    assert {p.name for p in RECIPES} >= {"mnist-demo.yaml", "resnet56-depgraph.yaml", "vgg16-bn-bnscale.yaml",
                                         "mobilenetv2.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_starts_with_its_command_and_validates(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Run: dpm prune") and path.name in first
    load_recipe(path)
