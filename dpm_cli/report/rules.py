"""What costs multiply-accumulates (MACs), and how many: thop's module rules with our corrections, and
rules for single aten ops.

Convention: a MAC is one multiply-accumulate of a convolution, a linear layer, a matrix product or
an attention product (q @ k^T and weights @ v). Bias additions, normalisation, activations, pooling,
softmax and other elementwise work are not MACs (fvcore's convention, and what "MACs" means in most
pruning papers). FLOPs are reported as 2 x MACs. Everything else is either known to cost no MACs or
listed by name as not counted: nothing is silently zero.

Modules are counted whole by thop (`thop_custom_ops` gives the rules `thop.profile` runs); where thop
has no rule or one that breaks the convention above, the rule here replaces it, and says why.
"""
from __future__ import annotations

import importlib
import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from ..errors import DpmError

# (module, positional args, keyword args, output) -> MACs of one call
ModuleRule = Callable[[nn.Module, tuple, dict, Any], int]
# what thop.profile hooks on a module: (module, positional args, output) -> None, adding to m.total_ops
ThopHook = Callable[[nn.Module, tuple, Any], None]
# (positional args, keyword args, output) -> MACs of one aten call
OpRule = Callable[[tuple, dict, Any], int]


# ---- module-level rules: thop's, and ours where thop's is missing or wrong ------------------------

def _first_input(args: tuple, kwargs: dict) -> Any:
    return args[0] if args else kwargs["input"]


def _conv_transpose_macs(m: nn.Module, args: tuple, kwargs: dict, out: Any) -> int:
    # a transposed conv scatters every INPUT element into (out_channels / groups) x kernel outputs;
    # thop counts it like a conv, from the output, which is wrong whenever stride > 1
    x = _first_input(args, kwargs)
    return x.numel() * (m.out_channels // m.groups) * math.prod(m.kernel_size)


def _mha_macs(m: nn.Module, args: tuple, kwargs: dict, out: Any) -> int:
    """nn.MultiheadAttention: q/k/v projections, q @ k^T, weights @ v and the output projection.

    thop has no rule for it (it would count 0), and no generic op counter can look inside: in eval
    mode under no_grad PyTorch runs the fused `_native_multi_head_attention` kernel.
    """
    names = ("query", "key", "value")
    q, k, v = (args[i] if len(args) > i else kwargs[names[i]] for i in range(3))
    e = m.embed_dim
    if q.dim() == 3:
        batch = q.shape[0] if m.batch_first else q.shape[1]
    else:  # unbatched (L, E)
        batch = 1
    q_tokens = q.numel() // e  # batch x L
    k_tokens = k.numel() // m.kdim // batch + int(m.bias_k is not None) + int(m.add_zero_attn)
    projections = e * (q.numel() + k.numel() + v.numel())  # in-projections of q, k and v
    attention = 2 * q_tokens * k_tokens * e  # q @ k^T and weights @ v, summed over heads
    return projections + attention + q_tokens * e * e  # + output projection


_RNN_GATES = {nn.RNN: 1, nn.GRU: 3, nn.LSTM: 4}


def _rnn_macs(m: nn.Module, args: tuple, kwargs: dict, out: Any) -> int:
    """nn.RNN/GRU/LSTM: per token, layer and direction, every gate multiplies the layer's input and
    the previous hidden state (plus LSTM's optional projection).

    thop's count_rnn/gru/lstm also count bias adds and the gates' elementwise products (not MACs
    here), leave out LSTM's proj_size, and charge a PackedSequence its largest batch at every step;
    this rule replaces them. (The CPU kernels, e.g. mkldnn_rnn_layer, are fused ops no generic
    counter knows, so RNNs must be counted as whole modules.)"""
    x = _first_input(args, kwargs)
    data = x.data if isinstance(x, nn.utils.rnn.PackedSequence) else x
    tokens = data.numel() // m.input_size  # sequence length x batch
    hidden, proj = m.hidden_size, getattr(m, "proj_size", 0)
    h_out = proj or hidden
    directions = 2 if m.bidirectional else 1
    per_token = 0
    for layer in range(m.num_layers):
        layer_in = m.input_size if layer == 0 else h_out * directions
        per_token += directions * (_RNN_GATES[type(m)] * hidden * (layer_in + h_out) + hidden * proj)
    return tokens * per_token


# torch.nn modules (matched by the exact type's defining module) that do no multiply-accumulates:
# activations, normalisation, pooling, dropout, padding, reshaping, up-sampling, embedding look-ups.
_MAC_FREE_NAMESPACES = (
    "torch.nn.modules.activation", "torch.nn.modules.batchnorm", "torch.nn.modules.normalization",
    "torch.nn.modules.instancenorm", "torch.nn.modules.pooling", "torch.nn.modules.dropout",
    "torch.nn.modules.padding", "torch.nn.modules.flatten", "torch.nn.modules.pixelshuffle",
    "torch.nn.modules.upsampling", "torch.nn.modules.sparse", "torch.nn.modules.channelshuffle",
)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# NonDynamicallyQuantizableLinear is nn.MultiheadAttention's out_proj; thop matches exact types only
_LINEARS = (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)
_OUR_RULES: dict[type, ModuleRule] = {
    **dict.fromkeys(_CONV_TRANSPOSES, _conv_transpose_macs),
    nn.MultiheadAttention: _mha_macs,
    nn.RNN: _rnn_macs,
    nn.GRU: _rnn_macs,
    nn.LSTM: _rnn_macs,
}


def _mac_free_types() -> tuple[type, ...]:
    """nn.Identity and the modules defined in the MAC-free namespaces (thop matches exact types)."""
    found = [nn.Identity]
    for namespace in _MAC_FREE_NAMESPACES:
        for _, kind in inspect.getmembers(importlib.import_module(namespace), inspect.isclass):
            if issubclass(kind, nn.Module) and kind.__module__ == namespace and kind not in _OUR_RULES:
                found.append(kind)
    return tuple(found)


_MAC_FREE_TYPES = _mac_free_types()
# modules counted as a whole, by thop: the ops inside them are not counted one by one
_WHOLE_TYPES = frozenset((*_MAC_FREE_TYPES, *_CONVS, *_LINEARS, *_OUR_RULES))


def counted_whole(module: nn.Module) -> bool:
    """True if thop counts the module as a whole (by its exact type), so its ops are not counted
    one by one; other modules' MACs are the aten ops they run outside such modules."""
    return type(module) in _WHOLE_TYPES


def import_thop() -> Any:
    """The thop package, imported on first use (0.2 s: only counting needs it)."""
    with warnings.catch_warnings():
        # thop 0.1.1 compares torch versions with distutils' LooseVersion, deprecated since Python 3.10
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import thop
            import thop.vision.basic_hooks
        except ImportError as err:  # no thop, or Python >= 3.12 without setuptools' distutils
            raise DpmError(f"counting MACs needs thop, which could not be imported ({err}): "
                           "pip install thop setuptools") from err
    return thop


def thop_custom_ops(take_call: Callable[[nn.Module], dict | None]) -> dict[type, ThopHook]:
    """`custom_ops` for `thop.profile`: one forward hook per type counted whole (`counted_whole`).

    `take_call(module)` gives the keyword arguments of the module's running call (thop's hooks get
    the positional ones only, e.g. none for `mha(query=q, key=k, value=v)`) the first time it is
    asked, and None after: thop hooks a module once per parent that holds it (it walks the tree with
    `Module.apply`, which does not skip a module already seen), so a module shared by two parents
    has its hook twice, and the second one must not count the call again.
    """
    thop_hooks = import_thop().vision.basic_hooks
    ops: dict[type, ThopHook] = {}
    # thop counts normalisation (2-4 ops per element), PReLU, LeakyReLU, softmax, average pooling and
    # up-sampling as "ops", and has no rule for GroupNorm, GELU, SiLU, Flatten, Embedding...: all of
    # these cost no MACs in our convention, so they get thop's own zero_ops
    ops.update(dict.fromkeys(_MAC_FREE_TYPES, _thop_hook(thop_hooks.zero_ops, take_call)))
    # thop's conv rule is ours: output elements x (in_channels / groups) x kernel, no bias adds
    ops.update(dict.fromkeys(_CONVS, _thop_hook(thop_hooks.count_convNd, take_call, conv_input=True)))
    # thop's linear rule is ours: in_features x output elements, no bias adds
    ops.update(dict.fromkeys(_LINEARS, _thop_hook(thop_hooks.count_linear, take_call)))
    ops.update({kind: _our_hook(rule, take_call) for kind, rule in _OUR_RULES.items()})
    return ops


def _thop_hook(count: ThopHook, take_call: Callable[[nn.Module], dict | None], *,
               conv_input: bool = False) -> ThopHook:
    """thop's own rule `count`, run once per call."""
    def hook(m: nn.Module, args: tuple, out: Any) -> None:
        kwargs = take_call(m)
        if kwargs is None:  # a second hook on a shared module (see thop_custom_ops)
            return
        if conv_input:
            # thop's conv rule reads in_channels from dim 1 of the first positional argument:
            # absent for conv(input=x), a spatial dim for an unbatched (C, ...) input
            x = _first_input(args, kwargs)
            if x.dim() == m.weight.dim() - 1:
                x, out = x.unsqueeze(0), out.unsqueeze(0)
            args = (x,)
        count(m, args, out)
    return hook


def _our_hook(rule: ModuleRule, take_call: Callable[[nn.Module], dict | None]) -> ThopHook:
    """Our `rule`, as a thop hook: it adds to the `total_ops` buffer thop reads back."""
    def hook(m: nn.Module, args: tuple, out: Any) -> None:
        kwargs = take_call(m)
        if kwargs is not None:  # (None: a second hook on a shared module, see thop_custom_ops)
            m.total_ops += int(rule(m, args, kwargs, out))
    return hook


def width_of(module: nn.Module) -> int | None:
    """The layer's width: output channels or features (what pruning shrinks)."""
    # nf: transformers' Conv1D (GPT-2), whose MACs are its addmm, counted by the op counter
    # intermediate_dim: transformers' stacked experts, units per expert (what dpm prunes in them)
    for attr in ("out_channels", "out_features", "nf", "num_features", "embed_dim", "embedding_dim",
                 "hidden_size", "num_channels", "intermediate_dim"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    shape = getattr(module, "normalized_shape", None)
    if isinstance(shape, tuple) and shape:
        return int(shape[-1])
    return None


# ---- aten-level rules ----------------------------------------------------------------------------

def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape)


def _sdpa_macs(args: tuple, kwargs: dict, out: Any) -> int:
    # q (..., L, d), k (..., S, d), v (..., S, dv); grouped-query heads broadcast k and v
    q, k, v = args[:3]
    rows = q.numel() // q.shape[-1]  # batch x heads x L
    return rows * k.shape[-2] * (q.shape[-1] + v.shape[-1])


def _native_mha_macs(args: tuple, kwargs: dict, out: Any) -> int:
    # fused MultiheadAttention called outside its module: (query, key, value, embed_dim, ...)
    q, k, v, e = args[:4]
    q_tokens = q.numel() // e
    k_tokens = k.shape[-2]
    return e * (q.numel() + k.numel() + v.numel()) + 2 * q_tokens * k_tokens * e + q_tokens * e * e


def _grouped_mm_macs(args: tuple, kwargs: dict, out: Any) -> int:
    # transformers' stacked experts (grouped_mm implementation): a [tokens, k] @ b [experts, k, n] with
    # offsets, each token row times its own expert's matrix: tokens x k x n = out.numel() x k; batched
    # 3-D x 3-D the same. 2-D x 2-D groups split k instead: out [groups, m, n], each group k / groups.
    a, b = args[:2]
    k = a.shape[-1]
    if a.dim() == 2 and b.dim() == 2:
        return out.numel() * k // max(out.shape[0], 1)
    return out.numel() * k


def _from_torch_flops(formula: Callable[..., int]) -> OpRule:
    # torch.utils.flop_counter counts FLOPs = 2 x MACs for every op it knows
    return lambda args, kwargs, out: int(formula(*args, **kwargs, out_val=out)) // 2


def _build_op_rules() -> dict[Any, OpRule]:
    from torch.utils.flop_counter import flop_registry

    aten = torch.ops.aten
    rules: dict[Any, OpRule] = {op: _from_torch_flops(f) for op, f in flop_registry.items()}
    rules.update({
        # CPU attention kernels torch's flop counter misses (it would count them as zero)
        aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_macs,
        aten._native_multi_head_attention: _native_mha_macs,
        aten.mv: lambda a, k, o: math.prod(_shape(a[0])),
        aten.addmv: lambda a, k, o: math.prod(_shape(a[1])),
        aten.dot: lambda a, k, o: a[0].numel(),
        aten.vdot: lambda a, k, o: a[0].numel(),
        aten.addbmm: lambda a, k, o: a[1].shape[0] * a[1].shape[1] * a[1].shape[2] * a[2].shape[2],
    })
    if hasattr(aten, "_grouped_mm"):  # torch >= 2.8; the flop counter has no rule for it
        rules[aten._grouped_mm] = _grouped_mm_macs
    return rules


_OP_RULES: dict[Any, OpRule] | None = None


def op_rule(func: Any) -> OpRule | None:
    """The MAC rule of an aten op (an OpOverload), or None."""
    global _OP_RULES
    if _OP_RULES is None:
        _OP_RULES = _build_op_rules()
    return _OP_RULES.get(func.overloadpacket)


# aten ops that move, select, reduce or normalise data without multiply-accumulates, beyond those
# tagged pointwise, reduction or view (prefixes of the op name)
_MAC_FREE_OPS = (
    "cat", "stack", "clone", "copy", "_to_copy", "to", "empty", "zeros", "ones", "full", "new_",
    "arange", "linspace", "rand", "bernoulli", "native_dropout", "fill", "zero_", "lift_fresh",
    "_unsafe_view", "index", "gather", "scatter", "masked", "where", "embedding", "topk", "sort",
    "argmax", "argmin", "max", "min", "roll", "flip", "repeat", "tril", "triu", "constant_pad_nd",
    "reflection_pad", "replication_pad", "upsample_", "_upsample", "pixel_shuffle", "pixel_unshuffle",
    "channel_shuffle", "max_pool", "avg_pool", "adaptive_", "_adaptive_avg_pool", "native_batch_norm",
    "_native_batch_norm", "batch_norm", "native_layer_norm", "native_group_norm", "_softmax",
    "_log_softmax", "softmax", "log_softmax", "split", "unsafe_split", "unsafe_chunk", "unbind", "chunk", "im2col", "col2im",
    "_local_scalar_dense", "item", "detach", "alias", "device", "layout", "sym_", "size", "stride",
    "numel", "dim", "is_", "contiguous", "resize_", "set_", "_reshape_alias", "expand", "unfold",
    "cumsum",  # running sums (GPT-2's position ids from the attention mask): additions only
    "floor_divide", "histc", "bincount",  # token routing to experts (integer division, counting)
    "scalar_tensor",  # a 0-d tensor from a Python number (transformers' attention masks): listed in every BERT report
)
_FREE_CACHE: dict[Any, bool] = {}


def is_mac_free(func: Any) -> bool:
    """True for aten ops known to do no multiply-accumulates (elementwise, views, reductions...)."""
    cached = _FREE_CACHE.get(func)
    if cached is None:
        tags = set(getattr(func, "tags", ()))
        name = func.overloadpacket.__name__
        cached = bool(
            getattr(func, "is_view", False)
            or torch.Tag.pointwise in tags
            or getattr(torch.Tag, "reduction", None) in tags
            or name.startswith(_MAC_FREE_OPS)
        )
        _FREE_CACHE[func] = cached
    return cached


def op_name(func: Any) -> str:
    """'aten._fft_r2c' for an OpOverload: the name users see in the not-counted list."""
    return str(func.overloadpacket)
