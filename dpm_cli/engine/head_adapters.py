"""Head adapters: one small class per attention family that says where each head lives.

An adapter is three methods: `matches(module)`, `describe(name, module) -> HeadLayout` (which parameter
rows/columns belong to which head) and `rebook(module, layout, kept_q_heads)` (attribute updates after
the rows are gone). Adding an attention family is one small class here (fused q/k/v layouts:
`fused_heads`), listed in `heads.ADAPTERS`; `heads.py` turns layouts into head groups and removes heads.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from .conv1d import is_conv1d
from .head_parts import norm_fields, norms_across_heads, per_head_extras, refuse_other_layers
from .structures import Unsupported


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
    stride: int = 0  # rows from one block of heads to the next; 0: the block's own rows (heads contiguous)
    q_block: int = 1  # query heads per block (Falcon's grouped rows: a key/value head's queries, its k, its v)
    q_gate: bool = False  # q holds each query head's rows, then its output gate's (Qwen3.5, Qwen3-Next)
    # relative position bias tables [buckets, query heads]: column h is head h's (T5's first layer)
    bias_cols: list[nn.Embedding] = field(default_factory=list)
    # the module's own vectors with one entry per query-head channel: (holder, attribute) (DeBERTa's q_bias, v_bias)
    head_params: list[tuple[nn.Module, str]] = field(default_factory=list)
    # the module's own parameters [heads, ...] with a row per query head: (holder, attribute) (Conformer's pos_bias_u/v)
    head_rows: list[tuple[nn.Module, str]] = field(default_factory=list)
    # vectors with one entry per key/value-head channel (OLMo 2's k_norm weight across all key/value heads)
    kv_params: list[tuple[nn.Module, str]] = field(default_factory=list)
    # RMSNorms across all heads (OLMo 2's q_norm, k_norm): their mean runs over every head's channels, so
    # when heads leave (their channels exact zeros by then) the weight and eps are rescaled (`heads.HeadRemoval`)
    rms_norms: list[nn.Module] = field(default_factory=list)

    @property
    def per_kv(self) -> int:
        return self.heads // self.kv_heads

    @property
    def query_only(self) -> bool:
        """Multi-query attention (one key/value head serves every query head: Falcon-7B, StarCoder,
        Gemma 2B): a structure is one query head, its q rows and output columns; the key/value head stays."""
        return self.kv_heads == 1 and self.heads > 1

    @property
    def q_per_unit(self) -> int:
        """Query heads per structure: a key/value head's query heads, or one (multi-query)."""
        return 1 if self.query_only else self.per_kv

    @property
    def units(self) -> int:
        """Structures (what can leave): key/value heads, or query heads (multi-query)."""
        return self.heads // self.q_per_unit

    def kv_after(self, kept: int) -> int:
        """Key/value heads left with `kept` query heads."""
        return 1 if self.query_only else kept // self.per_kv

    def row(self, first: int, channel: int, block: int = 1, stride: int = 0) -> int:
        """The row of head channel `channel` (head * head_dim + d) in a projection whose heads start at
        `first` and come in blocks of `block` contiguous heads, one block every `stride` rows (this
        projection's own, else the layout's)."""
        head, d = divmod(channel, self.head_dim)
        outer, inner = divmod(head, block)
        return first + outer * (stride or self.stride or block * self.head_dim) + inner * self.head_dim + d

    def q_parts(self) -> list[tuple[nn.Module, str, int, int, int]]:
        """(holder, attribute, first row, block, stride) of the query rows, and of the output gate's
        rows where q holds one after each head (a head's q rows, then its gate rows, per head)."""
        holder, attr, first = self.q
        if not self.q_gate:
            return [(holder, attr, first, self.q_block, 0)]
        return [(holder, attr, first + part * self.head_dim, 1, 2 * self.head_dim) for part in (0, 1)]


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
    `.output.dense` is the output projection (BERT, RoBERTa, MiniLM, ELECTRA, ...). DeBERTa-v2/v3 names
    them query_proj/key_proj/value_proj; its relative-position projections (`pos_key_proj`,
    `pos_query_proj`, or q/k themselves with share_att_key) are per head too and leave with them."""

    family = "hf-bert"
    NAMES = (("query", "key", "value"), ("query_proj", "key_proj", "value_proj"))
    POSITION = ("pos_key_proj", "pos_query_proj")  # DeBERTa-v2 without share_att_key

    def _names(self, inner: nn.Module) -> tuple[str, ...] | None:
        return next((n for n in self.NAMES if all(isinstance(getattr(inner, a, None), nn.Linear) for a in n)), None)

    @staticmethod
    def _inner_name(module: nn.Module) -> str:
        """The child holding q/k/v: `self` (BERT), or `attention` (Data2Vec-vision, MobileViT)."""
        return "self" if isinstance(getattr(module, "self", None), nn.Module) else "attention"

    def matches(self, module: nn.Module) -> bool:
        child = self._inner_name(module)
        inner = getattr(module, child, None)
        names = self._names(inner) if isinstance(inner, nn.Module) else None
        out = getattr(getattr(module, "output", None), "dense", None)
        if names is None or not isinstance(out, nn.Linear):
            return False
        # under `attention`, only where the output projection reads the heads: a transformer layer's
        # `attention` and `output.dense` are its attention and its FFN's down projection
        if child == "attention" and out.in_features != getattr(inner, names[0]).out_features:
            return False
        return hasattr(inner, "num_attention_heads") and hasattr(inner, "attention_head_size")

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        inner = self._inner_name(module)
        s = getattr(module, inner)
        q, k, v = self._names(s)
        refuse_other_layers(f"{name}.{inner}", s, (q, k, v, *self.POSITION), s.attention_head_size)
        extra = [getattr(s, n) for n in self.POSITION if isinstance(getattr(s, n, None), nn.Linear)]
        return HeadLayout(self.family, s.num_attention_heads, s.num_attention_heads, s.attention_head_size,
                          (getattr(s, q), "weight", 0), (getattr(s, k), "weight", 0), (getattr(s, v), "weight", 0),
                          module.output.dense, extra, f"{name}.{inner}")

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        inner = getattr(module, self._inner_name(module))
        inner.num_attention_heads = heads
        inner.all_head_size = heads * layout.head_dim


class LlamaAttention(HeadAdapter):
    """Hugging Face Llama-style attention (q/k/v/o_proj, grouped-query): a structure is one key/value
    head with the query heads that share it (and their attention sinks, GPT-OSS; q/k norms across all
    heads are rescaled when heads leave, OLMo 2). The forward reshapes with -1, so only counts change.
    Phi (phi-2) is the same layout with the output projection named `dense`, LFM2 and MLCD `out_proj`;
    Qwen3.5 and Qwen3-Next keep an output gate per head in q_proj (each head's q rows, then its gate rows)."""

    family = "hf-llama"
    OWN = ("q_proj", "k_proj", "v_proj", "o_proj", "dense", "out_proj")

    def matches(self, module: nn.Module) -> bool:
        return (all(isinstance(getattr(module, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj"))
                and isinstance(_out_proj(module), nn.Linear)
                and hasattr(module, "head_dim") and hasattr(module, "num_key_value_groups"))

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        dim = module.head_dim
        heads, kv = module.q_proj.out_features // dim, module.k_proj.out_features // dim
        # an output gate per head in q_proj (Qwen3.5, Qwen3-Next): twice the rows the output reads
        gated = module.q_proj.out_features == 2 * _out_proj(module).in_features
        heads //= 2 if gated else 1
        q_norm, k_norm, across = norms_across_heads(module, heads, kv, dim)
        extras = per_head_extras(module, heads, dim)
        refuse_other_layers(name, module, (*self.OWN, *across, *extras.children), dim, own_known=extras.own)
        if heads % kv or heads // kv != module.num_key_value_groups:
            raise Unsupported(f"{name}: {heads} query heads do not share {kv} key/value heads evenly")
        if gated and across:
            raise Unsupported(f"{name}: {across[0]} spans the heads of a gated q_proj")
        return HeadLayout(self.family, heads, kv, dim, (module.q_proj, "weight", 0), (module.k_proj, "weight", 0),
                          (module.v_proj, "weight", 0), _out_proj(module), extras.channel_rows, name, q_gate=gated,
                          head_rows=extras.head_rows, **norm_fields(q_norm, k_norm))

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        kv = layout.kv_after(heads)
        for attr, value in (("num_heads", heads), ("num_key_value_heads", kv), ("num_key_value_groups", heads // kv)):
            if hasattr(module, attr):
                setattr(module, attr, value)


def _out_proj(module: nn.Module) -> nn.Module | None:
    """The output projection: o_proj (Llama), dense (Phi) or out_proj (LFM2, MLCD)."""
    return next((getattr(module, n) for n in ("o_proj", "dense", "out_proj") if hasattr(module, n)), None)


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


class OpenAIGPTAttention(GPT2Attention):
    """Hugging Face OpenAI GPT (GPT-1) attention: GPT-2's `c_attn` / `c_proj` layout with the head count
    in `n_head` and no head_dim (each head is split_size / n_head wide; split_heads reshapes by n_head)."""

    family = "hf-openai-gpt"

    def matches(self, module: nn.Module) -> bool:
        return (is_conv1d(getattr(module, "c_attn", None)) and is_conv1d(getattr(module, "c_proj", None))
                and all(isinstance(getattr(module, a, None), int) for a in ("n_head", "split_size"))
                and not hasattr(module, "num_heads"))

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        heads, inner = module.n_head, module.split_size
        if inner % heads or module.c_attn.weight.shape[1] != 3 * inner:
            raise Unsupported(f"{name}: c_attn has {module.c_attn.weight.shape[1]} columns, not 3 x {inner} "
                              f"in {heads} heads")
        return HeadLayout(self.family, heads, heads, inner // heads, (module.c_attn, "weight", 0),
                          (module.c_attn, "weight", inner), (module.c_attn, "weight", 2 * inner), module.c_proj,
                          [], name)

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        module.n_head, module.split_size = heads, heads * layout.head_dim


class ProjectionAttention(HeadAdapter):
    """Hugging Face multi-head attention with separate q/k/v/output Linears and one head count, whose
    forward splits heads by `head_dim` (or by the head count it reads back): OPT, BART and its copies
    (mBART, Marian, Pegasus, Whisper, ...), GPT-J, GPT-Neo (q/k/v/out_proj), DistilBERT (q/k/v/out_lin),
    CTRL (Wq/Wk/Wv/dense).
    Grouped-query attention (`num_key_value_groups`) is LlamaAttention's. GTE, NomicBERT and Jina v3 keep
    no head count at all: their forward reshapes by head_dim with -1, so the count is the rows / head_dim
    (the preflight rehearses the removal before training, for any module this matches)."""

    family = "hf-qkv"
    # (query, key, value, output, head count attribute, head size attribute)
    LAYOUTS = (("q_proj", "k_proj", "v_proj", "out_proj", "num_heads", "head_dim"),
               ("q_proj", "k_proj", "v_proj", "out_proj", "num_attention_heads", "head_dim"),
               # the transformers 5 vision encoders (ViT, DeiT, DINOv2, ...): no grouped-query attributes
               ("q_proj", "k_proj", "v_proj", "o_proj", "num_attention_heads", "head_dim"),
               ("q_proj", "k_proj", "v_proj", "o_proj", "num_heads", "head_dim"),  # DINOv3
               ("q_lin", "k_lin", "v_lin", "out_lin", "n_heads", "attention_head_size"),
               ("q_lin", "k_lin", "v_lin", "out_lin", "n_heads", "head_dim"),  # XLM, Flaubert
               ("Wq", "Wk", "Wv", "dense", "num_heads", "head_dim"),  # CTRL
               # MPNet (its position bias is the encoder's, shared by all layers: `shared_heads`)
               ("q", "k", "v", "o", "num_attention_heads", "attention_head_size"),
               # InternVL's and Qianfan-OCR's vision towers (q/k norms over all heads: rescaled as OLMo 2's)
               ("q_proj", "k_proj", "v_proj", "projection_layer", "num_heads", "head_dim"),
               ("q_proj", "k_proj", "v_proj", "Wo", "num_heads", "head_dim"),  # ModernBERT's decoder (Ettin)
               # ALBERT: one attention shared by every layer; its LayerNorm follows the residual sum
               ("query", "key", "value", "dense", "num_attention_heads", "attention_head_size"),
               ("q_proj", "k_proj", "v_proj", "o_proj", None, "head_dim"))  # GTE, NomicBERT, Jina v3: no count

    def _layout(self, module: nn.Module) -> tuple[str, ...] | None:
        if hasattr(module, "num_key_value_groups"):
            return None
        return next((lay for lay in self.LAYOUTS
                     if all(isinstance(getattr(module, n, None), nn.Linear) for n in lay[:4])
                     and all(isinstance(getattr(module, n, None), int) for n in lay[4:] if n)), None)

    def matches(self, module: nn.Module) -> bool:
        return self._layout(module) is not None

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        q, k, v, out, heads_attr, dim_attr = self._layout(module)
        dim = getattr(module, dim_attr)
        heads = getattr(module, heads_attr) if heads_attr else getattr(module, q).out_features // dim
        widths = {n: getattr(module, n).out_features for n in (q, k, v)}
        q_norm, k_norm, across = norms_across_heads(module, heads, heads, dim)
        # a LayerNorm on the residual sum after the output projection (ALBERT) leaves the heads alone
        residual = ("LayerNorm",) if isinstance(getattr(module, "LayerNorm", None), nn.LayerNorm) else ()
        refuse_other_layers(name, module, (q, k, v, out, *across, *residual), dim)
        if set(widths.values()) != {heads * dim}:
            raise Unsupported(f"{name}: {widths} rows, not {heads} heads x {dim} each")
        return HeadLayout(self.family, heads, heads, dim, (getattr(module, q), "weight", 0),
                          (getattr(module, k), "weight", 0), (getattr(module, v), "weight", 0),
                          getattr(module, out), [], name, **norm_fields(q_norm, k_norm))

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        if self._layout(module)[4]:
            setattr(module, self._layout(module)[4], heads)
        # older copies (XGLM, MVP) reshape the attention output to embed_dim, the heads' inner width;
        # MPNet to all_head_size
        for attr in ("embed_dim", "all_head_size"):
            if getattr(module, attr, None) == layout.heads * layout.head_dim:
                setattr(module, attr, heads * layout.head_dim)
