"""Attention heads that can only leave every layer at once: a relative position bias shared by layers.

T5 computes one position bias per head in its first layer's attention (from that module's
`relative_attention_bias`, a [buckets, heads] table) and hands it on to every later layer of the stack;
its cross-attention hands on the first layer's zero bias the same way. MPNet computes the bias once in
the encoder (`encoder.relative_attention_bias`) and adds it in every layer. Either way head h of every
layer adds bias column h, so a head cut from one layer alone breaks the addition (or pairs heads with
the wrong bias). Such heads form ONE group that spans the layers: structure h is head h of every layer
with its bias column, ranked, decayed and removed together. UMT5 gives every layer a table of its own:
nothing is shared there, its attention takes no bias from elsewhere, and its heads stay per layer.
"""
from __future__ import annotations

import inspect
import re

import torch.nn as nn

from .head_adapters import HeadAdapter, HeadLayout
from .head_parts import refuse_other_layers
from .structures import GroupSlices, Unsupported, merge_slices


class T5Attention(HeadAdapter):
    """Hugging Face T5-style attention (T5, mT5, UMT5, LongT5's local attention, ...): q/k/v/o Linears of
    n_heads x key_value_proj_dim rows, reshaped with -1; a first layer's `relative_attention_bias`
    columns are its heads' too."""

    family = "hf-t5"

    def matches(self, module: nn.Module) -> bool:
        return (all(isinstance(getattr(module, n, None), nn.Linear) for n in ("q", "k", "v", "o"))
                and all(isinstance(getattr(module, a, None), int) for a in ("n_heads", "key_value_proj_dim", "inner_dim")))

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        heads, dim = module.n_heads, module.key_value_proj_dim
        refuse_other_layers(name, module, ("q", "k", "v", "o", "relative_attention_bias"), dim)
        widths = {n: getattr(module, n).out_features for n in ("q", "k", "v")}
        if set(widths.values()) != {heads * dim}:
            raise Unsupported(f"{name}: {widths} rows, not {heads} heads x {dim} each")
        table = getattr(module, "relative_attention_bias", None)
        tables = [table] if isinstance(table, nn.Embedding) else []
        if tables and table.weight.shape[1] != heads:
            raise Unsupported(f"{name}: relative_attention_bias has {table.weight.shape[1]} columns, not {heads} heads")
        return HeadLayout(self.family, heads, heads, dim, (module.q, "weight", 0), (module.k, "weight", 0),
                          (module.v, "weight", 0), module.o, [], name, bias_cols=tables)

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        module.n_heads = heads
        module.inner_dim = heads * layout.head_dim


class CoupledRemoval:
    """Removes the same heads from every member, and their columns from a table outside them (MPNet's);
    returns {module name: query heads removed} for every member and the table."""

    def __init__(self, members: list[GroupSlices], table: tuple[str, nn.Embedding] | None):
        self.members, self.table = members, table

    def __call__(self, channels: list[int]) -> dict[str, list[int]]:
        from .heads import drop_bias_columns

        removed = {g.name: g.remove(channels) for g in self.members}
        if self.table is not None:
            heads = next(iter(removed.values()))
            drop_bias_columns(self.table[1], heads)
            removed[self.table[0]] = heads
        return removed


def _pattern(name: str) -> str:
    """The name with every layer index replaced: the attention role across a stack's layers."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)", "*", name)


def _takes_bias(module: nn.Module) -> bool:
    """Whether the attention can be handed a position bias computed elsewhere (T5's; UMT5's cannot)."""
    return "position_bias" in inspect.signature(type(module).forward).parameters


def _shared_sets(model: nn.Module, groups: list[GroupSlices]) -> list[tuple[list[GroupSlices], tuple | None]]:
    """(members, table outside them) of every set of head groups that share a position bias."""
    by_name, roots = {g.name: g for g in groups}, {id(g.root) for g in groups}
    sets, taken = [], set()
    for owner, module in model.named_modules():  # MPNet: the encoder's table, every attention below it
        table = getattr(module, "relative_attention_bias", None)
        if isinstance(table, nn.Embedding) and id(module) not in roots:  # (T5's first attention holds its own)
            prefix = f"{owner}." if owner else ""
            members = [g for n, g in by_name.items() if n.startswith(prefix) and n not in taken]
            if members:
                sets.append((members, (f"{prefix}relative_attention_bias", table)))
                taken |= {g.name for g in members}
    roles: dict[str, list[GroupSlices]] = {}
    for g in groups:  # T5: every layer of a stack's self- (or cross-) attention, unless each has its own table
        if g.name not in taken and isinstance(getattr(g.remove, "adapter", None), T5Attention):
            roles.setdefault(_pattern(g.name), []).append(g)
    for members in roles.values():
        own_tables = sum(bool(g.remove.layout.bias_cols) for g in members)
        if len(members) > 1 and own_tables < len(members) and _takes_bias(members[0].root):
            sets.append((members, None))
    return sets


def couple_shared_heads(model: nn.Module, groups: list[GroupSlices], skipped: dict[str, str]) -> list[GroupSlices]:
    """`groups` with the head groups that share a position bias merged into one group each, named by
    the layers' pattern ("encoder.layer.*.attention.attn": in reports, and as a `pruning.ignore` glob it
    keeps them all); a set whose layers differ in heads is left out, with the reason."""
    out = list(groups)
    for members, table in _shared_sets(model, groups):
        for g in members:
            out.remove(g)
        try:
            out.append(_merged(members, table))
        except Unsupported as why:
            skipped.update({g.name: str(why) for g in members})
    return out


def _merged(members: list[GroupSlices], table: tuple[str, nn.Embedding] | None) -> GroupSlices:
    first = members[0]
    lay = first.remove.layout
    shapes = {(g.remove.layout.heads, g.remove.layout.kv_heads, g.remove.layout.head_dim) for g in members}
    if len(shapes) > 1:
        raise Unsupported(f"{first.name}: its layers share a position bias but not their head shapes {sorted(shapes)}")
    if table is not None and table[1].weight.shape[1] != lay.heads:
        raise Unsupported(f"{table[0]} has {table[1].weight.shape[1]} columns, not {lay.heads} heads")
    slices = [s for g in members for s in g.slices]
    if table is not None:
        from .heads import bias_slices

        slices += merge_slices([bias_slices(table[1], f"{table[0]}:bias_table", lay.head_dim)])
    macs = tuple(m for g in members for m in g.macs_modules)
    return GroupSlices(name=_pattern(first.name), root=first.root, channels=first.channels, slices=slices, tp_group=None,
                       unit_of=first.unit_of, remove=CoupledRemoval(members, table), macs_module=macs, kind="heads")
