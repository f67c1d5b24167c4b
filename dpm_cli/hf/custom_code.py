"""Folders whose model is defined by code inside them (config.json `auto_map`, `trust_remote_code`).

dpm runs no code from a model folder, so transformers loads such a folder with its own class for the
config's `model_type`, when it has one. That is right when the folder's code is an early copy of a class
transformers now ships (Phi-3's folders), and wrong when the code is another model under a known type
(Jina v3's rotary XLM-RoBERTa): pruning the built-in class would prune and save another model. The
weights decide: the built-in class must hold every weight of the folder and miss none.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckpointError

FROM_PYTHON = ("load it yourself with from_pretrained(..., trust_remote_code=True) and prune it from Python with "
               "dpm_cli.DecayPruner (README: Use it from Python)")


def custom_classes(config: dict) -> dict[str, str]:
    """config.json's `auto_map` as {Auto class: 'module.Class' in the folder}; {} when it names no code."""
    mapping = config.get("auto_map")
    if not isinstance(mapping, dict):
        return {}
    named = {}
    for auto, ref in mapping.items():
        ref = ref[-1] if isinstance(ref, (list, tuple)) and ref else ref  # tokenizers: [slow, fast]
        if isinstance(ref, str) and ref:
            named[str(auto)[:60]] = ref.split("--")[-1][:80]  # "repo--module.Class" names code on the Hub
    return named


def task_of_custom(config: dict, arch: str | None, tasks: tuple[str, ...]) -> str | None:
    """The Auto class whose `auto_map` entry is the folder's architecture, where it is one of `tasks`."""
    for auto, ref in custom_classes(config).items():
        if auto in tasks and arch and ref.rsplit(".", 1)[-1] == arch:
            return auto
    return None


def _shown(config: dict, task: str) -> str:
    named = custom_classes(config)
    auto = task if task in named else next((a for a in named if a.startswith("AutoModel")), next(iter(named)))
    return f"config.json auto_map: {auto} -> {named[auto]}"


def check_known_type(path: Path, config: dict, task: str, transformers: Any) -> None:
    """Refuse a folder whose code dpm would need to run: its model_type has no class in transformers."""
    if not custom_classes(config):
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise CheckpointError(f"{path} defines its model in code inside the folder ({_shown(config, task)}), and "
                              f"transformers has no class of its own for model_type {str(model_type)[:40]!r}: dpm "
                              f"runs no code from a model folder; {FROM_PYTHON}")


def check_weights_match(path: Path, config: dict, task: str, model: Any, info: dict) -> str | None:
    """For a folder that names its own code, loaded with transformers' class instead: refuse when that
    class does not hold exactly the folder's weights; else the note that says which class was used."""
    if not custom_classes(config):
        return None
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    cls = type(model).__name__
    if missing or unexpected:
        found = [f"{len(names)} {kind}, e.g. {names[0][:60]}" for names, kind in
                 ((missing, "missing"), (unexpected, "not used")) if names]
        raise CheckpointError(f"{path} defines its model in code inside the folder ({_shown(config, task)}), which "
                              f"dpm does not run, and transformers' own {cls} does not match its weights "
                              f"({'; '.join(found)}): it is another model; {FROM_PYTHON}")
    return (f"{path.name} names its own code ({_shown(config, task)}); dpm ran none of it and loaded transformers' "
            f"{cls}, which holds exactly the folder's weights (whether it also computes what that code computes, "
            "dpm cannot tell without running it)")
