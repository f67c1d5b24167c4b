"""Attention heads as structures: one adapter per attention family, one group of heads per module.

A head is the unit of attention that can be removed exactly: its rows of q, k and v (for
grouped-query attention, a key/value head together with the query heads that read it) and the
matching input columns of the output projection. Torch-pruning's dependency graph sees such a module
as plain Linear channels (a fused qkv as 3 x dim independent rows), which is neither a valid head
removal nor exact, so every axis a head group owns is taken away from torch-pruning's groups
(`claimed_axes`), and the adapter removes the heads itself with torch-pruning's layer functions and
updates the module's own bookkeeping (num_heads, ...) so the model runs afterwards.

An adapter is three methods: `matches(module)`, `describe(name, module) -> HeadLayout` (which parameter
rows/columns belong to which head) and `rebook(module, layout, kept_q_heads)` (attribute updates after
the rows are gone). Adding an attention family (e.g. another fused-qkv layout) is one small class in `head_adapters.py`.
Channel numbering of a head group: channel c = q_head * head_dim + d; structure = key/value head.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp

from .conformer_heads import ConformerAttention
from .conv1d import CONV1D_PRUNER, in_axis, is_conv1d, out_axis
from .fused_heads import (DebertaAttention, FalconAttention, GPTBigCodeAttention, GPTNeoXAttention,
                          ModernBertAttention, PersimmonAttention, Phi3Attention)
from .head_adapters import (GPT2Attention, HeadAdapter, HeadLayout, HFSelfAttention, LlamaAttention,
                            OpenAIGPTAttention, ProjectionAttention, TimmAttention, TorchMultiheadAttention)
from .shared_heads import T5Attention, couple_shared_heads
from .structures import GroupSlices, Unsupported, merge_slices

# Every attention family dpm prunes by whole heads, first match wins (a new family: one adapter, listed here).
ADAPTERS: list[HeadAdapter] = [TimmAttention(), TorchMultiheadAttention(), HFSelfAttention(), LlamaAttention(),
                               GPT2Attention(), ProjectionAttention(), GPTNeoXAttention(), Phi3Attention(),
                               FalconAttention(), ModernBertAttention(), T5Attention(), GPTBigCodeAttention(),
                               PersimmonAttention(), DebertaAttention(), OpenAIGPTAttention(), ConformerAttention()]


def adapter_for(module: nn.Module) -> HeadAdapter | None:
    """The head adapter that recognises `module`, or None."""
    return next((a for a in ADAPTERS if a.matches(module)), None)

# Last name parts of Linear layers that project to q, k and v at once: never pruned as plain channels.
FUSED_QKV_NAMES = ("qkv", "in_proj", "qkv_proj", "c_attn", "Wqkv", "query_key_value", "to_qkv")



class HeadRemoval:
    """Physical removal of whole heads from one attention module (called by compaction with the
    channels of the pruned structures), then the adapter's bookkeeping."""

    def __init__(self, adapter: HeadAdapter, name: str, module: nn.Module, layout: HeadLayout):
        self.adapter, self.name, self.module, self.layout = adapter, name, module, layout

    def q_heads(self, channels: list[int]) -> list[int]:
        """The query heads of the structures that own `channels` (whole key/value groups)."""
        lay, per = self.layout, self.layout.q_per_unit
        units = sorted({c // lay.head_dim // per for c in channels})
        return [u * per + i for u in units for i in range(per)]

    @torch.no_grad()
    def __call__(self, channels: list[int]) -> list[int]:
        """Remove the heads that own `channels`; return their query-head numbers (before removal)."""
        lay, hd = self.layout, self.layout.head_dim
        q_heads = self.q_heads(channels)
        kv_heads = [] if lay.query_only else sorted({h // lay.per_kv for h in q_heads})
        q_cols = [h * hd + d for h in q_heads for d in range(hd)]
        kv_rows = [j * hd + d for j in kv_heads for d in range(hd)]
        rows: dict[int, tuple[nn.Module, str, list[int]]] = {}
        parts = [(*q, q_cols) for q in lay.q_parts()] + [(*lay.k, 1, 0, kv_rows), (*lay.v, 1, 0, kv_rows)]
        for holder, attr, first, block, stride, idxs in parts:
            rows.setdefault(id(holder), (holder, attr, []))[2].extend(lay.row(first, i, block, stride) for i in idxs)
        for holder, attr, idxs in rows.values():
            _drop_rows(holder, attr, sorted(idxs))
        for linear in lay.extra_rows:
            tp.prune_linear_out_channels(linear, q_cols)
        before = [norm.weight.numel() for norm in lay.rms_norms]
        for holder, attr in lay.head_params:
            _drop_entries(holder, attr, q_cols)
        for holder, attr in lay.kv_params:
            _drop_entries(holder, attr, kv_rows)
        for norm, width in zip(lay.rms_norms, before):
            _rescale_rms_norm(norm, width / norm.weight.numel())
        for holder, attr in lay.head_rows:  # a row per head: a Parameter, or a Linear's output (a gate per head)
            _drop_rows(holder, attr, q_heads)
        for table in lay.bias_cols:
            drop_bias_columns(table, q_heads)
        if is_conv1d(lay.out):
            CONV1D_PRUNER.prune_in_channels(lay.out, q_cols)
        else:
            tp.prune_linear_in_channels(lay.out, q_cols)
        self.adapter.rebook(self.module, lay, lay.heads - len(q_heads))
        # Original head numbers, for savers (Hugging Face's config.pruned_heads convention).
        ids = list(getattr(self.module, "dpm_head_ids", range(lay.heads)))
        removed = {ids[h] for h in q_heads}
        self.module.dpm_head_ids = [i for i in ids if i not in removed]
        self.module.pruned_heads = set(getattr(self.module, "pruned_heads", set())) | removed
        return q_heads


def _drop_rows(holder: nn.Module, attr: str, rows: list[int]) -> None:
    if isinstance(holder, nn.Linear) and attr == "weight":
        tp.prune_linear_out_channels(holder, rows)
        return
    if is_conv1d(holder) and attr == "weight":
        CONV1D_PRUNER.prune_out_channels(holder, rows)
        return
    # nn.MultiheadAttention's packed in_proj_weight / in_proj_bias: torch-pruning's MHA pruner
    # removes embedding channels, not heads, so the rows are selected here.
    for name in dict.fromkeys((attr, attr.replace("weight", "bias"))):
        _drop_entries(holder, name, rows)


def _rescale_rms_norm(norm: nn.Module, ratio: float) -> None:
    """An RMSNorm over N channels of which k were exact zeros, now over N' = N - k (ratio = N / N'):
    mean(x^2) over N' is ratio times the mean over N, so eps x ratio and weight x sqrt(ratio) give the
    same output exactly: x / sqrt(ratio (mean_N + eps)) x sqrt(ratio) w = x / sqrt(mean_N + eps) w."""
    if ratio != 1:
        norm.variance_epsilon *= ratio
        norm.weight.data.mul_(ratio ** 0.5)


def _drop_entries(holder: nn.Module, attr: str, rows: list[int]) -> None:
    """Remove entries `rows` (dim 0) of the parameter `holder.attr`, if it has one."""
    param = getattr(holder, attr, None)
    if isinstance(param, nn.Parameter):
        keep = torch.tensor(sorted(set(range(param.shape[0])) - set(rows)), dtype=torch.long, device=param.device)
        setattr(holder, attr, nn.Parameter(param.detach().index_select(0, keep), param.requires_grad))


@torch.no_grad()
def drop_bias_columns(table: nn.Embedding, heads: list[int]) -> None:
    """Remove the columns of a relative position bias table [buckets, heads] that belong to `heads`."""
    keep = torch.tensor(sorted(set(range(table.weight.shape[1])) - set(heads)), dtype=torch.long,
                        device=table.weight.device)
    table.weight = nn.Parameter(table.weight.detach().index_select(1, keep), table.weight.requires_grad)
    table.embedding_dim = len(keep)


def bias_slices(table: nn.Embedding, name: str, head_dim: int) -> tuple:
    """The raw slice of a bias table: column h belongs to head h (whose first channel is h * head_dim)."""
    heads = list(range(table.weight.shape[1]))
    return table.weight, name, 1, heads, [h * head_dim for h in heads]


def head_group(name: str, module: nn.Module, adapter: HeadAdapter) -> GroupSlices:
    """The group of `module`'s heads: every q/k/v row and output-projection column, one structure per
    key/value head (with its query heads)."""
    lay = adapter.describe(name, module)
    hd, per_kv = lay.head_dim, lay.per_kv
    channels = list(range(lay.heads * hd))
    kv_local = list(range(lay.kv_heads * hd))
    kv_root = [(j // hd) * per_kv * hd + j % hd for j in kv_local]  # a kv row belongs to its first q head
    raw = []

    def rows(holder: nn.Module, attr: str, first: int, local: list[int], root: list[int], block: int = 1,
             stride: int = 0) -> None:
        for a in (attr, attr.replace("weight", "bias")):
            param = getattr(holder, a, None)
            if isinstance(param, nn.Parameter):
                raw.append((param, f"{name}:{a}", out_axis(holder, a),
                            [lay.row(first, i, block, stride) for i in local], root))

    for holder, attr, first, block, stride in lay.q_parts():  # the query rows (and an output gate's)
        rows(holder, attr, first, channels, channels, block, stride)
    if not lay.query_only:  # multi-query: the one key/value head belongs to no structure, and stays
        rows(*lay.k, kv_local, kv_root)
        rows(*lay.v, kv_local, kv_root)
    for linear in lay.extra_rows:  # heads contiguous, whatever the fused projection's stride
        rows(linear, "weight", 0, channels, channels, 1, hd)
    raw.extend((getattr(holder, attr), f"{name}:{attr}", 0, channels, channels) for holder, attr in lay.head_params)
    if not lay.query_only:
        raw.extend((getattr(holder, attr), f"{name}:{attr}", 0, kv_local, kv_root) for holder, attr in lay.kv_params)
    heads = list(range(lay.heads))  # a row per head, counted at the head's first channel (as bias tables)
    raw.extend((getattr(holder, a), f"{name}:{a}", 0, heads, [h * hd for h in heads]) for holder, attr in lay.head_rows
               for a in dict.fromkeys((attr, attr.replace("weight", "bias"))) if isinstance(getattr(holder, a, None), nn.Parameter))
    raw.extend(bias_slices(table, f"{name}:bias_table", hd) for table in lay.bias_cols)
    raw.append((lay.out.weight, f"{name}:out.weight", in_axis(lay.out), channels, channels))
    unit_of = torch.tensor([c // hd // lay.q_per_unit for c in channels], dtype=torch.long)
    return GroupSlices(name=name, root=module, channels=len(channels), slices=merge_slices(raw), tp_group=None,
                       unit_of=unit_of, remove=HeadRemoval(adapter, name, module, lay), macs_module=lay.macs_module,
                       kind="heads")


def find_head_groups(model: nn.Module, ignored: list[nn.Module]) -> tuple[list[GroupSlices], dict[str, str]]:
    """A head group for every attention module an adapter recognises (none inside an ignored module),
    and the attention modules it recognised but cannot prune by heads, with the reason."""
    ignored_ids = {id(m) for m in ignored}
    groups, skipped = [], {}
    for name, module in model.named_modules():
        adapter = adapter_for(module)
        if adapter is None or any(id(m) in ignored_ids for m in module.modules()):
            continue
        try:
            group = head_group(name, module, adapter)
        except Unsupported as why:
            skipped[name] = str(why)
            continue
        if group.n_units > 1:
            groups.append(group)
    return couple_shared_heads(model, groups, skipped), skipped


def claimed_axes(groups: list[GroupSlices]) -> set[tuple[int, int]]:
    """(parameter id, dim) of every axis a head group owns."""
    return {(id(s.param), s.dim) for g in groups for s in g.slices}


def _kept_kv_axes(heads: list[GroupSlices]) -> set[tuple[int, int]]:
    """The rows of a multi-query module's one key/value head: no structure's, and still no torch-pruning
    group's (cut as channels they would split the head; rooting a group there can loop forever)."""
    axes = set()
    for g in heads:
        lay = getattr(g.remove, "layout", None)
        if lay is not None and lay.query_only:
            for holder, attr, _ in (lay.k, lay.v):
                for a in (attr, attr.replace("weight", "bias")):
                    if isinstance(getattr(holder, a, None), nn.Parameter):
                        axes.add((id(getattr(holder, a)), out_axis(holder, a)))
    return axes


def _fenced_axes(model: nn.Module, heads: list[GroupSlices]) -> set[tuple[int, int]]:
    """Every axis of a recognised attention module that got no head group (ignored, or refused): cut as
    plain channels it would break the module's head reshape, so no torch-pruning group may touch it."""
    with_group = {id(g.root) for g in heads}
    fenced = set()
    for module in model.modules():
        if id(module) in with_group or adapter_for(module) is None:
            continue
        for p in module.parameters():
            fenced |= {(id(p), d) for d in range(min(p.dim(), 2))}
    return fenced


def conflict(group: GroupSlices, claimed: set[tuple[int, int]], transposed: set[int] = frozenset()) -> str | None:
    """Why a torch-pruning group may not be decayed as plain channels, or None: it shares an axis with
    a head group, or it cuts a fused qkv projection's rows (`transposed`: ids of Conv1D weights, whose
    output channels are dim 1)."""
    for s in group.slices:
        if (id(s.param), s.dim) in claimed:
            return f"{s.name} belongs to attention heads, which are pruned as whole heads"
        module_name = s.name.rsplit(".", 1)[0]
        if s.dim == int(id(s.param) in transposed) and module_name.rsplit(".", 1)[-1] in FUSED_QKV_NAMES:
            return (f"{module_name} is a fused q/k/v projection that no head adapter recognises; it is "
                    "never pruned as plain channels")
    return None


class HeadClaims:
    """The head groups of a model and every axis they own or fence, found BEFORE torch-pruning's groups.

    A q/k/v projection never roots a torch-pruning group (`skip_root`): such a group would only be
    dropped for cutting heads apart, and building it can run forever. torch-pruning 1.6.1 treats
    `scaled_dot_product_attention` (q, k and v) and eager attention's `matmul` (q and k) as
    element-wise ops, so those projections form one group, which also runs through the rotary
    embedding's `rotate_half` (`cat` of two slices, a `_ConcatIndexMapping`). With grouped-query
    attention (`repeat_kv`: expand + reshape, k/v narrower than q) every lap of that cycle shifts the
    indices by the k width (v_proj of a Llama with 4 query / 2 key-value heads of 8: 0-15, then
    16-31, 32-47, ...), so `has_pruning_op` in `get_pruning_group`'s `_fix_dependency_graph_non_recursive`
    never sees a repeat and the group never finishes (sdpa and eager alike; with as many key/value
    heads as query heads it closes in milliseconds). Tracing itself, the causal mask and use_cache
    are not involved: the graph is built in a fraction of a second."""

    def __init__(self, model: nn.Module, ignored: list[nn.Module]):
        self.heads, self.skipped = find_head_groups(model, ignored)
        self.axes = claimed_axes(self.heads) | _fenced_axes(model, self.heads) | _kept_kv_axes(self.heads)
        self.transposed = {id(m.weight) for m in model.modules() if is_conv1d(m)}

    def skip_root(self, name: str, module: nn.Module) -> str | None:
        """Why `module` may not root a torch-pruning group (its output rows belong to heads), or None."""
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and (id(weight), out_axis(module)) in self.axes:
            return f"{name}.weight belongs to attention heads, which are pruned as whole heads"
        return None


def add_head_groups(model: nn.Module, groups: list[GroupSlices], skipped: dict[str, str],
                    ignored: list[nn.Module], claims: HeadClaims | None = None) -> list[GroupSlices]:
    """`groups` without those that cut attention heads apart, plus one head group per attention
    module; the reasons for what was left out go to `skipped`."""
    claims = claims if claims is not None else HeadClaims(model, ignored)
    heads = claims.heads
    skipped.update(claims.skipped)
    claimed, kept = claims.axes, []
    for g in groups:
        why = conflict(g, claimed, claims.transposed)
        if why is None:
            kept.append(g)
        else:
            skipped[g.name] = why
    return kept + heads


HISTORY_TAG = "dpm:heads"  # a pruning-history entry [HISTORY_TAG, module name, query heads] (artifacts)


def head_history(pruned_heads: dict[str, list[int]]) -> list[list]:
    """Head removals as pruning-history entries, replayed after torch-pruning's own (`replay_heads`)."""
    return [[HISTORY_TAG, name, list(heads)] for name, heads in pruned_heads.items()]


def replay_heads(model: nn.Module, entry: list) -> None:
    """Apply one recorded head removal to a model rebuilt from its factory."""
    _, name, heads = entry
    module = model.get_submodule(name)
    if isinstance(module, nn.Embedding):  # a position bias table shared by layers (`shared_heads`)
        drop_bias_columns(module, heads)
        return
    adapter = adapter_for(module)
    if adapter is None:
        raise Unsupported(f"{name} is not an attention module dpm can prune by heads")
    layout = adapter.describe(name, module)
    HeadRemoval(adapter, name, module, layout)([h * layout.head_dim for h in heads])
