"""Head adapter for Conformer self-attention (Wav2Vec2-Conformer, Wav2Vec2-BERT, SeamlessM4T's speech
encoder, FastSpeech2-Conformer): separate `linear_q`/`linear_k`/`linear_v`/`linear_out`, and for
relative positions (Transformer-XL style) a `linear_pos` projection whose rows are per head and two
bias vectors `pos_bias_u`, `pos_bias_v` [heads, head size], a row per head. All of them leave with the
head (`HeadLayout.extra_rows`, `head_rows`)."""
from __future__ import annotations

import torch.nn as nn

from .head_adapters import HeadAdapter, HeadLayout
from .head_parts import refuse_other_layers
from .structures import Unsupported


class ConformerAttention(HeadAdapter):
    family = "hf-conformer"
    PROJECTIONS = ("linear_q", "linear_k", "linear_v", "linear_out")
    POSITION_BIASES = ("pos_bias_u", "pos_bias_v")

    def matches(self, module: nn.Module) -> bool:
        return (all(isinstance(getattr(module, n, None), nn.Linear) for n in self.PROJECTIONS)
                and isinstance(getattr(module, "num_heads", None), int) and self._head_dim(module) is not None)

    @staticmethod
    def _head_dim(module: nn.Module) -> int | None:
        return next((d for d in (getattr(module, "head_size", None), getattr(module, "head_dim", None))
                     if isinstance(d, int)), None)

    def describe(self, name: str, module: nn.Module) -> HeadLayout:
        heads, dim = module.num_heads, self._head_dim(module)
        widths = {n: getattr(module, n).out_features for n in self.PROJECTIONS[:3]}
        if set(widths.values()) != {heads * dim} or module.linear_out.in_features != heads * dim:
            raise Unsupported(f"{name}: {widths} rows, not {heads} heads x {dim} each")
        # a distance embedding of head_dim (Wav2Vec2-BERT's relative_key) is shared by every head
        shared = tuple(c for c, sub in module.named_children() if isinstance(sub, nn.Embedding) and sub.embedding_dim == dim)
        refuse_other_layers(name, module, (*self.PROJECTIONS, "linear_pos", *shared), dim, own_known=self.POSITION_BIASES)
        pos = getattr(module, "linear_pos", None)
        extra = [pos] if isinstance(pos, nn.Linear) else []
        if extra and pos.out_features != heads * dim:
            raise Unsupported(f"{name}: linear_pos has {pos.out_features} rows, not {heads} heads x {dim}")
        biases = [(module, a) for a in self.POSITION_BIASES if getattr(module, a, None) is not None]
        if any(tuple(getattr(m, a).shape) != (heads, dim) for m, a in biases):
            raise Unsupported(f"{name}: pos_bias_u/pos_bias_v are not [{heads}, {dim}]")
        return HeadLayout(self.family, heads, heads, dim, (module.linear_q, "weight", 0),
                          (module.linear_k, "weight", 0), (module.linear_v, "weight", 0), module.linear_out, extra,
                          name, head_rows=biases)

    def rebook(self, module: nn.Module, layout: HeadLayout, heads: int) -> None:
        # Wav2Vec2-Conformer's and -BERT's rotary embedding views the layer's *input* (the residual width)
        # by num_heads x head_size, and nothing else of theirs reads the count (the heads are reshaped
        # with -1): there it stays. FastSpeech2-Conformer reshapes its heads by num_heads.
        if not hasattr(module, "_apply_rotary_embedding"):
            module.num_heads = heads
