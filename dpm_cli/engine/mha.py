"""nn.MultiheadAttention after head removal: same parameters and state_dict, a narrower inner width.

torch's MultiheadAttention requires num_heads * head_dim == embed_dim (its forward checks it), but
once heads are removed the q/k/v inner width is smaller than the embedding. The head adapter switches
a pruned module's class to this subclass, which runs the same computation at the pruned width: packed
in-projection, scaled dot-product attention per head, output projection.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (True = not allowed, torch's convention) as an additive float mask."""
    if mask is None or mask.dtype != torch.bool:
        return mask if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """A MultiheadAttention whose num_heads * head_dim may be smaller than embed_dim."""

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
            batch_first = False
        else:
            batch_first = self.batch_first
        if not batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        heads, dim = self.num_heads, self.head_dim
        inner = heads * dim
        w_q, w_k, w_v = self.in_proj_weight.split(inner)
        b_q, b_k, b_v = self.in_proj_bias.split(inner) if self.in_proj_bias is not None else (None,) * 3
        bsz, q_len, k_len = query.shape[0], query.shape[1], key.shape[1]
        q = F.linear(query, w_q, b_q).view(bsz, q_len, heads, dim).transpose(1, 2)
        k = F.linear(key, w_k, b_k).view(bsz, k_len, heads, dim).transpose(1, 2)
        v = F.linear(value, w_v, b_v).view(bsz, k_len, heads, dim).transpose(1, 2)
        mask = _additive(attn_mask, q.dtype)
        if mask is not None and mask.dim() == 3:
            mask = mask.view(bsz, heads, q_len, k_len)
        padding = _additive(key_padding_mask, q.dtype)
        if padding is not None:
            padding = padding.view(bsz, 1, 1, k_len)
            mask = padding if mask is None else mask + padding
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * dim ** -0.5) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            elif is_causal:
                scores = scores + _additive(torch.ones(q_len, k_len, dtype=torch.bool,
                                                       device=q.device).triu(1), q.dtype)
            weights = F.dropout(scores.softmax(dim=-1), dropout, self.training)
            out = weights @ v
            weights = weights.mean(dim=1) if average_attn_weights else weights
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                 is_causal=is_causal and mask is None)
        out = self.out_proj(out.transpose(1, 2).reshape(bsz, q_len, inner))
        if not batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(1)
            weights = weights.squeeze(0) if weights is not None else None
        return out, weights
