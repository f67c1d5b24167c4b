"""The `activation` criterion: a channel matters as much as the signal it feeds to the next layer.

Wanda/FLAP-style, weight-aware: for every Linear/Conv that takes a group's channel j as an INPUT
channel, score(j) = ||W[:, j]||_2 * ||x_j||_2, with ||x_j||_2 the root mean square of channel j's input
over the calibration tokens (or pixels). A unit that never fires on the data scores 0 whatever its
weights, which magnitude cannot see, and unlike Taylor it is not degenerate at the first selection of a
pure distillation (student == teacher: zero loss, zero gradients).

This wraps torch-pruning's `ActivationImportance` (its walk over a group's in-channel deps, its mean
reduction and its normalisation); `WandaImportance` differs from it in four places:
- the hook ACCUMULATES sums of squares and a count over every forward inside `compute_importance`
  (torch-pruning keeps |x| summed over the last forward only), so several calibration batches count;
- the statistics live in a dict, never on the modules, and torch-pruning's `module._importance`
  exists only while one group is scored (then it is deleted): the model is pickled after compaction,
  and the hooks are removed even when a forward fails (torch-pruning's context manager has no finally);
- a module's importance is the column norm of its weight times the RMS of its input (torch-pruning:
  the mean |input| alone), and it is normalised by the group mean like dpm's other criteria, so the
  global ranking compares groups on one scale.
- transformers' Conv1D (GPT-2) counts as a consumer, and the scores have the root's width, not the
  first consumer's (a gated FFN's down projection reads half the rows of a fused gate/up projection).
Token inputs with an `attention_mask` keyword (Hugging Face models) count real tokens only.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch_pruning as tp

from ..errors import ConfigError
from .conv1d import CONV1D_PRUNER, is_conv1d, root_types

# What a library user who chose the criterion but never collected must do (pruner.step or scores()).
NOT_COLLECTED = ("criterion 'activation' or 'obs' needs the activations of calibration data right before each "
                 "selection: `if pruner.needs_activations(): with torch.no_grad(), pruner.collect_activations(): "
                 "model(x)` for a few batches, then pruner.step()")

_TARGETS = (nn.Linear, nn.modules.conv._ConvNd)

CALIBRATED = ("activation", "obs")  # criteria that rank by statistics of calibration forwards


def fallback_note(criterion: str, groups: list[str]) -> str:
    """What the last scoring did with the groups its calibrated criterion could not rank."""
    if criterion == "obs":
        return f"criterion obs: no Linear reads {', '.join(groups)}; ranked as criterion activation"
    if criterion == "taylor":
        return f"criterion taylor: no gradient of the loss reached {', '.join(groups)}; ranked by magnitude"
    return f"criterion activation: no calibration forward reached a consumer of {', '.join(groups)}; ranked by magnitude"


def _mean_normalize(imp: torch.Tensor) -> torch.Tensor:
    """torch-pruning's "mean" normaliser, without the 0/0 of a group whose inputs are all zero."""
    return imp / imp.mean().clamp_min(1e-12)


def input_column_norms(module: nn.Module) -> torch.Tensor:
    """||W[:, j]||_2 for every input channel j of a Linear, transformers' Conv1D or convolution (on the
    CPU, float32)."""
    w = module.weight.detach().float()
    if isinstance(module, nn.Linear):
        return w.norm(dim=0).cpu()
    if is_conv1d(module):  # [in, out]
        return w.norm(dim=1).cpu()
    if getattr(module, "transposed", False):  # [in, out / groups, *kernel]
        return w.flatten(1).norm(dim=1).cpu()
    # [out, in / groups, *kernel]: input channel j is column j % (in/groups) of its conv group's rows
    groups, per_in = module.groups, w.shape[1]
    sq = w.square().flatten(2).sum(2)  # [out, in / groups]
    return sq.reshape(groups, -1, per_in).sum(1).reshape(-1).sqrt().cpu()


class MaskedHooks:
    """Forward hooks on a model that know the current forward's `attention_mask` keyword (so statistics
    count real tokens only), all removed on exit, also when a forward fails."""

    _mask: torch.Tensor | None = None

    @contextmanager
    def hooked(self, model: nn.Module, layers: list[tuple[nn.Module, Any]]) -> Iterator[None]:
        hooks = []
        try:
            hooks.append(model.register_forward_pre_hook(self._take_mask, with_kwargs=True))
            hooks += [m.register_forward_hook(hook) for m, hook in layers]
            yield
        finally:
            for h in hooks:
                h.remove()
            self._mask = None

    def _take_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        self._mask = mask.detach() if torch.is_tensor(mask) and mask.dim() == 2 else None


class WandaImportance(MaskedHooks, tp.importance.ActivationImportance):
    """torch-pruning's ActivationImportance, accumulated over batches and weight-aware (see above).

    Collect: `with imp.compute_importance(model): <forwards>`, then `imp.rms_by_name(model)`.
    Score: `WandaImportance(rms)(group)` with rms {module: RMS of each input channel}."""

    def __init__(self, rms: dict[nn.Module, torch.Tensor] | None = None):
        super().__init__(p=2, group_reduction="mean", normalizer=_mean_normalize, target_types=list(_TARGETS))
        self.rms = rms or {}
        self._sums: dict[nn.Module, list[Any]] = {}  # module -> [sum of squares (float64), count]
        self._mask: torch.Tensor | None = None

    # ------------------------------------------------------------ collection
    @contextmanager
    def compute_importance(self, model: nn.Module) -> Iterator["WandaImportance"]:
        targets = root_types(_TARGETS)  # and transformers' Conv1D (GPT-2), when it is loaded
        with self.hooked(model, [(m, self._accumulate) for m in model.modules() if isinstance(m, targets)]):
            yield self

    @torch.no_grad()
    def _accumulate(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        if not inputs or not torch.is_tensor(inputs[0]):
            return
        x = inputs[0].detach()
        if isinstance(module, nn.Linear) or is_conv1d(module):  # features last
            flat = x.reshape(-1, x.shape[-1]).float()
            mask = self._mask
            if mask is not None and tuple(x.shape[:-1]) == tuple(mask.shape):  # real tokens only
                weight = mask.reshape(-1, 1).to(flat.dtype)
                sq, n = (flat.square() * weight).sum(0), float(weight.sum())
            else:
                sq, n = flat.square().sum(0), float(flat.shape[0])
        else:  # convolutions: channels on dim 1, every batch element and position counts
            flat = x.transpose(0, 1).reshape(x.shape[1], -1).float()
            sq, n = flat.square().sum(1), float(flat.shape[1])
        entry = self._sums.setdefault(module, [torch.zeros_like(sq, dtype=torch.float64), 0.0])
        entry[0] += sq.double()
        entry[1] += n

    def rms_by_name(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """RMS input per channel of every module a forward reached, by qualified name (CPU, float32)."""
        return {name: (self._sums[m][0] / max(self._sums[m][1], 1.0)).sqrt().float().cpu()
                for name, m in model.named_modules() if m in self._sums}

    # ------------------------------------------------------------ scoring
    @torch.no_grad()
    def module_scores(self, module: nn.Module) -> torch.Tensor | None:
        """||W[:, j]|| * rms(x_j) per input channel j, or None if no forward reached the module."""
        rms = self.rms.get(module)
        if rms is None:
            return None
        return input_column_norms(module) * rms

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        """torch-pruning's ActivationImportance.__call__ with its "mean" reduction and two changes:
        transformers' Conv1D is a consumer too (its in-channel handler is dpm's pruner, which
        torch-pruning's loop does not know), and the result has the root's width (torch-pruning sizes
        it by the first consumer's, which a gated FFN's down projection halves: ModernBERT's Wi, Phi-3's
        gate_up_proj, whose index then runs past it)."""
        handlers = (tp.pruner.function.prune_conv_in_channels, tp.pruner.function.prune_linear_in_channels,
                    CONV1D_PRUNER.prune_in_channels)
        imp, seen = torch.zeros(len(group[0].idxs)), 0
        for i, (dep, idxs) in enumerate(group):
            idxs.sort()  # as torch-pruning does: root_idxs pair with the sorted indices
            root = group[i].root_idxs
            if dep.handler not in handlers or dep.target.module not in self.rms or any(r is None for r in root):
                continue
            imp.scatter_add_(0, torch.tensor(root, dtype=torch.long), self.module_scores(dep.target.module)[idxs])
            seen += 1
        return self._normalize(imp / seen, self.normalizer) if seen else None


@torch.no_grad()
def head_importance(group: Any, rms: dict[nn.Module, torch.Tensor]) -> torch.Tensor | None:
    """The same score for an attention head group: a head's channels are the output projection's input
    columns (the slices of the group along dim 1). None when no forward reached that projection
    (nn.MultiheadAttention applies its out_proj's weight inside its own forward, never calling it)."""
    modules = {id(m.weight): m for m in rms if isinstance(m, nn.Linear)}
    imp, seen = torch.zeros(group.channels), False
    for s in group.slices:
        module = modules.get(id(s.param))
        if module is None or s.dim != 1:
            continue
        per_column = input_column_norms(module) * rms[module]
        imp.index_add_(0, s.root.cpu(), per_column.index_select(0, s.local.cpu()))
        seen = True
    return _mean_normalize(imp) if seen else None


class CalibrationActivations:
    """The statistics a pruner's 'activation' (and 'obs') selection ranks by: RMS input per channel by
    module name (names, not modules: saved with the pruner's state, so a resumed run ranks exactly as
    before), for 'obs' the input moments of the Linear layers named in `collect` (obs.py), and the
    number of optimizer steps done when they were collected."""

    def __init__(self) -> None:
        self.rms: dict[str, torch.Tensor] | None = None
        self.moments: dict[str, dict[str, torch.Tensor]] | None = None
        self.step: int | None = None
        # [H^-1]_jj by layer name, computed from `moments` on first use: Self-Rectifying rescores on every
        # release, and one inverse of a 1,536-wide layer per step was half of a MiniLM step
        self._inverse: dict[str, torch.Tensor] = {}

    @contextmanager
    def collect(self, model: nn.Module, step: int, moments_for: set[str] | None = None) -> Iterator[None]:
        from .obs import InputMoments

        importance, moments = WandaImportance(), InputMoments(moments_for or set())
        with importance.compute_importance(model), moments.collect(model):
            yield
        stats = importance.rms_by_name(model)  # only after every forward succeeded
        if not stats:
            raise ConfigError("collect_activations() saw no forward pass through a Linear or convolution; "
                              "call the model on calibration batches inside the with-block")
        self.rms, self.step = stats, step
        self.moments = moments.result() if moments_for else None
        self._inverse = {}

    def bound(self, model: nn.Module) -> dict[nn.Module, torch.Tensor]:
        """The statistics keyed by the model's modules, as WandaImportance reads them."""
        if self.rms is None:
            raise ConfigError(NOT_COLLECTED)
        return {m: self.rms[name] for name, m in model.named_modules() if name in self.rms}

    def bound_moments(self, model: nn.Module) -> dict[nn.Module, dict[str, torch.Tensor]]:
        """The input moments keyed by the model's modules, as obs_importance reads them, with each
        layer's [H^-1]_jj (computed once per collection)."""
        from .obs import inverse_diagonal

        if self.rms is None:
            raise ConfigError(NOT_COLLECTED)
        moments, bound = self.moments or {}, {}
        for name, m in model.named_modules():
            if name in moments:
                if name not in self._inverse:
                    self._inverse[name] = inverse_diagonal(moments[name])
                bound[m] = {**moments[name], "inverse_diagonal": self._inverse[name]}
        return bound

    def state_dict(self) -> dict[str, Any] | None:
        if self.rms is None:
            return None
        return {"rms": self.rms, "step": self.step, **({"moments": self.moments} if self.moments else {})}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.rms, self.step = (None, None) if state is None else (state["rms"], state["step"])
        self.moments = None if state is None else state.get("moments")
        self._inverse = {}
