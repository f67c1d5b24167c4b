"""Pruned attention heads in a config: which keys record them, per part of a composite model.

transformers 5 has no `pruned_heads`: a head count other than the config's is expressible only where
the architecture takes the head size from the config (`head_dim`, asked of the class itself:
`expressible.head_size_free`) and every layer of a part has the same count. A composite model (Gemma 3
multimodal, CLIP) keeps one config per part (`text_config`, `vision_config`): each part's heads are
written in its own keys ("text_config.num_attention_heads"), and only the parts whose heads leave are
asked, which is known once the example inputs have shown which attention runs.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from ..errors import DpmError
from .expressible import build_meta, head_size_free
from .prunable import config_scopes, config_value, head_layouts, part_config, scoped, scoped_key


class HFFormatError(DpmError):
    """The compact model's shapes cannot be written in its architecture's standard config."""


def head_counts(model: nn.Module) -> list[tuple[int, int]]:
    """(query heads, key/value heads) of every attention module a head adapter describes (the only ones
    dpm prunes by heads), as the adapter reads them from the module's shapes and counts."""
    return [(layout.heads, layout.kv_heads) for layout in head_layouts(model)[0].values()]


def size_free(model: nn.Module, ffn: dict[str, Any] | None = None, scope: str | None = None) -> bool:
    """Whether the (part's) config states the head size apart from the head count (asked of the
    architecture; where it cannot be built, whether the config has a head_dim)."""
    free = head_size_free(model, ffn, scope)
    return "head_dim" in part_config(model, scope).to_dict() if free is None else free


def head_updates(model: nn.Module, ffn: dict[str, Any]) -> dict[str, Any]:
    """Config values that record every part's head counts (dotted for a composite's parts), or
    HFFormatError naming what cannot be recorded."""
    updates: dict[str, Any] = {}
    as_configured = None
    for scope, layouts in scoped(model, head_layouts(model)[0]).items():
        config = part_config(model, scope)
        heads = config_value(config, "num_attention_heads")
        kv = config_value(config, "num_key_value_heads") or heads
        counts = [(lay.heads, lay.kv_heads) for lay in layouts.values()]
        if heads is None or all(c == (heads, kv) for c in counts):
            continue
        as_configured = as_configured or build_meta(model, {})  # the config's own counts (BART: encoder, decoder)
        if as_configured is not None and _counts(as_configured, layouts) == counts:
            continue
        updates.update(_part_updates(model, config, scope, counts, layouts, ffn))
    return updates


def _counts(model: nn.Module, layouts: dict[str, Any]) -> list[tuple[int, int]] | None:
    built = head_layouts(model)[0]
    return [(built[n].heads, built[n].kv_heads) for n in layouts] if all(n in built for n in layouts) else None


def _part_updates(model: nn.Module, config: Any, scope: str | None, counts: list[tuple[int, int]],
                  layouts: dict[str, Any], ffn: dict[str, Any]) -> dict[str, Any]:
    name = type(config).__name__
    if not size_free(model, ffn, scope):
        raise HFFormatError(
            f"the attention head counts per layer ({[q for q, _ in counts]}) cannot be written in a {name}: its "
            "head size is hidden_size / num_attention_heads and transformers 5 has no pruned_heads; ship the dpm "
            "artifact (.dpm.pt) or .pt2 program instead")
    if len(set(counts)) > 1:
        raise HFFormatError(
            f"the query heads per layer ({[q for q, _ in counts]}) differ but {name} holds one num_attention_heads; "
            "prune with pruning.ranking: layer for equal head counts (the .dpm.pt artifact and .pt2 hold this model)")
    (q, k), keys = counts[0], config.to_dict()
    updates = {scoped_key(scope, "num_attention_heads"): q}
    if "num_key_value_heads" in keys:
        updates[scoped_key(scope, "num_key_value_heads")] = k
    if "head_dim" not in keys:  # Qwen2: head_dim = getattr(config, "head_dim", hidden / heads)
        updates[scoped_key(scope, "head_dim")] = next(iter(layouts.values())).head_dim
    return updates


def _head_roots(model: nn.Module, groups: list) -> set[str]:
    """Names of the attention modules these groups remove heads from (a group across layers: all of them)."""
    names = {m: n for n, m in model.named_modules()}
    return {names[r] for g in groups if g.kind == "heads"
            for r in ([m.root for m in g.remove.members] if hasattr(g.remove, "members") else [g.root])}


def unpruned_heads_problem(model: nn.Module, groups: list, head_ratio: float | None) -> str | None:
    """Why a folder cannot hold the head counts these groups leave, or None: an attention module without
    a head group (named in pruning.ignore) keeps its heads while another of the same config part loses
    some, and the part holds one head count (with head_ratio null, heads compete in the budget and may
    leave). Asked once the groups are known, before training."""
    if head_ratio == 0:
        return None
    pruned = _head_roots(model, groups)
    for scope, layouts in scoped(model, {n: lay for n, lay in head_layouts(model)[0].items() if lay.units > 1}).items():
        kept = [n for n in layouts if n not in pruned]
        if kept and len(kept) < len(layouts):
            part = type(part_config(model, scope)).__name__
            return (f"the attention heads of {kept[0]} are not pruned (pruning.ignore names it) while other layers lose "
                    f"heads, but {part} holds one head count for all of them, so the pruned model cannot be saved as "
                    "a Hugging Face folder: prune every layer's heads, set pruning.head_ratio: 0, or set output.hf: "
                    "false (BASE.dpm.pt and BASE.pt2 hold any shape)")
    return None


def pruned_head_problem(model: nn.Module, groups: list, head_ratio: float | None) -> str | None:
    """Why the heads these groups will remove cannot be recorded in a composite model's folder, or None.
    Asked once the groups are known (before training): only the parts whose attention runs on the
    example inputs lose heads (Gemma 3 given text: the language model, not the vision tower)."""
    scopes = config_scopes(model)
    if head_ratio == 0 or not scopes:
        return None
    pruned = _head_roots(model, groups)
    fix = "or set output.hf: false (BASE.dpm.pt and BASE.pt2 hold any shape)"
    for scope in sorted(scoped(model, dict.fromkeys(pruned)), key=str):
        if scope is None:
            return (f"{type(model.config).__name__} holds its parts' configs, and attention outside them loses heads "
                    f"that no config records: set pruning.head_ratio: 0 to keep the heads, {fix}")
        if not size_free(model, None, scope):
            return (f"{type(model.config).__name__}.{scope} cannot record pruned attention heads (its model sizes "
                    f"the heads from hidden_size, not the counts, and transformers 5 has no pruned_heads): set "
                    f"pruning.head_ratio: 0 to keep the heads, {fix}")
    return None
