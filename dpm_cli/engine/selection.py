"""Choosing the structures to prune: torch-pruning importance + a budget against the original model."""
from __future__ import annotations

from contextlib import contextmanager

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch_pruning as tp

from ..errors import BudgetError, ConfigError
from .activation import NOT_COLLECTED, WandaImportance
from .config import DPMConfig
from .cost import CostModel, Key
from .obs import obs_importance
from .structures import GroupSlices
from .units import own_importance, unit_scores, unit_sizes


def make_importance(criterion: str, activations: dict | None = None) -> tp.importance.Importance:
    """The base method's criterion, from torch-pruning's own importance classes."""
    if criterion == "activation":  # Wanda-style ||W[:, j]|| * rms(x_j), see activation.py
        if activations is None:
            raise ConfigError(NOT_COLLECTED)
        return WandaImportance(activations)
    if criterion == "magnitude":  # DepGraph's group L2 norm, normalised per group
        return tp.importance.GroupMagnitudeImportance(p=2)
    if criterion == "taylor":
        return tp.importance.GroupTaylorImportance()
    if criterion == "bn_scale":  # Gate Decorator / network slimming: |gamma| of the group's BatchNorms
        return tp.importance.BNScaleImportance()
    if criterion == "lamp":
        return tp.importance.LAMPImportance(p=2)
    if criterion == "random":
        return tp.importance.RandomImportance()
    raise ConfigError(f"unknown criterion {criterion!r}")


def needs_gradients(criterion: str) -> bool:
    return criterion == "taylor"


@torch.no_grad()
def score_groups(groups: list[GroupSlices], criterion: str, seed: int, activations: dict | None = None,
                 fallbacks: list[str] | None = None, moments: dict | None = None) -> list[torch.Tensor]:
    """Importance per structure of each group (a multi-channel structure scores the mean of its
    channels); +inf where the criterion has no opinion (never chosen).

    activations: for criterion 'activation', {module: RMS of each input channel} (`CalibrationActivations.bound`).
    A group none of whose consumers a calibration forward reached (no Linear/Conv takes its channels
    as inputs, or nn.MultiheadAttention's functional out_proj) scores by magnitude instead; both are
    normalised by their group mean, so the global ranking stays on one scale. Its name goes to
    `fallbacks`.

    moments: for criterion 'obs', {Linear: its input moments} (obs.py); a group no such Linear reads
    (convolution consumers) scores as 'activation' does and is named in `fallbacks`.

    For criterion 'taylor', a group that no gradient reached scores by magnitude and is named in
    `fallbacks`."""
    if needs_gradients(criterion) and all(s.param.grad is None for g in groups for s in g.slices):
        raise ConfigError("criterion 'taylor' needs gradients: select after loss.backward(), "
                          "or use a criterion such as 'magnitude'")
    if criterion == "obs":
        return [_obs_scores(g, seed, activations, moments or {}, fallbacks) for g in groups]
    importance = make_importance(criterion, activations)
    scores = []
    # Seeded so that every process of a distributed run, and a resumed run, picks the same channels.
    with torch.random.fork_rng(devices=[]), _zero_missing_grads(groups, criterion) as ungraded:
        torch.manual_seed(seed)
        for g in groups:
            imp = (None if g.name in ungraded else importance(g.tp_group) if g.tp_group is not None
                   else own_importance(g, criterion, activations))
            if imp is None and criterion in ("activation", "taylor"):
                imp = _magnitude(g)
                if fallbacks is not None:
                    fallbacks.append(g.name)
            if imp is None or imp.numel() != g.channels:
                imp = torch.full((g.channels,), math.inf)
            scores.append(unit_scores(torch.nan_to_num(imp.detach().float().cpu(), nan=math.inf), g.unit_of))
    return scores


@contextmanager
def _zero_missing_grads(groups: list[GroupSlices], criterion: str) -> Iterator[set[str]]:
    """For criterion 'taylor': parameters that no gradient reached (layers that do not feed the loss:
    SigLIP's pooling head when the objective reads the hidden states) get a zero gradient while the
    groups are scored (torch-pruning's Taylor importance reads every layer's .grad), which is what the
    loss's derivative is; yields the groups no gradient reached at all, to be ranked by magnitude."""
    missing = {id(s.param): s.param for g in groups for s in g.slices if s.param.grad is None} \
        if criterion == "taylor" else {}
    ungraded = {g.name for g in groups if g.slices and all(id(s.param) in missing for s in g.slices)}
    try:
        for param in missing.values():
            param.grad = torch.zeros_like(param)
        yield ungraded
    finally:
        for param in missing.values():
            param.grad = None


def _obs_scores(g: GroupSlices, seed: int, activations: dict | None, moments: dict,
                fallbacks: list[str] | None) -> torch.Tensor:
    imp = obs_importance(g, moments)
    if imp is not None:
        return unit_scores(torch.nan_to_num(imp, nan=math.inf), g.unit_of)
    if fallbacks is not None:
        fallbacks.append(g.name)
    inner: list[str] = []  # a group 'activation' cannot score either falls back to magnitude
    return score_groups([g], "activation", seed, activations, inner)[0]


def _magnitude(g: GroupSlices) -> torch.Tensor | None:
    return make_importance("magnitude")(g.tp_group) if g.tp_group is not None else own_importance(g, "magnitude")


@dataclass
class Limits:
    """Per-group limits: at most max_prunable structures removed, chosen in blocks of `block` (round_to
    for one-channel structures; a multi-channel structure is its own block)."""

    max_prunable: list[int]
    round_to: int
    block: list[int]

    @classmethod
    def from_config(cls, groups: list[GroupSlices], cfg: DPMConfig) -> "Limits":
        caps, blocks = [], []
        for g in groups:
            cap = min(int(math.floor(cfg.max_layer_ratio * g.channels)), g.channels - cfg.min_channels)
            largest = int(unit_sizes(g.unit_of, g.channels).max()) if g.unit_of is not None else 1
            if largest == 1:
                step = math.lcm(cfg.round_to, g.block)
                caps.append(max(0, cap - cap % step))
                blocks.append(step)
            else:  # in structures: the kept channels stay >= min_channels whatever is removed
                caps.append(max(0, cap // largest))
                blocks.append(1)
        return cls(caps, cfg.round_to, blocks)


def select(groups: list[GroupSlices], cost: CostModel, cfg: DPMConfig, target: float,
           removed: set[Key], excluded: set[Key], scores: list[torch.Tensor],
           cost_cap: float | None = None) -> list[Key]:
    """New structures to remove, least important first, until the projected cost <= target.

    `removed` (pruned or decaying) counts against the budget already; `excluded` are never chosen
    (released in this round). With `cost_cap` (global ranking), structures whose groups cost at most
    that much each come first: a replacement for a released channel then costs about what the release
    freed, instead of the least important channel anywhere, which may cost many times more and push
    the model below its budget. The cost model is left as it was.
    """
    state = cost.copy_state()
    cost.reset()
    cost.remove_many(removed)
    limits = Limits.from_config(groups, cfg)
    taken = _count_per_group(removed, len(groups))
    blocked = removed | excluded
    chosen: list[Key] = []
    if cfg.head_ratio is not None:  # heads by their own ratio first; they are out of the ranking below
        chosen = _select_heads(groups, cfg, _progress(cfg, target), blocked, scores, limits, taken)
        cost.remove_many(chosen)
        limits.max_prunable = [0 if g.kind == "heads" else cap for g, cap in zip(groups, limits.max_prunable)]
    if cfg.ranking == "global":
        affordable = None
        if cost_cap is not None:
            affordable = [c <= cost_cap * (1 + 1e-6) for c in cost.unit_costs(cfg.budget_kind)]
        rest = _select_global(cost, cfg, target, blocked, scores, limits, taken, affordable)
        chosen += _give_back(cost, cfg, target, rest, limits)
    else:
        chosen += _select_layerwise(groups, cost, cfg, target, blocked, scores, limits, taken)
    reached = cost.kept(cfg.budget_kind)
    cost.restore_state(state)
    if reached > target + 1e-9:
        raise BudgetError(
            f"budget {cfg.budget_kind} keep={target:.3f} cannot be reached under the per-layer limits "
            f"(best reachable: {reached:.3f}); raise max_layer_ratio, lower min_channels or round_to, "
            "or ignore fewer layers")
    return chosen


def check_head_ratio(cfg: DPMConfig, groups: list[GroupSlices]) -> None:
    """head_ratio above 0 needs head groups to act on: without them it would silently remove none."""
    if cfg.head_ratio and not any(g.kind == "heads" for g in groups):
        raise ConfigError(f"head_ratio {cfg.head_ratio:g} asks for attention heads to be removed, and this model "
                          "has none that dpm can prune (or they are ignored); set head_ratio to 0 or leave it unset")


def _progress(cfg: DPMConfig, target: float) -> float:
    """How far `target` is along the way from the whole model to the final budget (1 in the last round)."""
    return 1.0 if cfg.budget >= 1.0 else min(1.0, max(0.0, (1.0 - target) / (1.0 - cfg.budget)))


def _select_heads(groups: list[GroupSlices], cfg: DPMConfig, progress: float, blocked: set[Key],
                  scores: list[torch.Tensor], limits: Limits, taken: list[int]) -> list[Key]:
    """`head_ratio` of the heads of every head group (so far `progress` of it), least important first:
    the same count in every layer of a uniform model, which a config's one head count can record."""
    chosen: list[Key] = []
    for gi, g in enumerate(groups):
        if g.kind != "heads":
            continue
        want = min(int(round(cfg.head_ratio * progress * g.n_units)), limits.max_prunable[gi]) - taken[gi]
        picked = [key for _, keys in _units(gi, scores[gi], blocked, 1)[:max(0, want)] for key in keys]
        taken[gi] += len(picked)
        chosen += picked
    return chosen


def _count_per_group(keys: Iterable[Key], n: int) -> list[int]:
    counts = [0] * n
    for g, _ in keys:
        counts[g] += 1
    return counts


def _units(gi: int, score: torch.Tensor, blocked: set[Key], round_to: int) -> list[tuple[float, list[Key]]]:
    """Eligible channels of one group, least important first, in blocks of round_to."""
    order = [c for c in torch.argsort(score, stable=True).tolist()
             if (gi, c) not in blocked and math.isfinite(float(score[c]))]
    units = []
    for start in range(0, len(order) - round_to + 1, round_to):
        block = order[start:start + round_to]
        units.append((float(score[block[-1]]), [(gi, c) for c in block]))
    return units


def _select_global(cost: CostModel, cfg: DPMConfig, target: float, blocked: set[Key],
                   scores: list[torch.Tensor], limits: Limits, taken: list[int],
                   affordable: list[bool] | None = None) -> list[Key]:
    candidates = []
    for gi, score in enumerate(scores):
        first = 0 if affordable is None or affordable[gi] else 1
        for rank, (value, keys) in enumerate(_units(gi, score, blocked, limits.block[gi])):
            candidates.append((first, value, gi, rank, keys))
    candidates.sort(key=lambda c: c[:4])
    chosen: list[Key] = []
    for _, _, gi, _, keys in candidates:
        if cost.kept(cfg.budget_kind) <= target:
            break
        if taken[gi] + len(keys) > limits.max_prunable[gi]:
            continue
        taken[gi] += len(keys)
        for key in keys:
            cost.remove(key)
        chosen.extend(keys)
    return chosen


def _give_back(cost: CostModel, cfg: DPMConfig, target: float, chosen: list[Key], limits: Limits) -> list[Key]:
    """Undo the overshoot of the greedy pass: restore the most important chosen structures that the
    budget does not need, so the result lands just under the target rather than a large unit below.
    Structures that leave in blocks (round_to, stacked experts' alignment) stay: restoring single
    channels would break the blocks."""
    if cfg.round_to > 1:
        return chosen
    kept = list(chosen)
    for key in reversed(chosen):
        if limits.block[key[0]] > 1:
            continue
        cost.remove(key, sign=-1)
        if cost.kept(cfg.budget_kind) > target:
            cost.remove(key)
        else:
            kept.remove(key)
    return kept


def _select_layerwise(groups: list[GroupSlices], cost: CostModel, cfg: DPMConfig, target: float,
                      blocked: set[Key], scores: list[torch.Tensor], limits: Limits,
                      taken: list[int]) -> list[Key]:
    """Every group loses the same fraction of its channels; bisect that fraction to meet the budget."""
    units = [_units(gi, s, blocked, limits.block[gi]) for gi, s in enumerate(scores)]
    base = cost.copy_state()

    def apply(ratio: float) -> list[Key]:
        cost.restore_state(base)
        chosen: list[Key] = []
        for gi, g in enumerate(groups):
            want = min(int(ratio * g.n_units), limits.max_prunable[gi]) - taken[gi]
            for _, keys in units[gi]:
                if want < len(keys):
                    break
                want -= len(keys)
                chosen.extend(keys)
        for key in chosen:
            cost.remove(key)
        return chosen

    low, high = 0.0, 1.0
    for _ in range(30):
        mid = (low + high) / 2
        apply(mid)
        if cost.kept(cfg.budget_kind) <= target:
            high = mid
        else:
            low = mid
    return apply(high)


def round_targets(cfg: DPMConfig) -> list[float]:
    """Cumulative kept fraction after each round: round k removes k/K of the total reduction."""
    return [1.0 - (1.0 - cfg.budget) * (k + 1) / cfg.rounds for k in range(cfg.rounds)]

