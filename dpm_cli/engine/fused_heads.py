"""Head adapters for attention whose q, k and v come from one fused Linear: GPT-NeoX, Persimmon,
Phi-3, Falcon, GPTBigCode, ModernBERT, DeBERTa (v1). Each says at which rows of the fused projection
every head's q, k and v live (`HeadLayout`); the separate-projection families are in `head_adapters`."""
from __future__ import annotations

import copy

import torch.nn as nn

from .head_adapters import HeadAdapter, HeadLayout
from .head_parts import refuse_other_layers
from .structures import Unsupported


class GPTNeoXAttention(HeadAdapter):
    """Hugging Face GPT-NeoX (Pythia) attention: `query_key_value` rows are grouped by head ([q | k | v]
    of head 0, then of head 1, ...), `dense` reads the heads. The forward reshapes with -1: no head
    count to rebook."""

    family = "hf-neox"

    def matches(self, module: nn.Module) -> bool:
        return (isinstance(getattr(module, "query_key_value", None), nn.Linear)
                and isinstance(getattr(module, "dense", None), nn.Linear)
                and isinstance(getattr(module, "head_size", None), int) and hasattr(module, "rotary_ndims"))

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        dim, fused = module.head_size, module.query_key_value
        heads = fused.out_features // (3 * dim)
        if fused.out_features != 3 * heads * dim or module.dense.in_features != heads * dim:
            raise Unsupported(f"{name}: query_key_value has {fused.out_features} rows, not 3 x heads x {dim}")
        return HeadLayout(self.family, heads, heads, dim, (fused, "weight", 0), (fused, "weight", dim),
                          (fused, "weight", 2 * dim), module.dense, [], name, stride=3 * dim)

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        pass


class PersimmonAttention(HeadAdapter):
    """Hugging Face Persimmon (and Fuyu's language model) attention: `query_key_value` rows are grouped by
    head ([q | k | v] of head 0, then of head 1, ...), `dense` reads the heads; its q/k LayerNorms act on
    one head's head_dim channels, shared by every head. The forward splits by num_heads."""

    family = "hf-persimmon"

    def matches(self, module: nn.Module) -> bool:
        return (isinstance(getattr(module, "query_key_value", None), nn.Linear)
                and isinstance(getattr(module, "dense", None), nn.Linear)
                and all(isinstance(getattr(module, a, None), int) for a in ("num_heads", "head_dim", "rotary_ndims"))
                and hasattr(module, "qk_layernorm"))

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        heads, dim, fused = module.num_heads, module.head_dim, module.query_key_value
        refuse_other_layers(name, module, ("query_key_value", "dense"), dim)
        if fused.out_features != 3 * heads * dim or module.dense.in_features != heads * dim:
            raise Unsupported(f"{name}: query_key_value has {fused.out_features} rows, not 3 x {heads} x {dim}")
        return HeadLayout(self.family, heads, heads, dim, (fused, "weight", 0), (fused, "weight", dim),
                          (fused, "weight", 2 * dim), module.dense, [], name, stride=3 * dim)

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        module.num_heads = heads


class Phi3Attention(HeadAdapter):
    """Hugging Face Phi-3 / Phi-4 attention: `qkv_proj` rows are [q | k | v] (query heads, then key/value
    heads twice, x head_dim; grouped-query), `o_proj` reads the query heads. Its forward ends q at
    `config.num_attention_heads x head_dim`, and that config is the model's, shared by every layer: a
    module that loses heads gets its own shallow copy with its own counts (the model's config, which
    `save_pretrained` writes, is left to the saver)."""

    family = "hf-phi3"

    def matches(self, module: nn.Module) -> bool:
        return (isinstance(getattr(module, "qkv_proj", None), nn.Linear)
                and isinstance(getattr(module, "o_proj", None), nn.Linear)
                and all(isinstance(getattr(module, a, None), int)
                        for a in ("head_dim", "num_key_value_heads", "num_key_value_groups"))
                and isinstance(getattr(getattr(module, "config", None), "num_attention_heads", None), int))

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        dim, kv, heads = module.head_dim, module.num_key_value_heads, module.config.num_attention_heads
        rows = module.qkv_proj.out_features
        if rows != (heads + 2 * kv) * dim or module.o_proj.in_features != heads * dim or heads % kv \
                or heads // kv != module.num_key_value_groups:
            raise Unsupported(f"{name}: qkv_proj has {rows} rows, not ({heads} + 2 x {kv}) heads x {dim}")
        fused = module.qkv_proj
        return HeadLayout(self.family, heads, kv, dim, (fused, "weight", 0), (fused, "weight", heads * dim),
                          (fused, "weight", (heads + kv) * dim), module.o_proj, [], name)

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        config = copy.copy(module.config)
        config.num_attention_heads, config.num_key_value_heads = heads, layout.kv_after(heads)
        module.config, module.num_key_value_heads = config, layout.kv_after(heads)


class FalconAttention(HeadAdapter):
    """Hugging Face Falcon attention: one `query_key_value` in one of three row layouts, `dense` reads the
    query heads. New decoder architecture (Falcon-40B/180B, Falcon 2): a block per key/value head, its
    query heads then its key and value; multi-query (Falcon-7B): [q | k | v] with one key/value head,
    which stays while query heads leave one by one; otherwise [q, k, v] interleaved per head. The
    forward reshapes with num_heads / num_kv_heads. ALiBi models are refused: their position bias is
    built per head from the config's count at the model level."""

    family = "hf-falcon"

    def matches(self, module: nn.Module) -> bool:
        return (isinstance(getattr(module, "query_key_value", None), nn.Linear)
                and isinstance(getattr(module, "dense", None), nn.Linear)
                and all(isinstance(getattr(module, a, None), int) for a in ("num_heads", "num_kv_heads", "head_dim"))
                and hasattr(module, "new_decoder_architecture") and hasattr(module, "multi_query"))

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        if getattr(getattr(module, "config", None), "alibi", False):
            raise Unsupported(f"{name}: ALiBi position bias is built per head from the config's head count")
        heads, kv, dim, fused = module.num_heads, module.num_kv_heads, module.head_dim, module.query_key_value
        if fused.out_features != (heads + 2 * kv) * dim or module.dense.in_features != heads * dim or heads % kv:
            raise Unsupported(f"{name}: query_key_value has {fused.out_features} rows, not ({heads} + 2 x {kv}) x {dim}")
        per_kv = heads // kv
        if module.new_decoder_architecture:  # [q x per_kv, k, v] per key/value head
            return HeadLayout(self.family, heads, kv, dim, (fused, "weight", 0), (fused, "weight", per_kv * dim),
                              (fused, "weight", (per_kv + 1) * dim), module.dense, [], name,
                              stride=(per_kv + 2) * dim, q_block=per_kv)
        if module.multi_query:  # [q | k | v]
            return HeadLayout(self.family, heads, kv, dim, (fused, "weight", 0), (fused, "weight", heads * dim),
                              (fused, "weight", (heads + kv) * dim), module.dense, [], name)
        return HeadLayout(self.family, heads, kv, dim, (fused, "weight", 0), (fused, "weight", dim),  # [q, k, v] per head
                          (fused, "weight", 2 * dim), module.dense, [], name, stride=3 * dim)

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        module.num_heads = heads
        if module.new_decoder_architecture or not module.multi_query:
            module.num_kv_heads = layout.kv_after(heads)
        if hasattr(module, "num_key_value_groups"):  # repeat_kv: multi-query's one head serves fewer now
            module.num_key_value_groups = heads // layout.kv_after(heads)


class GPTBigCodeAttention(HeadAdapter):
    """Hugging Face GPTBigCode attention (StarCoder, SantaCoder): one `c_attn` Linear, `c_proj` reads the
    query heads. Multi-query (its default): rows [q | k | v] with one key/value head of head_dim, which
    stays while query heads leave one by one; otherwise [q, k, v] interleaved per head. The forward
    splits at embed_dim (the queries' width) and kv_dim, and repeats k/v num_key_value_groups times."""

    family = "hf-bigcode"

    def matches(self, module: nn.Module) -> bool:
        return (isinstance(getattr(module, "c_attn", None), nn.Linear) and isinstance(getattr(module, "c_proj", None), nn.Linear)
                and all(isinstance(getattr(module, a, None), int) for a in ("num_heads", "head_dim", "kv_heads", "kv_dim", "embed_dim"))
                and hasattr(module, "multi_query"))

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        if getattr(module, "is_cross_attention", False):
            raise Unsupported(f"{name}: cross-attention (queries from q_attn) has no head rule in dpm")
        heads, kv, dim, fused = module.num_heads, module.kv_heads, module.head_dim, module.c_attn
        if fused.out_features != (heads + 2 * kv) * dim or module.c_proj.in_features != heads * dim:
            raise Unsupported(f"{name}: c_attn has {fused.out_features} rows, not ({heads} + 2 x {kv}) x {dim}")
        if module.multi_query:  # [q | k | v]
            return HeadLayout(self.family, heads, 1, dim, (fused, "weight", 0), (fused, "weight", heads * dim),
                              (fused, "weight", (heads + 1) * dim), module.c_proj, [], name)
        return HeadLayout(self.family, heads, heads, dim, (fused, "weight", 0), (fused, "weight", dim),  # [q, k, v] per head
                          (fused, "weight", 2 * dim), module.c_proj, [], name, stride=3 * dim)

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        kv = layout.kv_after(heads)
        module.num_heads, module.kv_heads, module.num_key_value_groups = heads, kv, heads // kv
        module.embed_dim, module.kv_dim = heads * layout.head_dim, kv * layout.head_dim


class ModernBertAttention(HeadAdapter):
    """Hugging Face ModernBERT attention: `Wqkv` rows are [q | k | v], each heads x head_dim, `Wo` reads
    the heads. Its forward views the fused output as (3, -1, head_dim), so no count needs rebooking."""

    family = "hf-modernbert"

    def matches(self, module: nn.Module) -> bool:
        return (isinstance(getattr(module, "Wqkv", None), nn.Linear) and isinstance(getattr(module, "Wo", None), nn.Linear)
                and isinstance(getattr(module, "head_dim", None), int))

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        dim, fused = module.head_dim, module.Wqkv
        refuse_other_layers(name, module, ("Wqkv", "Wo"), dim)
        if fused.out_features % (3 * dim) or module.Wo.in_features != fused.out_features // 3:
            raise Unsupported(f"{name}: Wqkv has {fused.out_features} rows, not 3 x heads x {dim}")
        inner = fused.out_features // 3
        heads = inner // dim
        return HeadLayout(self.family, heads, heads, dim, (fused, "weight", 0), (fused, "weight", inner),
                          (fused, "weight", 2 * inner), module.Wo, [], name)

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        pass  # the forward reads the head count from Wqkv's output


class DebertaAttention(HeadAdapter):
    """Hugging Face DeBERTa (v1) attention: `self.in_proj` rows are grouped by head ([q | k | v] of head 0,
    then of head 1, ...: its forward views them as (heads, 3 x head_dim) and chunks), `self.q_bias` and
    `self.v_bias` hold one entry per head channel, the relative-position projections `pos_proj` and
    `pos_q_proj` are per head too, and `output.dense` reads the heads. Talking heads (a Linear across
    heads) are refused."""

    family = "hf-deberta"
    POSITION = ("pos_proj", "pos_q_proj")

    def matches(self, module: nn.Module) -> bool:
        inner = getattr(module, "self", None)
        return (isinstance(getattr(inner, "in_proj", None), nn.Linear)
                and all(isinstance(getattr(inner, a, None), nn.Parameter) for a in ("q_bias", "v_bias"))
                and all(isinstance(getattr(inner, a, None), int) for a in ("num_attention_heads", "attention_head_size"))
                and isinstance(getattr(getattr(module, "output", None), "dense", None), nn.Linear))

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        s, where = module.self, f"{name}.self"
        heads, dim, fused = s.num_attention_heads, s.attention_head_size, s.in_proj
        if getattr(s, "head_logits_proj", None) is not None or getattr(s, "head_weights_proj", None) is not None:
            raise Unsupported(f"{where}: talking heads (head_logits_proj) mix the heads")
        refuse_other_layers(where, s, ("in_proj", *self.POSITION), dim, own_known=("q_bias", "v_bias"))
        if fused.out_features != 3 * heads * dim or module.output.dense.in_features != heads * dim:
            raise Unsupported(f"{where}: in_proj has {fused.out_features} rows, not 3 x {heads} x {dim}")
        extra = [getattr(s, n) for n in self.POSITION if isinstance(getattr(s, n, None), nn.Linear)]
        return HeadLayout(self.family, heads, heads, dim, (fused, "weight", 0), (fused, "weight", dim),
                          (fused, "weight", 2 * dim), module.output.dense, extra, where, stride=3 * dim,
                          head_params=[(s, "q_bias"), (s, "v_bias")])

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        module.self.num_attention_heads = heads
        module.self.all_head_size = heads * layout.head_dim
