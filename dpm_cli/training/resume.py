"""Which recipe changes `--resume` accepts: those that do not change what has already been done.

The learning rate, gradient clipping and the logging, evaluation and checkpoint cadence act on the
steps still to come; anything else (the model, the data, the budget, N, the step count, ...) would
make the resumed run a different run than the one whose state is on disk, so it is refused.
"""
from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..escaping import printable

RESUMABLE = ("training.optimizer.lr", "training.grad_clip", "training.log_every", "training.eval_every",
             "training.checkpoint_every", "notes")


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out if out or not prefix else {prefix: {}}
    return {prefix: data}


def recipe_changes(old_text: str, new_text: str, where: str) -> list[str]:
    """['training.optimizer.lr 1000000.0 -> 0.01', ...] for accepted changes; InputError for any other."""
    if old_text == new_text:
        return []
    from ..recipe.bounded_yaml import safe_load_bounded

    try:
        old, new = _flat(safe_load_bounded(old_text)), _flat(safe_load_bounded(new_text))
    except Exception as err:  # a damaged recipe.yaml: the run cannot be checked, so it is not resumed
        raise InputError(f"{where}/recipe.yaml cannot be read ({printable(err)}); start over with --force") from None
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>"))
    refused = [k for k in changed if not (k in RESUMABLE or k.startswith("notes"))]
    if refused:
        shown = ", ".join(refused[:4]) + (f" and {len(refused) - 4} more" if len(refused) > 4 else "")
        raise InputError(f"{where}: the recipe differs from the one this run started with in {printable(shown)}; "
                         f"--resume accepts changes only to {', '.join(RESUMABLE[:-1])}: resume with the same "
                         "recipe and overrides otherwise, or start over with --force")
    return [f"{k} {printable(_show(old.get(k)), 40)} -> {printable(_show(new.get(k)), 40)}" for k in changed]


def _show(value: Any) -> str:
    return "null" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
