"""Whether an architecture's config can record a pruned shape, asked of the architecture itself.

Families differ in which config key sets the FFN width (intermediate_size, ffn_hidden_size, n_inner,
none at all: BLOOM's is 4 x hidden_size) and in whether the head size is free (Llama reads
config.head_dim; BERT and GPT-2 derive it from hidden_size / num_attention_heads). Rather than a table
per family, dpm builds the model class from a changed config on the meta device (no memory, no
weights) and looks at the shapes it gets. That answers before training, from the recipe alone, and
at save time it checks every parameter of the compact model against the config about to be written.
A class that cannot be built this way gives no answer (None): the reload check after saving decides.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn

from ..engine.conv1d import in_axis
from ..engine.heads import adapter_for
from .load import captured_warnings


def build_meta(model: nn.Module, updates: dict[str, Any]) -> nn.Module | None:
    """`type(model)` built from its config with `updates`, parameters on the meta device; None when
    the class cannot be built that way."""
    from .prunable import set_config_value

    config = copy.deepcopy(model.config)
    try:
        for key, value in updates.items():
            set_config_value(config, key, value)  # a key may be dotted into a part's config
        with torch.device("meta"), captured_warnings():
            return type(model)(config)
    except Exception:  # a config the class rejects, or a class that allocates on construction
        return None


def shape_mismatch(model: nn.Module, updates: dict[str, Any]) -> str | None:
    """The first parameter whose shape a model built from config + `updates` would not share with
    `model` ("name: config gives [..], model has [..]"), or None (also when the class cannot be built)."""
    built = build_meta(model, updates)
    if built is None:
        return None
    return _first_difference(built, model)


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    # buffers too: a rotary table sized from the head size is rebuilt, not loaded, by from_pretrained
    return {**dict(model.named_buffers()), **dict(model.named_parameters())}


def _first_difference(built: nn.Module, model: nn.Module, skip: tuple[str, ...] = ()) -> str | None:
    shapes = {name: tuple(t.shape) for name, t in _tensors(built).items()}
    for name, t in _tensors(model).items():
        if name in shapes and shapes[name] != tuple(t.shape) and not name.startswith(skip):
            return f"{name}: the config gives {list(shapes[name])}, the model has {list(t.shape)}"
    return None


def width_key_governs(model: nn.Module, key: str, layers: dict[str, int]) -> bool | None:
    """Whether setting `key` to another value changes the width of every FFN in `layers` (layer name ->
    width) to that value; None when the class cannot be built."""
    from .prunable import ffn_layers

    probe = max(layers.values()) + 1  # any other width will do; one more than the widest is valid
    built = build_meta(model, {key: probe})
    if built is None:
        return None
    got = ffn_layers(built)
    return all(got.get(name) == probe for name in layers)


def width_key_spills(model: nn.Module, key: str, layers: dict[str, int]) -> str | None:
    """The first shape outside every FFN dpm prunes that setting `key` to another width also changes
    (GLM-4-MoE and DeepSeek size their shared experts, which dpm keeps, from moe_intermediate_size), or
    None; None as well when the class cannot be built."""
    from .prunable import expert_layers, ffn_roots

    probe = max(layers.values()) + 1
    built, as_configured = build_meta(model, {key: probe}), build_meta(model, {})
    if built is None or as_configured is None:
        return None
    # What the key changes, against the config as it is (not the model, which may have lost heads
    # already): the FFNs' own input projections change their rows, the layers reading them only their
    # input axis; anything else is a layer dpm keeps (a dual FFN's second MLP, a shared expert).
    pruned = tuple(f"{name}." for name in [*ffn_roots(model), *expert_layers(model)])
    shapes = {name: tuple(t.shape) for name, t in _tensors(built).items()}
    for name, t in _tensors(as_configured).items():
        new, old = shapes.get(name), tuple(t.shape)
        if new is None or new == old or name.startswith(pruned) or _reads_width(model, name, new, old, probe):
            continue
        return f"{name}: the config gives {list(new)}, the model has {list(old)}"
    return None


def _reads_width(model: nn.Module, name: str, new: tuple[int, ...], old: tuple[int, ...], width: int) -> bool:
    """Whether the parameter `name` changed only along its module's input axis, to `width`: the FFN's
    down projection (a Linear's weight columns, a Conv1D's rows)."""
    owner, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(owner)
    except AttributeError:
        return False
    if attr != "weight" or len(new) != len(old) or not isinstance(getattr(module, "weight", None), torch.Tensor):
        return False
    axis = in_axis(module)
    if axis >= len(new):  # a norm's 1-d weight inside the FFN (BitNet's ffn_sub_norm): not a reader
        return False
    return new[axis] == width and all(a == b for i, (a, b) in enumerate(zip(new, old)) if i != axis)


def head_size_free(model: nn.Module, base: dict[str, Any] | None = None, scope: str | None = None) -> bool | None:
    """Whether a config can state other head counts at the same head size: the model built with twice
    the query and key/value heads and config.head_dim must have attention layouts of exactly that, and
    every other shape unchanged (`base`: config updates that already describe the model, e.g. a
    pruned FFN width; `scope`: a composite's part, e.g. "text_config", whose attention and keys are
    asked). Twice, not fewer: fewer heads are not always a valid config, more always are.
    None: no answer."""
    from .prunable import head_layouts, part_config, scoped, scoped_key

    layouts = scoped(model, head_layouts(model)[0]).get(scope, {})
    if not layouts:
        return None
    names, layout = list(layouts), next(iter(layouts.values()))
    config = part_config(model, scope).to_dict()
    updates = {**(base or {}), scoped_key(scope, "num_attention_heads"): 2 * layout.heads,
               scoped_key(scope, "head_dim"): layout.head_dim}
    if "num_key_value_heads" in config:
        updates[scoped_key(scope, "num_key_value_heads")] = 2 * layout.kv_heads
    built = build_meta(model, updates)
    if built is None:
        return None
    try:
        for name in names:
            module = built.get_submodule(name)
            got = adapter_for(module).describe(name, module)
            if (got.heads, got.kv_heads, got.head_dim) != (2 * layout.heads, 2 * layout.kv_heads, layout.head_dim):
                return False
            # the output projection too (Helium sizes o_proj by hidden_size, whatever the head count)
            if got.out.weight.shape[in_axis(got.out)] != 2 * layout.heads * layout.head_dim:
                return False
    except Exception:  # the attention no longer matches, or its layout is inconsistent: not expressible
        return False
    # Nothing else may change shape (Phi's qk-LayerNorm is sized hidden_size / num_attention_heads).
    # (nor any bias table but the heads' own: T5's relative_attention_bias has a column per head)
    projections = tuple(f"{name}.{attr}." for name in names for attr, m in model.get_submodule(name).named_children()
                        if isinstance(m, nn.Linear) or any(m is t for t in layouts[name].bias_cols))
    # (nor the module's own per-head parameters: GPT-OSS's sinks, a logit per head)
    own = tuple(f"{name}.{attr}" for name in names for holder, attr in layouts[name].head_rows
                if holder is model.get_submodule(name))
    return _first_difference(built, model, projections + own) is None
