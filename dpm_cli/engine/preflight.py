"""Fail before training, never after: try the removal the run will do, on the dense model, up front.

When the pruner is built we zero the structures a selection would pick (the whole budget at once,
plus one unit of every other prunable group, so later rounds and Self-Rectifying replacements are
covered too), compact the model, check that it runs, that its output shapes are unchanged and (for
exact pruning) that it computes the same function. Everything happens inside a `Transaction` that
is always rolled back, so the model is exactly as before. torch-pruning's dependency graph cannot be
deep-copied (it holds references that do not pickle) and rebuilding it for a copy would double the
most expensive step, so the check runs on the model itself and undoes itself.

When it fails, the offending group is found by bisection over the groups, and the error is one line
naming that group and the `pruning.ignore` pattern that avoids it.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..errors import BudgetError, DpmError, PreflightError
from .compaction import CompactionPlan, compact_plan
from .config import DPMConfig
from .cost import CostModel, Key
from .selection import Limits, score_groups, select
from .structures import GroupSlices
from .transaction import Transaction


def preflight_keys(groups: list[GroupSlices], cost: CostModel, config: DPMConfig) -> list[Key]:
    """The final budget's selection, plus the least important unit of every group it leaves alone."""
    # no gradients or activations yet: any criterion's selection exercises the same removal paths
    criterion = "magnitude" if config.criterion in ("taylor", "activation", "obs") else config.criterion
    scores = score_groups(groups, criterion, config.seed)
    try:
        keys = select(groups, cost, config, config.budget, set(), set(), scores)
    except BudgetError:
        keys = []
    touched = {gi for gi, _ in keys}
    limits = Limits.from_config(groups, config)
    for gi, score in enumerate(scores):
        if gi in touched or limits.max_prunable[gi] < limits.block[gi]:
            continue
        if groups[gi].kind == "heads" and config.head_ratio == 0:  # never selected: nothing to rehearse
            continue
        order = [c for c in torch.argsort(score, stable=True).tolist() if torch.isfinite(score[c])]
        keys.extend((gi, c) for c in order[:limits.block[gi]])
    return keys


def zero_keys(groups: list[GroupSlices], keys: list[Key]) -> None:
    """Set every slice of the given structures to exactly zero, in place."""
    by_group: dict[int, list[int]] = {}
    for gi, c in keys:
        by_group.setdefault(gi, []).append(c)
    with torch.no_grad():
        for gi, units in by_group.items():
            wanted = torch.tensor(groups[gi].channels_of(units), dtype=torch.long)
            for s in groups[gi].slices:
                local = s.local[torch.isin(s.root, wanted.to(s.root.device))]
                if len(local):
                    s.param.index_fill_(s.dim, local.to(s.param.device), 0.0)


def run_preflight(plan: CompactionPlan, groups: list[GroupSlices], keys: list[Key]) -> None:
    """Zero `keys`, compact, check; always roll back. Raises PreflightError naming the culprit."""
    transaction = Transaction(plan.model, plan.graph)
    try:
        zero_keys(groups, keys)
        failure = _attempt(plan)
        if failure is None:
            return
        culprit = _bisect(plan, failure)
    finally:
        transaction.rollback()
    name, err = culprit
    heads = any(g.name == name and g.kind == "heads" for g in groups)
    fix = (f"set pruning.head_ratio: 0 to keep every head, or add {name!r} to pruning.ignore" if heads
           else f"add {name!r} to pruning.ignore (DPMConfig.ignore) to leave that group alone")
    what = "attention heads of" if heads else "channels of group"
    raise PreflightError(f"preflight: removing {what} {name} breaks the model before any training ({_short(err)}); {fix}")


def _attempt(plan: CompactionPlan) -> DpmError | None:
    try:
        compact_plan(plan, check=plan.exact, measure=False)
    except DpmError as err:
        return err
    return None


def _bisect(plan: CompactionPlan, failure: DpmError) -> tuple[str, DpmError]:
    """The first group whose removal (after all groups before it) makes compaction fail."""
    removals = [r for r in plan.removals if r.channels]
    named = getattr(failure, "group", None)
    low, high = 0, len(removals)  # removals[:high] fails; removals[:low] passes
    worst = failure
    while high - low > 1 and named is None:
        mid = (low + high) // 2
        err = _attempt(replace(plan, removals=removals[:mid]))
        if err is None:
            low = mid
        else:
            high, worst = mid, err
    return (named or removals[high - 1].group), worst


def _short(err: BaseException) -> str:
    text = str(err).split("; the model was left as it was")[0]
    return text[:240]
