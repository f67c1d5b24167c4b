"""Which Auto class loads a folder when the recipe names none: the one its config.json's `architectures`
belongs to, as transformers' pipelines choose. A classifier's folder loaded as `AutoModel` would lose its
head: the pruned folder would be a bare encoder, with nothing said.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..recipe.schema import HF_TASKS as TASKS
from .custom_code import task_of_custom

AUTO = "auto"  # model.hf.task's default: the task of the folder's architecture


def architecture(config: dict) -> str | None:
    """The first class config.json's `architectures` names (what `save_pretrained` wrote), or None."""
    names = config.get("architectures")
    return names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None


def task_of(transformers: Any, arch: str | None) -> str | None:
    """The first of dpm's tasks whose Auto class maps a model type to `arch` (AutoModel first: BertModel is
    also AutoModelForTextEncoding's), or None when none does."""
    if not arch:
        return None
    for task in TASKS:
        names = getattr(getattr(transformers, task, None), "_model_mapping", None)
        names = getattr(names, "_model_mapping", None) or {}  # model_type -> class name(s), not imported
        for value in names.values():
            if arch == value or (isinstance(value, (list, tuple)) and arch in value):
                return task
    return None


def resolve_task(transformers: Any, config: dict, task: str) -> tuple[str, str | None]:
    """(the Auto class to load with, a note saying why, or None). `config`: the folder's config.json as
    read (`load.folder_config`); `task`: the recipe's model.hf.task."""
    if task != AUTO:
        return task, None
    arch = architecture(config)
    # a class of the folder's own code: the Auto class its config.json's auto_map registers it under
    found = task_of(transformers, arch) or task_of_custom(config, arch, TASKS)
    if found is None:
        # whether that leaves weights out is said by dropped_weights_note, from what loading found
        return "AutoModel", (f"config.json names {arch}, which none of model.hf.task's classes loads: loaded as "
                             "AutoModel" if arch else None)
    if found == "AutoModel":
        return found, None
    return found, f"loaded as {found}, the task of {arch} in config.json (model.hf.task chooses another)"


def loads_as(folder: str | Path, task: str, tasks: tuple[str, ...]) -> bool:
    """Whether the folder, loaded as `task` (auto: its config.json's architectures), is one of `tasks`:
    known from config.json before any model loads."""
    from .load import folder_config, import_transformers

    return resolve_task(import_transformers(), folder_config(folder), task)[0] in tasks


def dropped_weights_note(folder: Path, config: dict, task: str, unexpected: list[str],
                         transformers: Any) -> str | None:
    """A note when loading left weights of the folder out (a classifier's head, loaded as AutoModel)."""
    if not unexpected:
        return None
    arch = architecture(config)
    keeps = task_of(transformers, arch)
    hint = f"; model.hf.task: {keeps} keeps them" if keeps and keeps != task else ""
    unexpected = sorted(unexpected)  # transformers gives a set: the same note every run
    shown = ", ".join(unexpected[:3]) + (", ..." if len(unexpected) > 3 else "")
    return (f"{len(unexpected)} weight(s) in {folder.name} are not part of {task} ({shown}) and are left out "
            f"of the pruned model{hint}")
