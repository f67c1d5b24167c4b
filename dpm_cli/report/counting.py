"""Count a model's parameters and MACs, per layer, from one forward pass.

How (and why not thop): known modules (conv, linear, nn.MultiheadAttention, RNNs) are counted whole
by forward hooks with the rules in `rules.py`; every aten op that runs OUTSIDE such a module
(functional `q @ k.transpose(-2, -1)`, `torch.bmm`, `F.scaled_dot_product_attention`, `F.linear` in a
custom layer...) is counted by a TorchDispatchMode and charged to the innermost running module. Ops
inside a counted module are skipped, so nothing is counted twice; ops with no rule that are not known
to be MAC-free are listed in `ModelCount.unknown_ops`, never silently counted as zero.

thop's `profile` is not used: it registers `total_ops`/`total_params` buffers on every module but only
removes them from the modules it has a rule for (so the user's state_dict grows new keys), leaves its
hooks behind if the forward raises, counts unknown modules and functional matmuls as zero, and mixes
normalisation "ops" into MACs. This counter adds no buffers and removes its hooks in `finally`; it runs
in eval mode (so BatchNorm statistics do not move) and restores each module's training flag.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import DpmError, InputError
from .rules import is_mac_free, module_rule, op_name, op_rule, width_of


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
    """Tracks the running module (via hooks) and counts aten ops outside rule-counted modules."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps every mode's __torch_dispatch__ in dynamo.disable, importing torch._dynamo on
        # first use (seconds on a small CPU); this mode is never compiled, so the wrapper is not needed
        return False

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.inside_rule = 0  # depth of nested modules counted as a whole
        self.macs: dict[str, int] = defaultdict(int)
        self.unknown: Counter[tuple[str, str]] = Counter()

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

    def hook(self, model: nn.Module) -> list[Any]:
        handles = []
        for name, module in model.named_modules():
            rule = module_rule(module)
            handles.append(module.register_forward_pre_hook(self._enter(name, rule is not None)))
            handles.append(module.register_forward_hook(self._leave(name, rule), with_kwargs=True))
        return handles

    def _enter(self, name: str, counted_whole: bool) -> Any:
        def pre_hook(module: nn.Module, args: tuple) -> None:
            self.stack.append(name)
            self.inside_rule += int(counted_whole)
        return pre_hook

    def _leave(self, name: str, rule: Any) -> Any:
        def post_hook(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            if rule is not None:
                if self.inside_rule == 1:  # outermost rule-counted module only
                    self.macs[name] += int(rule(module, args, kwargs, out))
                self.inside_rule -= 1
            self.stack.pop()
        return post_hook


def example_input(shape: Sequence[int]) -> torch.Tensor:
    """A random input of `shape` from a private generator (the global RNG is left alone)."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(0))


def as_inputs(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)


def run_forward(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
    """model(*inputs), with a failing forward turned into one clear line."""
    try:
        return model(*inputs)
    except DpmError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as err:
        shapes = ", ".join("x".join(map(str, t.shape)) for t in inputs)
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise InputError(f"the model's forward pass failed on input {shapes}: {first}; "
                         "check --input-shape (batch first, e.g. 1,3,32,32)") from err


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
        counter = _count(model, inputs, on_meta)
    finally:
        torch.set_num_threads(previous_threads)
    layers = _rows(model, counter)
    unknown = [UnknownOp(op, layer, calls) for (op, layer), calls in sorted(counter.unknown.items())]
    return ModelCount(
        input_shape=tuple(inputs[0].shape) if inputs else (),
        params=sum(row.params for row in layers),
        macs=sum(counter.macs.values()),
        layers=layers,
        unknown_ops=unknown,
        label=label,
    )


def _count(model: nn.Module, inputs: tuple[torch.Tensor, ...], on_meta: bool) -> _OpCounter:
    if on_meta:
        try:
            return _count_pass(model, inputs, meta=True)
        except DpmError:
            raise
        except Exception:  # data-dependent forward: count on real tensors instead
            pass
    return _count_pass(model, inputs, meta=False)


def _count_pass(model: nn.Module, inputs: tuple[torch.Tensor, ...], *, meta: bool) -> _OpCounter:
    """One counted forward in eval mode; hooks removed and training flags restored whatever happens."""
    counter = _OpCounter()
    modes = {m: m.training for m in model.modules()}
    handles = counter.hook(model)
    try:
        model.eval()
        with torch.no_grad():
            if meta:
                # functional_call swaps meta tensors in for the weights and puts the originals back
                state = {k: v.to("meta") for k, v in _named_tensors(model)}
                meta_inputs = tuple(t.to("meta") for t in inputs)
                with counter:
                    torch.func.functional_call(model, state, meta_inputs)
            else:
                with counter:
                    run_forward(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return counter


def _named_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*model.named_parameters(), *model.named_buffers()]


def _rows(model: nn.Module, counter: _OpCounter) -> list[LayerCount]:
    """One row per module that owns parameters or MACs; rule-counted modules absorb their children.

    Every parameter is charged to exactly one row (shared parameters once), so the rows add up to
    the totals.
    """
    rows: list[LayerCount] = []
    seen: set[int] = set()
    absorbed: list[str] = []  # prefixes of modules counted as a whole
    unknown_layers = {layer for _, layer in counter.unknown}
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in absorbed):
            continue
        whole = module_rule(module) is not None
        if whole:  # its children's parameters and MACs belong to its row
            absorbed.append(name + "." if name else "")
        own = module.parameters() if whole else module.parameters(recurse=False)
        params = 0
        for p in own:
            if id(p) not in seen:
                seen.add(id(p))
                params += p.numel()
        macs = counter.macs.get(name, 0)
        if params or macs or name in unknown_layers:
            rows.append(LayerCount(name, type(module).__name__, width_of(module), params, macs))
    return rows
