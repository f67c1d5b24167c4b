"""What dpm prunes in a transformers model: FFN intermediate width and attention heads; nothing else.

The FFN's input projection(s) root one group per layer whose channels are the intermediate units (the
down projection's input slice follows). Attention is pruned by whole heads: the projections of every
attention module a head adapter recognises (`engine.heads`, HEAD_FAMILIES below) are left to it; a
hidden index of any other attention is not a head, so those are protected, and so are the
pooler, the task head and the residual stream (which runs through LayerNorm and is skipped anyway).
Protection uses dpm's ordinary mechanism, the ignore list (`DPMConfig.ignore`).
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from ..engine.conv1d import is_conv1d, out_axis, root_types
from ..engine.experts import stacked_experts
from ..engine.heads import HeadLayout, adapter_for
from ..engine.structures import Unsupported
from ..errors import ConfigError

# Names (suffixes) of FFN input projections across the common families: BERT/RoBERTa/MiniLM/ViT/MPNet/
# DeBERTa, DistilBERT, Llama/Mistral/Qwen/Gemma (gate and up, pruned together), OPT/Phi/BART, GPT-NeoX/
# Falcon/BLOOM, T5, GPT-2 (a transformers Conv1D), GPT-Neo (c_fc as nn.Linear), GPT-J/CodeGen, MPT
# (ffn.up_proj), XLM/Flaubert (ffns.N.lin1), Jamba (feed_forward.gate_proj and up_proj), LFM2
# (feed_forward.w1 and w3, gate and up) and the speech encoders (Wav2Vec2, HuBERT, WavLM, Data2Vec-audio:
# feed_forward.intermediate_dense; Wav2Vec2-Conformer: ffn1 and ffn2, two per layer), XLNet (ff.layer_1),
# CTRL (ffn.0, a Sequential), Funnel (ffn.linear_1), ProphetNet (feed_forward.intermediate), RecurrentGemma (mlp_block) and ALBERT
# (albert_layers.N.ffn: one FFN shared by every layer, so a unit leaves every layer at once; its cost is
# counted once per layer it runs in).
# FFN input projections that fuse gate and up in one Linear split in two halves (Phi-3, GLM:
# gate_up_proj; ModernBERT: Wi): unit i is rows i and i + width (`engine.units.split_period`).
FUSED_PARTS = {"mlp.gate_up_proj": 2, "mlp.Wi": 2}
# A mixture of experts' shared expert with a width key of its own (Qwen2-MoE: shared_expert_intermediate_size);
# its layer is named after it ("layers.0.mlp.shared_expert"), so the key can be found (STACK_WIDTH_KEYS).
SHARED_EXPERT_INPUTS = ("mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj",
                        "feed_forward.shared_expert.gate_proj", "feed_forward.shared_expert.up_proj")  # Llama 4
# FFNs that are one of two in their layer (Wav2Vec2-Conformer's macaron ffn1 and ffn2): named apart.
TWIN_FFN_INPUTS = ("ffn1.intermediate_dense", "ffn2.intermediate_dense")
FFN_INPUTS = ("intermediate.dense", "ffn.lin1", "mlp.gate_proj", "mlp.up_proj", "mlp.fc1", "fc1",
              "mlp.dense_h_to_4h", "DenseReluDense.wi", "DenseReluDense.wi_0", "DenseReluDense.wi_1", "mlp.c_fc",
              "mlp.fc_in", "ffn.up_proj", "ffn.gate_proj", "lin1", "feed_forward.gate_proj",
              "feed_forward.up_proj", "feed_forward.w1", "feed_forward.w3", "feed_forward.intermediate_dense",
              *TWIN_FFN_INPUTS, "ff.layer_1", "ffn", "mlp.wi", "ffn.0", "feed_forward.intermediate",
              "mlp_block.gate_proj", "mlp_block.up_proj", "ffn.linear_1", *FUSED_PARTS, *SHARED_EXPERT_INPUTS)
FAMILIES = ("BERT-style, DistilBERT, ModernBERT, Llama-style, Phi-3/GLM, OPT/Phi, GPT-NeoX/Falcon, T5, GPT-2/GPT-Neo, "
            "stacked mixture-of-experts (Mixtral, Qwen-MoE, OLMoE, GraniteMoE), GPT-J/CodeGen, XLNet, CTRL, "
            "Funnel, ProphetNet and the speech encoders")
# The attention families whose heads dpm prunes (`engine.heads.ADAPTERS`), for messages.
HEAD_FAMILIES = ("BERT-style (and DeBERTa v1, v2, v3), Llama-style (with attention sinks, output gates, q/k norms "
                 "across heads: GPT-OSS, OLMo 2), Phi-3, GPT-2 (and OpenAI GPT), GPT-NeoX (and Persimmon), Falcon, "
                 "ModernBERT, T5 and MPNet (heads across layers), Conformer and separate q/k/v/out projection "
                 "attention (OPT, BART, GPT-J, GPT-Neo, DistilBERT, CTRL, ViT, Wav2Vec2, GTE)")
# Config keys that hold the (one, model-wide) FFN width, by family (Falcon: ffn_hidden_size, XLNet:
# d_inner, CTRL: dff).
FFN_WIDTH_KEYS = ("intermediate_size", "hidden_dim", "ffn_dim", "d_ff", "n_inner", "ffn_hidden_size", "d_inner", "dff")
# An encoder-decoder config (BART, Marian, ...) may hold one width per stack instead.
STACK_WIDTH_KEYS = {"encoder": "encoder_ffn_dim", "decoder": "decoder_ffn_dim",
                    "shared_expert": "shared_expert_intermediate_size"}
# The width of stacked experts (`engine.experts`) where the config holds it apart from the dense FFN's
# (Qwen-MoE, DeepSeek, GLM-MoE); else the model-wide key (Mixtral, OLMoE, GPT-OSS: intermediate_size).
EXPERT_WIDTH_KEYS = ("moe_intermediate_size", "expert_intermediate_size")
PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)  # + transformers' Conv1D (`root_types`)


def ffn_roots(model: nn.Module) -> list[str]:
    """Names of the FFN input projections (nn.Linear or GPT-2's Conv1D) of `model`, in module order."""
    return [name for name, m in model.named_modules()
            if (isinstance(m, nn.Linear) or is_conv1d(m)) and any(name == s or name.endswith("." + s) for s in FFN_INPUTS)]


def head_modules(model: nn.Module) -> list[str]:
    """Names of the attention modules the engine prunes by whole heads (more than one structure)."""
    return [name for name, layout in head_layouts(model)[0].items() if layout.units > 1]


def head_layouts(model: nn.Module) -> tuple[dict[str, HeadLayout], list[str]]:
    """The layout of every attention module a head adapter describes, and why each other module an
    adapter recognises is refused."""
    layouts, why = {}, []
    for name, module in model.named_modules():
        adapter = adapter_for(module)
        try:
            layout = adapter.describe(name, module) if adapter else None
        except Unsupported as reason:
            why.append(str(reason))
            continue
        if layout is not None:
            layouts[name] = layout
    return layouts, why


def protected_modules(model: nn.Module, heads: bool = True) -> list[str]:
    """Every Linear/Conv that is neither an FFN input projection nor (with `heads`) inside an attention
    module pruned by heads: ignore these and only FFN width and heads are pruned."""
    roots = set(ffn_roots(model))
    if is_convnet(model):
        return []  # its channels, as a plain module's: the engine still protects what feeds the outputs
    if not roots and not expert_layers(model):
        raise ConfigError(f"dpm does not recognise the feed-forward layers of {type(model).__name__} "
                          f"(it knows {FAMILIES}: modules named *.{', *.'.join(FFN_INPUTS[:4])}, *.mlp.c_fc, ...); "
                          "prune it as a plain module with your own pruning.ignore patterns")
    types = root_types(PRUNABLE_TYPES)
    if heads:
        # every attention a head adapter recognises: what it cannot prune by heads the engine fences,
        # with the reason (multi-query, ALiBi, cross-attention), instead of it being silently protected
        recognised = [name for name, m in model.named_modules() if adapter_for(m)]
        roots |= {name for attn in recognised
                  for name, m in model.get_submodule(attn).named_modules(prefix=attn) if isinstance(m, types)}
    return [name for name, m in model.named_modules()
            if name and isinstance(m, types) and name not in roots]


def is_convnet(model: nn.Module) -> bool:
    """A convolutional network (ResNet, ConvNeXt, RegNet, MobileNet, EfficientNet): 2-d convolutions, no
    transformer FFN dpm knows and no attention a head adapter knows. Its channels are pruned as a plain
    module's, and its config (widths per stage, not per layer) cannot record the result."""
    modules = list(model.modules())
    return (any(isinstance(m, nn.Conv2d) for m in modules) and not ffn_roots(model) and not expert_layers(model)
            and not any(adapter_for(m) for m in modules))


def ffn_widths(model: nn.Module) -> list[int]:
    """The intermediate width of every FFN, in layer order (gate and up projections count once)."""
    return list(ffn_layers(model).values())


def ffn_layers(model: nn.Module) -> dict[str, int]:
    """FFN name -> its intermediate width, in layer order: the layer's name ("encoder.layer.0"), or the
    FFN's where a layer has more than one ("layers.0.mlp.shared_expert", "layers.0.ffn1")."""
    widths: dict[str, int] = {}
    for name in ffn_roots(model):
        suffix = _suffix(name)
        module = model.get_submodule(name)
        width = module.weight.shape[out_axis(module)]  # out_features; a Conv1D's weight is [in, out]
        width //= FUSED_PARTS.get(suffix, 1)  # gate and up fused: each half is the width
        widths.setdefault(ffn_layer_of(name), width)
    return {**widths, **expert_layers(model)}


def _suffix(name: str) -> str:
    return max((s for s in FFN_INPUTS if name == s or name.endswith("." + s)), key=len)


def ffn_layer_of(root: str) -> str:
    """The FFN (`ffn_layers` key) an FFN input projection belongs to: what precedes the matched suffix,
    "layers.0" for layers.0.fc1 (OPT) and for layers.0.mlp.gate_proj / up_proj (Llama: counted once),
    "encoder.layer.0" for BERT; a layer's shared expert, or one of its two FFNs, is named apart."""
    suffix = _suffix(root)
    if suffix in SHARED_EXPERT_INPUTS or suffix in TWIN_FFN_INPUTS:
        return root[:-len(suffix)] + suffix.rsplit(".", 1)[0]
    return root[:-len(suffix)].rstrip(".")


def expert_layers(model: nn.Module) -> dict[str, int]:
    """Stacked-experts module name -> units per expert (`engine.experts`), in module order."""
    return {name: layout.width for name, _, layout, why in stacked_experts(model) if not why}


def ffn_width_key(config: Any) -> str | None:
    """The config key holding the model-wide FFN width: the first of FFN_WIDTH_KEYS set, else one the
    config has but leaves None (GPT-2's n_inner: None means 4 x n_embd, and is written when pruned)."""
    keys = config.to_dict()
    return next((k for k in FFN_WIDTH_KEYS if getattr(config, k, None) is not None), None) or \
        next((k for k in FFN_WIDTH_KEYS if k in keys), None)


def width_keys(model: nn.Module, layers: dict[str, int]) -> dict[str, str | None]:
    """Layer name -> the config key holding its FFN width: a stack's own (encoder_ffn_dim under an
    `encoder` module) where the config has one, else the model-wide key (None: the config has none).
    In a composite model (Gemma 3, LLaVA, CLIP: a language model and a vision tower) the key is the
    part's own, dotted: "text_config.intermediate_size"."""
    scopes = config_scopes(model)
    experts = expert_layers(model)
    keys = {}
    for layer in layers:
        scope = scope_of(scopes, layer)
        config = part_config(model, scope)
        stacks = [STACK_WIDTH_KEYS[p] for p in layer.split(".") if p in STACK_WIDTH_KEYS]
        if layer in experts:
            stacks = list(EXPERT_WIDTH_KEYS)
        key = next((k for k in stacks if getattr(config, k, None) is not None), ffn_width_key(config))
        keys[layer] = scoped_key(scope, key) if key else None
    return keys


def config_scopes(model: nn.Module) -> dict[str, str]:
    """Module name -> the attribute of a composite model's config that holds that module's own config
    (its `sub_configs`: text_config, vision_config), outermost modules only."""
    root = model.config
    subs = {id(getattr(root, a, None)): a for a in (getattr(root, "sub_configs", None) or {})
            if getattr(root, a, None) is not None}
    scopes: dict[str, str] = {}
    for name, module in model.named_modules():
        attr = subs.get(id(getattr(module, "config", None)))
        if name and attr and not any(name.startswith(prefix + ".") for prefix in scopes):
            scopes[name] = attr
    return scopes


def scope_of(scopes: dict[str, str], name: str) -> str | None:
    """The composite part (a `config_scopes` value) module `name` belongs to; None: the model's own."""
    return next((a for prefix, a in scopes.items() if name.startswith(prefix + ".")), None)


def part_config(model: nn.Module, scope: str | None) -> Any:
    """The config of a composite's part (`scope`), or the model's own."""
    return getattr(model.config, scope) if scope else model.config


def scoped_key(scope: str | None, key: str) -> str:
    """`key` in the part's config, dotted: "text_config.intermediate_size"."""
    return f"{scope}.{key}" if scope else key


def scoped(model: nn.Module, by_name: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    """`by_name` (module name -> anything) split by the composite part each module belongs to (the
    config attribute of `config_scopes`; None: the model's own config)."""
    scopes, out = config_scopes(model), {}
    for name, value in by_name.items():
        out.setdefault(scope_of(scopes, name), {})[name] = value
    return out


def config_value(config: Any, key: str) -> Any:
    """config.key, where key may be dotted into a part's config ("text_config.intermediate_size") or an
    alias (GPT-2's n_head); the global value where a per-layer config refuses to give one
    (transformers' AmbiguousGlobalPerLayerAttributeError)."""
    for part in key.split("."):
        try:
            config = getattr(config, part, None)
        except Exception:
            config = config.to_dict().get(part)
    return config


def set_config_value(config: Any, key: str, value: Any) -> None:
    *path, last = key.split(".")
    for part in path:
        config = getattr(config, part)
    setattr(config, last, value)


def head_problem(model: nn.Module, head_ratio: float | None) -> str | None:
    """Why `pruning.head_ratio` cannot be honoured (dpm has no head rule for any attention of the
    model, so no head would be removed), or None. Checked before training."""
    if not head_ratio:
        return None
    layouts, why = head_layouts(model)
    if any(layout.units > 1 for layout in layouts.values()):  # head_modules, from the same pass
        return None
    kinds = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.endswith("Attention")})
    rule = why[0] if why else f"no head rule for {', '.join(kinds[:2])}" if kinds else "no attention module it recognises"
    return (f"pruning.head_ratio is {head_ratio:g} but dpm prunes no attention heads of {type(model).__name__} "
            f"({rule}; it knows {HEAD_FAMILIES}): set pruning.head_ratio: 0 to "
            "prune the FFN width only")
