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
the rows are gone). Adding an attention family (e.g. another fused-qkv layout) is one small class.
Channel numbering of a head group: channel c = q_head * head_dim + d; structure = key/value head.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp

from .conv1d import CONV1D_PRUNER, in_axis, is_conv1d, out_axis
from .structures import GroupSlices, Unsupported, merge_slices

# Last name parts of Linear layers that project to q, k and v at once: never pruned as plain channels.
FUSED_QKV_NAMES = ("qkv", "in_proj", "qkv_proj", "c_attn", "Wqkv", "query_key_value", "to_qkv")


@dataclass
class HeadLayout:
    """Where each head lives. Projections are (Linear, Conv1D or Parameter holder, attribute, row offset);
    a "row" is an output channel (a column of a Conv1D's [in, out] weight)."""

    family: str
    heads: int  # query heads
    kv_heads: int  # key/value heads (== heads unless grouped-query attention)
    head_dim: int
    q: tuple[nn.Module, str, int]  # (module, weight attribute, first row)
    k: tuple[nn.Module, str, int]
    v: tuple[nn.Module, str, int]
    out: nn.Module  # the output projection (Linear or Conv1D): its input channels follow the q channels
    extra_rows: list[nn.Linear] = field(default_factory=list)  # other per-channel producers (timm gate)
    macs_module: str = ""  # the module whose counted MACs (attention matmuls) scale with the heads

    @property
    def per_kv(self) -> int:
        return self.heads // self.kv_heads


class HeadAdapter:
    family = "base"

    def matches(self, module: nn.Module) -> bool:
        raise NotImplementedError

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        raise NotImplementedError

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        """Update the module's own head count after removal (`heads` query heads kept)."""
        raise NotImplementedError


class TimmAttention(HeadAdapter):
    """timm's fused-qkv `Attention` (ViT, DeiT, ...): qkv rows [q | k | v], each heads x head_dim."""

    family = "timm"

    def matches(self, module: nn.Module) -> bool:
        # Only the class whose forward reshapes by num_heads/attn_dim (other timm attention classes,
        # e.g. EVA's with separate q/v bias parameters, have their own layouts: no adapter yet).
        return (type(module).__module__.startswith("timm") and type(module).__name__ == "Attention"
                and isinstance(getattr(module, "qkv", None), nn.Linear)
                and isinstance(getattr(module, "proj", None), nn.Linear) and hasattr(module, "num_heads")
                and hasattr(module, "head_dim"))

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        if not isinstance(getattr(module, "norm", nn.Identity()), nn.Identity):
            raise Unsupported(f"{name}: attention output normalisation (scale_norm) mixes heads")
        heads, dim = module.num_heads, module.head_dim
        if module.qkv.out_features != 3 * heads * dim:
            raise Unsupported(f"{name}: qkv has {module.qkv.out_features} rows, not 3 x {heads} x {dim}")
        inner = heads * dim
        gate = [module.gate] if isinstance(getattr(module, "gate", None), nn.Linear) else []
        return HeadLayout(self.family, heads, heads, dim, (module.qkv, "weight", 0), (module.qkv, "weight", inner),
                          (module.qkv, "weight", 2 * inner), module.proj, gate, name)

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        module.num_heads = heads
        if hasattr(module, "attn_dim"):
            module.attn_dim = heads * layout.head_dim


class TorchMultiheadAttention(HeadAdapter):
    """torch's nn.MultiheadAttention with one packed in_proj_weight (torchvision's ViT, dpm's vit_tiny)."""

    family = "torch"

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, nn.MultiheadAttention)

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
            raise Unsupported(f"{name}: nn.MultiheadAttention with separate kdim/vdim, bias_k/bias_v or "
                              "add_zero_attn has no head rule in dpm")
        heads, dim = module.num_heads, module.head_dim
        inner = heads * dim
        return HeadLayout(self.family, heads, heads, dim, (module, "in_proj_weight", 0),
                          (module, "in_proj_weight", inner), (module, "in_proj_weight", 2 * inner),
                          module.out_proj, [], name)

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        from .mha import PrunedMultiheadAttention

        module.num_heads = heads
        # nn.MultiheadAttention's forward requires num_heads * head_dim == embed_dim; the subclass
        # (same parameters and state_dict keys) computes attention at the pruned inner width.
        module.__class__ = PrunedMultiheadAttention


class HFSelfAttention(HeadAdapter):
    """Hugging Face BERT-style attention: `.self` holds query/key/value Linears and the head counts,
    `.output.dense` is the output projection (BERT, RoBERTa, MiniLM, ELECTRA, ...)."""

    family = "hf-bert"

    def matches(self, module: nn.Module) -> bool:
        inner = getattr(module, "self", None)
        return (isinstance(inner, nn.Module) and all(isinstance(getattr(inner, n, None), nn.Linear)
                                                     for n in ("query", "key", "value"))
                and hasattr(inner, "num_attention_heads") and hasattr(inner, "attention_head_size")
                and isinstance(getattr(getattr(module, "output", None), "dense", None), nn.Linear))

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        s = module.self
        return HeadLayout(self.family, s.num_attention_heads, s.num_attention_heads, s.attention_head_size,
                          (s.query, "weight", 0), (s.key, "weight", 0), (s.value, "weight", 0),
                          module.output.dense, [], f"{name}.self")

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        module.self.num_attention_heads = heads
        module.self.all_head_size = heads * layout.head_dim


class LlamaAttention(HeadAdapter):
    """Hugging Face Llama-style attention (q/k/v/o_proj, grouped-query): a structure is one key/value
    head with the query heads that share it. The forward reshapes with -1, so only counts change."""

    family = "hf-llama"

    def matches(self, module: nn.Module) -> bool:
        return (all(isinstance(getattr(module, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
                and hasattr(module, "head_dim") and hasattr(module, "num_key_value_groups"))

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        dim = module.head_dim
        heads, kv = module.q_proj.out_features // dim, module.k_proj.out_features // dim
        if heads % kv or heads // kv != module.num_key_value_groups:
            raise Unsupported(f"{name}: {heads} query heads do not share {kv} key/value heads evenly")
        return HeadLayout(self.family, heads, kv, dim, (module.q_proj, "weight", 0), (module.k_proj, "weight", 0),
                          (module.v_proj, "weight", 0), module.o_proj, [], name)

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        for attr, value in (("num_heads", heads), ("num_key_value_heads", heads // layout.per_kv)):
            if hasattr(module, attr):
                setattr(module, attr, value)


class GPT2Attention(HeadAdapter):
    """Hugging Face GPT-2 attention: `c_attn`, one Conv1D (weight [hidden, 3 x hidden]), outputs [q | k | v],
    each num_heads x head_dim; `c_proj` reads the heads. The forward splits at `split_size` and reshapes
    with -1: only num_heads and split_size change (embed_dim is the residual width). Cross-attention
    (queries from `q_attn`) is recognised, so fenced, but not pruned by heads."""

    family = "hf-gpt2"

    def matches(self, module: nn.Module) -> bool:
        return (is_conv1d(getattr(module, "c_attn", None)) and is_conv1d(getattr(module, "c_proj", None))
                and all(hasattr(module, a) for a in ("num_heads", "head_dim", "split_size")))

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        if getattr(module, "is_cross_attention", False) or hasattr(module, "q_attn"):
            raise Unsupported(f"{name}: cross-attention (keys and values from c_attn, queries from q_attn) "
                              "has no head rule in dpm")
        heads, dim = module.num_heads, module.head_dim
        inner = heads * dim
        if module.split_size != inner or module.c_attn.weight.shape[1] != 3 * inner:
            raise Unsupported(f"{name}: c_attn has {module.c_attn.weight.shape[1]} columns, not 3 x {heads} x {dim}")
        return HeadLayout(self.family, heads, heads, dim, (module.c_attn, "weight", 0),
                          (module.c_attn, "weight", inner), (module.c_attn, "weight", 2 * inner), module.c_proj,
                          [], name)

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        module.num_heads = heads
        module.split_size = heads * layout.head_dim


ADAPTERS: list[HeadAdapter] = [TimmAttention(), TorchMultiheadAttention(), HFSelfAttention(), LlamaAttention(),
                               GPT2Attention()]


class HeadRemoval:
    """Physical removal of whole heads from one attention module (called by compaction with the
    channels of the pruned structures), then the adapter's bookkeeping."""

    def __init__(self, adapter: HeadAdapter, name: str, module: nn.Module, layout: HeadLayout):
        self.adapter, self.name, self.module, self.layout = adapter, name, module, layout

    def q_heads(self, channels: list[int]) -> list[int]:
        """The query heads of the structures that own `channels` (whole key/value groups)."""
        lay = self.layout
        units = sorted({c // lay.head_dim // lay.per_kv for c in channels})
        return [u * lay.per_kv + i for u in units for i in range(lay.per_kv)]

    @torch.no_grad()
    def __call__(self, channels: list[int]) -> list[int]:
        """Remove the heads that own `channels`; return their query-head numbers (before removal)."""
        lay, hd = self.layout, self.layout.head_dim
        q_heads = self.q_heads(channels)
        kv_heads = sorted({h // lay.per_kv for h in q_heads})
        q_cols = [h * hd + d for h in q_heads for d in range(hd)]
        kv_rows = [j * hd + d for j in kv_heads for d in range(hd)]
        rows: dict[int, tuple[nn.Module, str, list[int]]] = {}
        for (holder, attr, first), idxs in ((lay.q, q_cols), (lay.k, kv_rows), (lay.v, kv_rows)):
            rows.setdefault(id(holder), (holder, attr, []))[2].extend(first + i for i in idxs)
        for holder, attr, idxs in rows.values():
            _drop_rows(holder, attr, sorted(idxs))
        for linear in lay.extra_rows:
            tp.prune_linear_out_channels(linear, q_cols)
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
    for name in (attr, attr.replace("weight", "bias")):
        param = getattr(holder, name, None)
        if isinstance(param, nn.Parameter):
            keep = torch.tensor(sorted(set(range(param.shape[0])) - set(rows)), dtype=torch.long,
                                device=param.device)
            setattr(holder, name, nn.Parameter(param.detach().index_select(0, keep), param.requires_grad))


def head_group(name: str, module: nn.Module, adapter: HeadAdapter) -> GroupSlices:
    """The group of `module`'s heads: every q/k/v row and output-projection column, one structure per
    key/value head (with its query heads)."""
    lay = adapter.describe(name, module)
    hd, per_kv = lay.head_dim, lay.per_kv
    channels = list(range(lay.heads * hd))
    kv_local = list(range(lay.kv_heads * hd))
    kv_root = [(j // hd) * per_kv * hd + j % hd for j in kv_local]  # a kv row belongs to its first q head
    raw = []

    def rows(holder: nn.Module, attr: str, first: int, local: list[int], root: list[int]) -> None:
        for a in (attr, attr.replace("weight", "bias")):
            param = getattr(holder, a, None)
            if isinstance(param, nn.Parameter):
                raw.append((param, f"{name}:{a}", out_axis(holder, a), [first + i for i in local], root))

    rows(*lay.q, channels, channels)
    rows(*lay.k, kv_local, kv_root)
    rows(*lay.v, kv_local, kv_root)
    for linear in lay.extra_rows:
        rows(linear, "weight", 0, channels, channels)
    raw.append((lay.out.weight, f"{name}:out.weight", in_axis(lay.out), channels, channels))
    unit_of = torch.tensor([c // hd // per_kv for c in channels], dtype=torch.long)
    return GroupSlices(name=name, root=module, channels=len(channels), slices=merge_slices(raw), tp_group=None,
                       unit_of=unit_of, remove=HeadRemoval(adapter, name, module, lay), macs_module=lay.macs_module,
                       kind="heads")


def find_head_groups(model: nn.Module, ignored: list[nn.Module]) -> tuple[list[GroupSlices], dict[str, str]]:
    """A head group for every attention module an adapter recognises (none inside an ignored module),
    and the attention modules it recognised but cannot prune by heads, with the reason."""
    ignored_ids = {id(m) for m in ignored}
    groups, skipped = [], {}
    for name, module in model.named_modules():
        adapter = next((a for a in ADAPTERS if a.matches(module)), None)
        if adapter is None or any(id(m) in ignored_ids for m in module.modules()):
            continue
        try:
            group = head_group(name, module, adapter)
        except Unsupported as why:
            skipped[name] = str(why)
            continue
        if group.n_units > 1:
            groups.append(group)
    return groups, skipped


def claimed_axes(groups: list[GroupSlices]) -> set[tuple[int, int]]:
    """(parameter id, dim) of every axis a head group owns."""
    return {(id(s.param), s.dim) for g in groups for s in g.slices}


def _fenced_axes(model: nn.Module, heads: list[GroupSlices]) -> set[tuple[int, int]]:
    """Every axis of a recognised attention module that got no head group (ignored, or refused): cut as
    plain channels it would break the module's head reshape, so no torch-pruning group may touch it."""
    with_group = {id(g.root) for g in heads}
    fenced = set()
    for module in model.modules():
        if id(module) in with_group or not any(a.matches(module) for a in ADAPTERS):
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
        self.axes = claimed_axes(self.heads) | _fenced_axes(model, self.heads)
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
    adapter = next((a for a in ADAPTERS if a.matches(module)), None)
    if adapter is None:
        raise Unsupported(f"{name} is not an attention module dpm can prune by heads")
    layout = adapter.describe(name, module)
    HeadRemoval(adapter, name, module, layout)([h * layout.head_dim for h in heads])
