"""Every shipped recipe begins with the command that runs it and validates."""
from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path

import pytest
import torch

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


@lru_cache(maxsize=None)
def _batches_per_epoch(source: str, val_fraction: float, split_seed: int, num_samples: int | None,
                       batch_size: int) -> int:
    from dpm_cli.data import load_data, make_loaders

    data = load_data(source, val_fraction=val_fraction, split_seed=split_seed, num_samples=num_samples)
    return len(make_loaders(data, batch_size=batch_size, eval_batch_size=batch_size, seed=0)[0])


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_decay_phase_fits_its_run(path):
    # N is a fraction of the run now; `dpm prune` refuses a decay phase longer than the run.
    from dpm_cli.engine import DecayPruner
    from dpm_cli.models import mlp
    from dpm_cli.pipeline.context import dpm_config

    recipe = load_recipe(path)
    d, t = recipe.data, recipe.training
    steps = t.steps or t.epochs * _batches_per_epoch(d.source, d.val_fraction, d.split_seed, d.num_samples, d.batch_size)
    # The phase's length depends on the schedule options only, so a small stand-in model will do (without
    # heads: head_ratio, which such a model would refuse, does not change the phase).
    config = dataclasses.replace(dpm_config(recipe, steps), head_ratio=None)
    pruner = DecayPruner(mlp(in_features=16, hidden=[64, 64], num_classes=4), torch.zeros(1, 16), config)
    assert pruner.decay_phase_end <= steps
