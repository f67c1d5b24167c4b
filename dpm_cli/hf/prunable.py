"""What dpm prunes in a transformers model: FFN intermediate width and attention heads; nothing else.

The FFN's input projection(s) root one group per layer whose channels are the intermediate units (the
down projection's input slice follows). Attention is pruned by whole heads: the projections of every
attention module a head adapter recognises (`engine.heads`: BERT-style, Llama-style, GPT-2) are left to
it; a hidden index of any other attention is not a head, so those are protected, and so are the
pooler, the task head and the residual stream (which runs through LayerNorm and is skipped anyway).
Protection uses dpm's ordinary mechanism, the ignore list (`DPMConfig.ignore`).
"""
from __future__ import annotations

import torch.nn as nn

from ..engine.conv1d import is_conv1d, out_axis, root_types
from ..engine.heads import ADAPTERS
from ..errors import ConfigError

# Names (suffixes) of FFN input projections across the common families: BERT/RoBERTa/MiniLM/ViT,
# DistilBERT, Llama/Mistral/Qwen (gate and up, pruned together), OPT/Phi, GPT-NeoX/Falcon, T5,
# GPT-2 (a transformers Conv1D) and GPT-Neo (c_fc as nn.Linear).
FFN_INPUTS = ("intermediate.dense", "ffn.lin1", "mlp.gate_proj", "mlp.up_proj", "mlp.fc1", "fc1",
              "mlp.dense_h_to_4h", "DenseReluDense.wi", "DenseReluDense.wi_0", "DenseReluDense.wi_1", "mlp.c_fc")
FAMILIES = "BERT-style, DistilBERT, Llama-style, OPT/Phi, GPT-NeoX/Falcon, T5 and GPT-2/GPT-Neo"
# Config keys that hold the (one, model-wide) FFN width, by family.
FFN_WIDTH_KEYS = ("intermediate_size", "hidden_dim", "ffn_dim", "d_ff", "n_inner")
PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)  # + transformers' Conv1D (`root_types`)


def ffn_roots(model: nn.Module) -> list[str]:
    """Names of the FFN input projections (nn.Linear or GPT-2's Conv1D) of `model`, in module order."""
    return [name for name, m in model.named_modules()
            if (isinstance(m, nn.Linear) or is_conv1d(m)) and any(name == s or name.endswith("." + s) for s in FFN_INPUTS)]


def head_modules(model: nn.Module) -> list[str]:
    """Names of the attention modules the engine prunes by whole heads."""
    return [name for name, m in model.named_modules() if any(a.matches(m) for a in ADAPTERS)]


def protected_modules(model: nn.Module, heads: bool = True) -> list[str]:
    """Every Linear/Conv that is neither an FFN input projection nor (with `heads`) inside an attention
    module pruned by heads: ignore these and only FFN width and heads are pruned."""
    roots = set(ffn_roots(model))
    if not roots:
        raise ConfigError(f"dpm does not recognise the feed-forward layers of {type(model).__name__} "
                          f"(it knows {FAMILIES}: modules named *.{', *.'.join(FFN_INPUTS[:4])}, *.mlp.c_fc, ...); "
                          "prune it as a plain module with your own pruning.ignore patterns")
    types = root_types(PRUNABLE_TYPES)
    if heads:
        roots |= {name for attn in head_modules(model)
                  for name, m in model.get_submodule(attn).named_modules(prefix=attn) if isinstance(m, types)}
    return [name for name, m in model.named_modules()
            if name and isinstance(m, types) and name not in roots]


def ffn_widths(model: nn.Module) -> list[int]:
    """The intermediate width of every FFN, in layer order (gate and up projections count once)."""
    widths: dict[str, int] = {}
    for name in ffn_roots(model):
        # the layer is what precedes the matched suffix: "layers.0" for layers.0.fc1 (OPT) and for
        # layers.0.mlp.gate_proj / up_proj (Llama: counted once), "encoder.layer.0" for BERT
        suffix = max((s for s in FFN_INPUTS if name == s or name.endswith("." + s)), key=len)
        module = model.get_submodule(name)
        width = module.weight.shape[out_axis(module)]  # out_features; a Conv1D's weight is [in, out]
        widths.setdefault(name[:-len(suffix)].rstrip("."), width)
    return list(widths.values())
