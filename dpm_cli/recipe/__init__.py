"""Recipes: versioned YAML files describing a whole dpm run, validated before any work starts.

    recipe = load_recipe("recipes/resnet56.yaml", ["pruning.budget.keep=0.25"])
    recipe.pruning.budget.keep            # 0.25
    print(dump_recipe(recipe))            # every key, defaults filled in

Every problem is a one-line `ConfigError` naming the file, the line and the key path. See
`schema.py` for the keys (or `describe_schema()`), `loader.py` for how paths are resolved.
"""
from __future__ import annotations

from .loader import default_recipe, dump_recipe, load_recipe, parse_recipe
from .overrides import parse_override
from .schema import (
    SUPPORTED_VERSIONS,
    BudgetSection,
    DataSection,
    ModelSection,
    ObjectiveSection,
    OptimizerSection,
    OutputSection,
    PretrainSection,
    PruningSection,
    RecalibrateSection,
    Recipe,
    RectifySection,
    ScheduleSection,
    TrainingSection,
    describe_schema,
)

__all__ = [
    "SUPPORTED_VERSIONS",
    "BudgetSection",
    "DataSection",
    "ModelSection",
    "ObjectiveSection",
    "OptimizerSection",
    "OutputSection",
    "PretrainSection",
    "PruningSection",
    "RecalibrateSection",
    "Recipe",
    "RectifySection",
    "ScheduleSection",
    "TrainingSection",
    "default_recipe",
    "describe_schema",
    "dump_recipe",
    "load_recipe",
    "parse_override",
    "parse_recipe",
]
