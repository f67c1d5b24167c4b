"""Count a model's parameters and MACs, per layer, from one forward pass.

Two counters share that pass:
- thop (`thop.profile`) counts modules as a whole with its forward hooks: conv and linear with its
  own rules, nn.MultiheadAttention, transposed convs and RNNs with the rules of `rules.py` (passed
  as thop's `custom_ops`), and norms, activations, pooling, dropout... as zero;
- a TorchDispatchMode counts every aten op that runs OUTSIDE those modules (functional
  `q @ k.transpose(-2, -1)`, `torch.bmm`, `F.scaled_dot_product_attention`, `F.linear` in a custom
  layer...), which thop cannot see (it would count them as zero), and charges it to the innermost
  running module. Ops inside a thop-counted module are skipped, so nothing is counted twice; ops with
  no rule that are not known to be MAC-free are listed in `ModelCount.unknown_ops`, never silently
  counted as zero.

What we work around in thop (0.1.1), each where it is done:
- `thop.profile` registers `total_ops`/`total_params` buffers on EVERY module but removes them only
  from the modules it has a rule for (so a state_dict grows new keys), and leaves its hooks behind
  if the forward raises: it runs on a copy of the module tree, never on the user's model
  (`_shadow_copy`); as it removes the buffers it reads before returning, per-layer counts come from
  its `ret_layer_info` tree (`_thop_layer_ops`);
- thop counts normalisation, PReLU, softmax, average pooling and up-sampling as "ops", has no rule
  for nn.MultiheadAttention (0), counts ConvTranspose from the output (wrong for stride > 1) and
  adds bias and gate elementwise ops to RNNs: `rules.thop_custom_ops` replaces those rules, so MACs
  follow the convention of `rules.py` (FLOPs = 2 x MACs);
- thop's hooks see positional arguments only (`conv(input=x)`, `mha(query=q, ...)`), its conv rule
  misreads an unbatched input, and it hooks a module held by two parents twice: the hooks of
  `rules.thop_custom_ops` get each call's keyword arguments, once per call, from `_OpCounter`;
- thop counts a module's parameters with `m.parameters()` (a tied weight once per holder): the
  parameter column is ours, every parameter charged to exactly one row.
The user's model is left as it was: no buffers, no hooks, same training flags and statistics.
"""
from __future__ import annotations

import copy
import functools
from collections import Counter, defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode

from ..batch import move, tensors
from ..errors import DpmError, InputError
from .forward import clear_forward_errors
from .rules import counted_whole, import_thop, is_mac_free, op_name, op_rule, thop_custom_ops, width_of


@dataclass(frozen=True)
class LayerCount:
    """One row of the per-layer table. `name` is the module's path ('' for the model itself)."""

    name: str
    type: str
    width: int | None
    params: int
    macs: int


@dataclass(frozen=True)
class UnknownOp:
    """An op that ran but has no MAC rule: its cost is NOT in the totals."""

    op: str
    layer: str
    calls: int


@dataclass
class ModelCount:
    """Parameters and MACs of one forward pass at `input_shape` (the batch is the first dim)."""

    input_shape: tuple[int, ...]
    params: int
    macs: int
    layers: list[LayerCount]
    unknown_ops: list[UnknownOp] = field(default_factory=list)
    label: str = "model"

    @property
    def flops(self) -> int:
        """FLOPs counted as 2 x MACs (one multiply plus one add per multiply-accumulate)."""
        return 2 * self.macs

    def share(self, layer: LayerCount) -> float | None:
        """The layer's fraction of the model's MACs (None for a model with no MACs)."""
        return layer.macs / self.macs if self.macs else None

    def layer(self, name: str) -> LayerCount | None:
        return next((row for row in self.layers if row.name == name), None)


class _OpCounter(TorchDispatchMode):
    """Tracks the running module (via hooks) and counts aten ops outside thop-counted modules."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps every mode's __torch_dispatch__ in dynamo.disable, importing torch._dynamo on
        # first use (seconds on a small CPU); this mode is never compiled, so the wrapper is not needed
        return False

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.inside_rule = 0  # depth of nested modules counted as a whole (by thop)
        self.macs: dict[str, int] = defaultdict(int)
        self.unknown: Counter[tuple[str, str]] = Counter()
        self.call_kwargs: dict[nn.Module, dict] = {}  # of the running call of each thop-counted module
        self.active = False  # on torch's dispatch stack

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self.inside_rule:  # the enclosing module's rule already covers this op
            return func(*args, **kwargs)
        layer = self.stack[-1] if self.stack else ""
        rule = op_rule(func)
        if rule is not None:
            out = func(*args, **kwargs)
            self.macs[layer] += rule(args, kwargs, out)
            return out
        if not is_mac_free(func):
            with self:  # a composite op: count what it is made of
                result = func.decompose(*args, **kwargs)
            if result is not NotImplemented:
                return result
            self.unknown[(op_name(func), layer)] += 1
        return func(*args, **kwargs)

    def take_call(self, module: nn.Module) -> dict | None:
        """The keyword arguments of `module`'s running call, once per call (see thop_custom_ops)."""
        return self.call_kwargs.pop(module, None)

    def hook(self, model: nn.Module) -> None:
        """Hook every module of `model`, a throw-away copy: the hooks are never removed."""
        for name, module in model.named_modules():
            module.register_forward_pre_hook(self._enter(name, counted_whole(module)), with_kwargs=True)

    def _enter(self, name: str, whole: bool) -> Any:
        registered = False

        def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            nonlocal registered
            if not registered:
                # registered on the first call, after thop's hooks (thop.profile hooks the modules
                # before it runs the forward), so it runs after them; always_call: also when the
                # forward raises, so the stack unwinds
                module.register_forward_hook(self._leave(whole), always_call=True)
                registered = True
            self.stack.append(name)
            if whole:
                self.inside_rule += 1
                self.call_kwargs[module] = kwargs  # thop's hooks get positional arguments only
            self._sync()
        return pre_hook

    def _leave(self, whole: bool) -> Any:
        def post_hook(module: nn.Module, args: tuple, out: Any) -> None:
            self.inside_rule -= int(whole)
            self.stack.pop()
            self._sync()
        return post_hook

    def _sync(self) -> None:
        """Keep this mode on torch's dispatch stack only while there is something to count: inside
        the model's forward and outside modules thop counts whole. Every op seen costs a Python
        call; off the stack, the mode does not see thop's own bookkeeping (buffers made before the
        forward, read after it, and the tensor arithmetic of its hooks: 2,700 of 3,000 ops on
        ResNet-50, 0.06 s) nor the ops inside thop-counted modules."""
        wanted = bool(self.stack) and not self.inside_rule
        if wanted and not self.active:
            self.__enter__()
            self.active = True
        elif not wanted and self.active and _get_current_dispatch_mode() is self:
            # (under another mode pushed inside the forward, stay on: inside_rule skips the ops)
            self.__exit__(None, None, None)
            self.active = False

    def close(self) -> None:
        """Leave the dispatch stack, whatever happened in the forward."""
        if self.active:
            self.__exit__(None, None, None)
            self.active = False


def example_input(shape: Sequence[int] | dict[str, torch.Tensor]) -> Any:
    """A random input of `shape` from a private generator (the global RNG is left alone); ready
    keyword inputs (a dict, e.g. token ids and their attention mask) are returned as they are."""
    if isinstance(shape, dict):
        return shape
    from ..limits import check_example_shape

    check_example_shape(shape)  # refused before allocating, with the size in the message
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(0))


def as_inputs(example_inputs: Any) -> tuple[torch.Tensor, ...] | dict[str, Any]:
    """Positional inputs as a tuple; a dict (keyword arguments, e.g. a tokenizer's output) as is."""
    if isinstance(example_inputs, dict):
        return dict(example_inputs)
    return (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)


def count_model(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    label: str = "model",
    on_meta: bool = False,
    threads: int | None = 1,
) -> ModelCount:
    """Count parameters and MACs of `model(*example_inputs)`, per layer; the model is left as it was.

    With `on_meta` the forward runs on shape-only "meta" copies of the weights and inputs (counting
    needs shapes, not values), for models or inputs too large to run; a forward that needs real
    values (`.item()`, tensors made on the CPU inside forward...) is then rerun for real. Off by
    default: meta kernels of some ops (BatchNorm) import torch._dynamo, about 1 s, while a real
    ResNet-50 pass at 224x224 takes about 0.1 s on 2 CPU cores.

    `threads` sets torch's intra-op threads for the pass (None: leave as configured). One thread by
    default: counting needs a single pass, and multi-threaded kernels stall on their barriers when
    other processes share the cores (a ResNet-50 pass measured 0.1 s on 1 thread, 0.1-2.6 s on 2).
    """
    inputs = as_inputs(example_inputs)
    previous_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        macs, unknown_calls = _count(model, inputs, on_meta)
    finally:
        torch.set_num_threads(previous_threads)
    layers = _rows(model, macs, {layer for _, layer in unknown_calls})
    unknown = [UnknownOp(op, layer, calls) for (op, layer), calls in sorted(unknown_calls.items())]
    return ModelCount(
        input_shape=tuple(tensors(inputs)[0].shape) if tensors(inputs) else (),
        params=sum(row.params for row in layers),
        macs=sum(macs.values()),
        layers=layers,
        unknown_ops=unknown,
        label=label,
    )


_Counts = tuple[dict[str, int], Counter]  # MACs by module name, unknown-op calls by (op, module name)


def _count(model: nn.Module, inputs: Any, on_meta: bool) -> _Counts:
    if on_meta:
        try:
            return _count_pass(model, inputs, meta=True)
        except DpmError:
            raise
        except Exception:  # data-dependent forward: count on real tensors instead
            pass
    return _count_pass(model, inputs, meta=False)


def _count_pass(model: nn.Module, inputs: Any, *, meta: bool) -> _Counts:
    """One counted forward of a copy of `model`, in eval mode under no_grad: thop counts the modules
    it counts whole, the dispatch mode the ops outside them."""
    profile = import_thop().profile
    shadow = _shadow_copy(model, meta)
    errors = clear_forward_errors(inputs, model) if not meta else nullcontext()  # meta: caller falls back
    if meta:
        inputs = move(inputs, "meta")
    if isinstance(inputs, dict):
        # thop calls model(*inputs) only: bind keyword inputs to the copy's forward instead
        shadow.forward = functools.partial(shadow.forward, **inputs)
        inputs = ()
    counter = _OpCounter()
    counter.hook(shadow)  # the dispatch mode enters and leaves itself from these hooks
    shadow.eval()  # (thop.profile sets eval too) BatchNorm statistics do not move, dropout is off
    try:
        with torch.no_grad(), errors:
            # ret_layer_info: thop pops the total_ops buffers of the modules it hooked before it
            # returns, so per-layer counts are read from the tree it returns instead
            total, _, tree = profile(shadow, inputs=inputs, custom_ops=thop_custom_ops(counter.take_call),
                                     verbose=False, ret_layer_info=True, report_missing=False)
    finally:
        counter.close()
    macs: dict[str, int] = dict(counter.macs)
    for name, ops in _thop_layer_ops(shadow, total, tree).items():
        macs[name] = macs.get(name, 0) + ops
    return macs, counter.unknown


def _shadow_copy(model: nn.Module, meta: bool) -> nn.Module:
    """A deep copy of the module tree for thop to hook, sharing the model's tensors.

    thop.profile adds `total_ops`/`total_params` buffers to every module and removes only some of
    them, and leaves its hooks behind if the forward raises: run on a copy, the user's modules never
    see either. The copy's modules, buffer dicts and hook dicts are new objects, but its parameters,
    buffers and tensor attributes are the model's own (copying ResNet-50's 100 MB of weights took
    0.15-0.55 s on a shared 2-core machine, this copy 0.01-0.04 s, and a large model's memory is not
    doubled): the forward runs in eval mode under no_grad, which writes none of them (counting used
    to run the same forward on the model itself). Tensor attributes are shared too because a
    non-leaf one (left by `weight_norm` after a backward) cannot be deep-copied. With `meta`, the
    copy holds shape-only "meta" versions of them instead (counting needs shapes, not values).
    """
    memo: dict[int, Any] = {}
    for module in model.modules():
        tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False),
                   *(v for v in vars(module).values() if isinstance(v, torch.Tensor))]
        for tensor in tensors:
            if id(tensor) not in memo:
                memo[id(tensor)] = _to_meta(tensor) if meta else tensor
    try:
        return copy.deepcopy(model, memo)
    except Exception as err:  # e.g. an attribute that cannot be copied (a lock, an open file)
        raise InputError(f"the model could not be copied for counting: {type(err).__name__}: "
                         f"{str(err).strip()[:200]}") from err


def _to_meta(tensor: torch.Tensor) -> torch.Tensor:
    on_meta = tensor.detach().to("meta")
    if isinstance(tensor, nn.Parameter):
        return nn.Parameter(on_meta, requires_grad=tensor.requires_grad)
    return on_meta


def _thop_layer_ops(shadow: nn.Module, total: float, tree: dict) -> dict[str, int]:
    """thop's count of every module counted whole, by module name, from `profile`'s layer tree.

    The tree holds per child name (ops, params, subtree), and thop does not descend into a module
    it hooked (other than Sequential/ModuleList), so modules inside a whole-counted one (the
    out_proj of nn.MultiheadAttention) are not in it. A module reachable under two names is in the
    tree under both: it is charged once, to its name in `named_modules()`. The root is not in the
    tree: if it is counted whole, its count is the total less its children's.
    """
    flat: dict[str, float] = {}
    pending = [("", tree)]
    while pending:
        prefix, subtree = pending.pop()
        for child, (ops, _, grandchildren) in subtree.items():
            flat[prefix + child] = ops
            pending.append((prefix + child + ".", grandchildren))
    ops_by_name: dict[str, int] = {}
    for name, module in shadow.named_modules():
        if not counted_whole(module):
            continue
        if name == "":
            ops_by_name[name] = round(total - sum(ops for ops, _, _ in tree.values()))
        elif name in flat:
            ops_by_name[name] = round(flat[name])
    return ops_by_name


def _rows(model: nn.Module, macs: dict[str, int], unknown_layers: set[str]) -> list[LayerCount]:
    """One row per module that owns parameters or MACs; whole-counted modules absorb their children.

    Every parameter is charged to exactly one row (shared parameters once), so the rows add up to
    the totals.
    """
    rows: list[LayerCount] = []
    seen: set[int] = set()
    absorbed: list[str] = []  # prefixes of modules counted as a whole
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in absorbed):
            continue
        whole = counted_whole(module)
        if whole:  # its children's parameters and MACs belong to its row
            absorbed.append(name + "." if name else "")
        own = module.parameters() if whole else module.parameters(recurse=False)
        params = 0
        for p in own:
            if id(p) not in seen:
                seen.add(id(p))
                params += p.numel()
        layer_macs = macs.get(name, 0)
        if params or layer_macs or name in unknown_layers:
            rows.append(LayerCount(name, type(module).__name__, width_of(module), params, layer_macs))
    return rows
