"""The pickle-free dpm artifact: enough to rebuild a compact model without unpickling any code.

It holds the model factory and its keyword arguments, the example input (a float input's shape, or,
for token models, the example tensors themselves: integer ids cannot be made up), the torch-pruning
pruning history of every dpm run the model went through (one stage per run, so a pruned model can be
pruned again), and the weights. Loading is one way: `parse_artifact` checks every field (no import),
`dpm_cli.trust.artifact_builder` decides whether the factory may run, `rebuild_artifact` sizes the model
on the meta device, builds it, replays each stage with torch-pruning and loads the weights.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from .errors import CheckpointError
from .trust import artifact_builder, call_builder, check_plain, show

ARTIFACT_FORMAT = "dpm-artifact"
ARTIFACT_VERSION = 1
MAX_INPUT_NUMEL = 2**24  # the example input replay and report allocate: 64 MiB of float32
MAX_STAGE_ENTRIES = 1_000_000  # steps and channel indices over all stages
MAX_MODULES = 20_000  # submodules of one model (ResNet-1001 has about 3,000, large LLMs a few thousand)


@dataclass
class Provenance:
    """How to rebuild a model's architecture: factory, arguments, example input and pruning stages.

    The example input is `input_shape` (a float tensor of zeros) or `example_inputs`, the tensors
    themselves (one, or a dict passed as keyword arguments: a tokenizer's input_ids and masks)."""

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: list[int] | None = None
    stages: list[list] = field(default_factory=list)
    example_inputs: torch.Tensor | dict[str, torch.Tensor] | None = None

    def with_stage(self, history: list) -> "Provenance":
        return Provenance(self.factory, dict(self.kwargs), self.input_shape, [*self.stages, history],
                          self.example_inputs)

    def example(self) -> Any:
        """The input the stages are replayed on (and a report counts at)."""
        if self.example_inputs is not None:
            return self.example_inputs
        return torch.zeros(self.input_shape)


def make_artifact(model: nn.Module, provenance: Provenance, metadata: dict[str, Any] | None = None) -> dict:
    if provenance.input_shape is None and provenance.example_inputs is None:
        raise CheckpointError("an artifact needs the example input shape (recipe model.input_shape)")
    art = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "factory": provenance.factory,
        "factory_kwargs": dict(provenance.kwargs),
        "input_shape": None if provenance.input_shape is None else list(provenance.input_shape),
        "stages": [[_entry(step) for step in stage] for stage in provenance.stages],
        "metadata": dict(metadata or {}),
        "state_dict": _stored_weights(model),
    }
    if provenance.example_inputs is not None:  # an addition: artifacts without it read as before
        art["example_inputs"] = _plain_inputs(provenance.example_inputs)
    return art


def _stored_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights as the source stored them: a Hugging Face folder's bfloat16 stays bfloat16 (the artifact
    was float32, twice the size of the folder dpm writes beside it; the loader casts to the model's dtype).
    One copy per storage, so tied weights (an LM head and its embedding) are one tensor in the file."""
    from .hf.dtypes import stored_state  # here: the hf package imports the engine, which imports this module

    copies: dict[tuple, torch.Tensor] = {}
    state = {}
    for name, tensor in (stored_state(model) or model.state_dict()).items():
        key = (tensor.data_ptr(), tensor.shape, tensor.stride(), tensor.dtype)
        if key not in copies:
            copies[key] = tensor.detach().cpu().clone()
        state[name] = copies[key]
    return state


def _plain_inputs(inputs: Any) -> torch.Tensor | dict[str, torch.Tensor]:
    if torch.is_tensor(inputs):
        return inputs.detach().cpu().clone()
    return {str(k): v.detach().cpu().clone() for k, v in inputs.items()}


def is_artifact(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("format"), str) and obj["format"] == ARTIFACT_FORMAT


def _entry(step: list) -> list:
    """One pruning-history step as plain data: torch-pruning's [module, is_out, idxs], or dpm's head
    removal [HISTORY_TAG, module, heads] (see `engine.heads.head_history`)."""
    first, second, idxs = step
    second = str(second) if isinstance(second, str) else bool(second)
    return [str(first), second, [int(i) for i in idxs]]




def parse_artifact(obj: Any, source: str = "<artifact>") -> Provenance:
    """Check every field of an artifact read with weights_only=True; import and call nothing."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{source}: malformed dpm artifact: {what}; re-save it with dpm prune")

    if not is_artifact(obj):
        raise bad("no 'format': 'dpm-artifact'")
    version = obj.get("version")
    if type(version) is not int or version != ARTIFACT_VERSION:  # no tensor or bool comparisons
        raise CheckpointError(f"{source}: dpm artifact version {show(obj.get('version'), 40)} is not supported "
                              f"(this dpm reads version {ARTIFACT_VERSION})")
    factory = obj.get("factory")
    if not isinstance(factory, str) or not factory.strip() or len(factory) > 200:
        raise bad(f"'factory' must be a 'package.module:callable' string, got {show(factory, 60)}")
    kwargs = obj.get("factory_kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise bad("'factory_kwargs' must be a mapping of argument names to values")
    check_plain(kwargs, f"{source}: factory_kwargs")
    example = _check_example_inputs(obj.get("example_inputs"), bad)
    shape = obj.get("input_shape")
    if shape is not None or example is None:
        _check_shape(shape, bad)
    stages = obj.get("stages", [])
    _check_stages(stages, bad)
    if not isinstance(obj.get("metadata", {}), dict):
        raise bad("'metadata' must be a mapping")
    state = obj.get("state_dict")
    if not isinstance(state, dict) or not state:
        raise bad("'state_dict' must be a non-empty mapping of names to tensors")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise bad(f"state_dict entry {show(key, 60)} is a {type(value).__name__}, not a tensor")
        if value.is_meta or value.layout != torch.strided:
            raise bad(f"state_dict entry {show(key, 60)} is not a dense tensor with data")
    return Provenance(factory, dict(kwargs), None if shape is None else list(shape),
                      [[list(step) for step in stage] for stage in stages], example)


def _check_shape(shape: Any, bad) -> None:
    if (not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 8
            or not all(type(d) is int and 0 < d <= 2**31 for d in shape)):
        raise bad(f"'input_shape' must be a list of 1 to 8 positive integers, got {show(shape, 60)}")
    numel = math.prod(shape)
    if numel > MAX_INPUT_NUMEL:
        raise bad(f"'input_shape' {list(shape)} would need a {numel * 4 / 2**30:.1f} GiB example input "
                  f"(at most {MAX_INPUT_NUMEL * 4 / 2**30:.1f} GiB)")


_INPUT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
                 torch.float32, torch.float64, torch.float16, torch.bfloat16)
_ID_DTYPES = _INPUT_DTYPES[:5]
MAX_INPUTS = 16  # keyword inputs of one example (input_ids, attention_mask, token_type_ids, ...)


def _check_example_inputs(inputs: Any, bad) -> torch.Tensor | dict[str, torch.Tensor] | None:
    """None, one tensor, or a dict of keyword names to tensors: dense, plain dtypes, bounded size,
    integer ids in [0, 2**31) (an embedding lookup is the only thing they may index)."""
    if inputs is None:
        return None
    items = {"": inputs} if torch.is_tensor(inputs) else inputs
    if (not isinstance(items, dict) or not 1 <= len(items) <= MAX_INPUTS
            or not all(isinstance(k, str) and (k == "" or (k.isidentifier() and not k.startswith("_")))
                       for k in items)):
        raise bad(f"'example_inputs' must be a tensor or a mapping of 1 to {MAX_INPUTS} argument names to tensors")
    numel = 0
    for key, value in items.items():
        what = f"example input {key!r}" if key else "the example input"
        if (not isinstance(value, torch.Tensor) or value.is_meta or value.layout != torch.strided
                or value.dtype not in _INPUT_DTYPES or not 1 <= value.dim() <= 8):
            raise bad(f"{what} must be a dense integer, bool or float tensor of 1 to 8 dimensions")
        numel += value.numel()
        if numel > MAX_INPUT_NUMEL:
            raise bad(f"the example inputs hold more than {MAX_INPUT_NUMEL} values")
        if value.dtype in _ID_DTYPES and value.numel() and (int(value.min()) < 0 or int(value.max()) >= 2**31):
            raise bad(f"{what} holds integers outside [0, 2**31)")
    return inputs


HEADS_TAG = "dpm:heads"  # engine.heads.HISTORY_TAG, spelled out: parsing imports no engine code
EXPERTS_TAG = "dpm:experts"  # engine.experts.HISTORY_TAG: [tag, experts module, units removed]


def _check_stages(stages: Any, bad) -> None:
    """A list of stages; each a list of [layer name, is-output-channel, [channel indices]]."""
    if not isinstance(stages, list):
        raise bad(f"'stages' must be a list, got {type(stages).__name__}")
    total = 0
    for s, stage in enumerate(stages):
        if not isinstance(stage, list):
            raise bad(f"stage {s} must be a list of pruning steps")
        for step in stage:
            # [layer, is_out, idxs] from torch-pruning, or dpm's own removals ["dpm:heads", module, heads]
            # and ["dpm:experts", module, units]
            ok = (isinstance(step, (list, tuple)) and len(step) == 3 and isinstance(step[0], str)
                  and isinstance(step[1], (bool, str)) and isinstance(step[2], (list, tuple))
                  and all(type(i) is int and 0 <= i < 2**31 for i in step[2]))
            if not ok:
                raise bad(f"stage {s} has a step {show(step, 60)}; expected [layer name, bool, [channel indices]]")
            if isinstance(step[1], str) and step[0] not in (HEADS_TAG, EXPERTS_TAG):
                raise bad(f"stage {s} has a step {show(step, 60)}; only a head or expert removal names a "
                          "module second")
            total += 1 + len(step[2])
    if total > MAX_STAGE_ENTRIES:
        raise bad(f"'stages' lists {total} steps and channel indices (at most {MAX_STAGE_ENTRIES})")


def provenance_of(obj: dict) -> Provenance:
    return parse_artifact(obj)


def rebuild_artifact(obj: dict, source: str = "<artifact>", *, factory: str | None = None,
                     factory_kwargs: dict[str, Any] | None = None, trust: bool = False) -> nn.Module:
    """Rebuild the model an artifact describes. `factory` (and its kwargs) is what the user named."""
    prov = parse_artifact(obj, source)
    fn = artifact_builder(prov.factory, prov.kwargs, named=factory, named_kwargs=factory_kwargs, trust=trust,
                          source=source)
    _check_size(fn, prov, source)
    try:
        model = call_builder(fn, prov.factory, prov.kwargs)
    except CheckpointError:
        raise
    except Exception as err:  # the builder refused the artifact's kwargs: bad input, one line
        raise CheckpointError(f"{source}: factory {show(prov.factory)} failed on the artifact's kwargs "
                              f"({type(err).__name__}: {show(str(err)[:160])})") from err
    replay_stages(model, prov)
    load_state_dict_strict(model, obj["state_dict"], source)
    return model


class _TooBig(Exception):
    """Raised from a registration hook to stop building a model that is already too big."""


def _check_size(fn, prov: Provenance, source: str) -> None:
    """Refuse a model too big for this machine before allocating it.

    The builder runs once on the meta device (shapes only, no memory) while global registration hooks
    count its modules and tensor bytes, stopping it early when either is absurd (a width or a depth of
    1e9 never finishes otherwise); then its parameters and buffers are counted exactly. A builder that
    cannot run on meta is built for real (allow-listed code, its kwargs bounded).
    """
    limit = _memory_bytes()
    seen = {"modules": 0, "bytes": 0}

    def on_module(module, name, sub):
        seen["modules"] += 1
        if seen["modules"] > MAX_MODULES:
            raise _TooBig

    def on_tensor(module, name, tensor):
        if tensor is not None:
            seen["bytes"] += tensor.numel() * tensor.element_size()
            if seen["bytes"] > 2 * limit:  # twice: a tied weight registers twice; the exact count follows
                raise _TooBig

    from torch.nn.modules import module as hooks

    handles = [hooks.register_module_module_registration_hook(on_module),
               hooks.register_module_parameter_registration_hook(on_tensor),
               hooks.register_module_buffer_registration_hook(on_tensor)]
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            meta = fn(**prov.kwargs)
        need = sum(t.numel() * t.element_size() for t in [*meta.parameters(), *meta.buffers()])
        modules = sum(1 for _ in meta.modules())
    except _TooBig:
        need, modules = seen["bytes"], seen["modules"]
    except Exception:  # the builder cannot run on meta, or returned no module: the real build reports it
        return
    finally:
        for handle in handles:
            handle.remove()
    if need > limit or modules > MAX_MODULES:
        raise CheckpointError(f"{source}: factory {show(prov.factory)} with the artifact's kwargs would build a "
                              f"model of {need / 2**30:.1f} GiB in {modules} modules (at least), more than this "
                              f"machine's {limit / 2**30:.1f} GiB of memory or {MAX_MODULES} modules; check "
                              "factory_kwargs")


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return 64 * 2**30


def replay_stages(model: nn.Module, prov: Provenance) -> None:
    """Apply each recorded pruning stage, each on a graph traced from the model as it then was."""
    import torch_pruning as tp  # here, not at the top: loading a plain state_dict needs no tracer

    from .batch import call_model, describe
    from .engine.conv1d import customized_pruners
    from .engine.kv_cache import cache_off
    from .engine.tp_fixes import quiet_unwrapped, tolerant_concat_widths
    from .engine.outputs import OutputCapture

    was_training = model.training
    example = prov.example()
    for stage in prov.stages:
        from .engine.experts import replay_experts
        from .engine.heads import replay_heads

        own = {HEADS_TAG: replay_heads, EXPERTS_TAG: replay_experts}

        try:  # traced as the engine traced it: keyword inputs, every output field (a ModelOutput)
            with cache_off(model), tolerant_concat_widths(), quiet_unwrapped():
                graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, forward_fn=call_model,
                                                              output_transform=OutputCapture(),
                                                              customized_pruners=customized_pruners())
        except Exception as err:  # the model does not run on the recorded example input
            what = (f"input_shape {prov.input_shape}" if prov.example_inputs is None
                    else f"example inputs ({describe(example)})")
            raise CheckpointError(f"the model does not run on the artifact's {what} "
                                  f"({type(err).__name__}: {show(str(err)[:120])})") from err
        try:
            with tolerant_concat_widths():
                graph.load_pruning_history([list(step) for step in stage if step[0] not in own])
            for step in stage:  # attention heads and expert units: removed by dpm after torch-pruning's steps
                if step[0] in own:
                    own[step[0]](model, step)
        except Exception as err:  # names or indices that are not in the model: torch-pruning raises anything
            raise CheckpointError(f"the pruning history does not fit the factory's model ({type(err).__name__}: "
                                  f"{show(str(err)[:120])}); was the artifact made with another version of "
                                  "the model code?") from err
    model.train(was_training)


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, turning torch's long mismatch report into one line that names the first problem."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {show(unexpected[:3])}"
        raise CheckpointError(
            f"{source} does not fit the model factory: {detail} "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys); check model.factory and model.kwargs"
        )
    for key, tensor in state.items():
        if own[key].shape != tensor.shape:
            raise CheckpointError(
                f"{source} does not fit the model factory: {key} has shape {tuple(tensor.shape)}, "
                f"the model expects {tuple(own[key].shape)}; check model.kwargs"
            )
    # assign: take the loaded tensors as they are instead of copying 100 MB into fresh ones; only
    # when the dtypes agree, so that a half-precision checkpoint is still cast to the model's dtype
    same_dtypes = all(state[k].dtype == own[k].dtype for k in state)
    try:
        model.load_state_dict(state, assign=same_dtypes)
    except Exception as err:  # e.g. a complex or quantized tensor where the model has floats
        raise CheckpointError(f"{source}: the weights do not load into the model ({type(err).__name__}: "
                              f"{show(str(err)[:120])})") from err
