"""What else in an attention module belongs to its heads, beside the q/k/v rows and the output
projection's columns: layers that act within one head (kept), RMSNorms across all heads (their entries
leave with the head and they are rescaled, `heads._rescale_rms_norm`), and anything else, which is
refused with the reason (a convolution across heads, a parameter of the module's own)."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from .structures import Unsupported


def norms_across_heads(module: nn.Module, heads: int, kv: int, dim: int) -> tuple:
    """(q_norm, k_norm, their child names) where they are RMSNorms over all heads' channels, else None."""
    q_norm, k_norm = (rms_norm_across(module, n, width, dim) for n, width in (("q_norm", heads), ("k_norm", kv)))
    return q_norm, k_norm, [n for n, norm in (("q_norm", q_norm), ("k_norm", k_norm)) if norm is not None]


def norm_fields(q_norm: nn.Module | None, k_norm: nn.Module | None) -> dict:
    """HeadLayout fields for norms across heads: their entries leave with the head, and they are rescaled."""
    return dict(head_params=[(q_norm, "weight")] if q_norm is not None else [],
                kv_params=[(k_norm, "weight")] if k_norm is not None else [],
                rms_norms=[n for n in (q_norm, k_norm) if n is not None])


def rms_norm_across(module: nn.Module, child: str, heads: int, dim: int) -> nn.Module | None:
    """`module.child` when it is an RMSNorm over all channels of `heads` > 1 heads (OLMo 2, OLMoE,
    MiniMax-M2: x / sqrt(mean(x^2) + variance_epsilon) * weight, the weight one entry per channel)."""
    norm = getattr(module, child, None)
    params = dict(norm.named_parameters()) if isinstance(norm, nn.Module) else {}
    if (type(norm).__name__.endswith("RMSNorm") and isinstance(getattr(norm, "variance_epsilon", None), float)
            and list(params) == ["weight"] and tuple(params["weight"].shape) == (heads * dim,) and heads > 1):
        return norm
    return None


def refuse_other_layers(name: str, module: nn.Module, known: tuple[str, ...], head_dim: int,
                         own_known: tuple[str, ...] = ()) -> None:
    """Refuse attention with layers of its own beyond the projections, unless they act on one head's
    channels (a per-head q/k norm of head_dim, as Qwen3 and Gemma 3 have): a convolution across heads
    (ConvBERT, Nystromformer) changes when a head leaves. Parameters of the module's own are refused
    too, but for `own_known`, which the adapter removes with their heads (GPT-OSS's `sinks`)."""
    own = [attr for attr, p in module._parameters.items() if p is not None and attr not in own_known]
    if own:
        raise Unsupported(f"{name}: its own parameter {own[0]} {list(module._parameters[own[0]].shape)} is not "
                          "removed with a head")
    for child, sub in module.named_children():
        if child in known:
            continue
        shapes = {tuple(p.shape) for p in sub.parameters()}
        if shapes and shapes != {(head_dim,)}:
            raise Unsupported(f"{name}: {child} ({type(sub).__name__}) spans more than one head, so no head "
                              "can leave without changing it")


@dataclass
class HeadExtras:
    """What else of an attention module's own leaves with its heads (`per_head_extras`)."""

    channel_rows: list[nn.Linear]  # Linears with a row per head channel (an output gate: HRM, AFMoE)
    head_rows: list[tuple[nn.Module, str]]  # (holder, attribute) with a row per head (GPT-OSS's sinks, Laguna's gate)
    children: tuple[str, ...]  # the child modules above, known to `refuse_other_layers`
    own: tuple[str, ...]  # the module's own parameters above


# The module's own parameters that are one value per head, by name.
PER_HEAD_PARAMS = ("sinks", "gate_bias")  # GPT-OSS's attention sinks; Beam's output gate bias


def per_head_extras(module: nn.Module, heads: int, dim: int) -> HeadExtras:
    """Per-head parameters of the module's own (GPT-OSS: a learned logit per query head, `sinks`; Beam's
    `gate_bias`) and an output gate from a projection of its own, per head channel (AFMoE, HRM, Beam:
    `gate_proj`) or per head (Laguna's `g_proj`)."""
    own = {a: p for a, p in module._parameters.items() if p is not None}
    per_head = [a for a in PER_HEAD_PARAMS if a in own and tuple(own[a].shape) == (heads,)]
    gates = {n: sub for n, sub in module.named_children() if n in ("gate_proj", "g_proj")
             and isinstance(sub, nn.Linear) and sub.out_features in (heads * dim, heads)}
    gate_rows = [(g, "weight") for g in gates.values() if g.out_features == heads and dim > 1]
    return HeadExtras([g for g in gates.values() if g.out_features == heads * dim],
                      [(module, a) for a in per_head] + gate_rows, tuple(gates), tuple(per_head))
