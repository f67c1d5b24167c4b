"""`DecayPruner`: Smooth Pruning and Self-Rectifying inside anyone's training loop.

    pruner = DecayPruner(model, example_inputs, DPMConfig(budget=0.5, decay_steps=100), optimizer=opt)
    for x, y in loader:
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
        pruner.step()                      # once per optimizer step
    result = pruner.compact()              # physically remove the zeroed channels

Timeline (t counts optimizer steps, 1-based): round k selects its targets at the end of step
s_k = start_step + k * round_interval + 1; each target then decays over the next N steps and is exactly
zero after step s_k + N. With Self-Rectifying the decay phase lasts N more steps, so that a
replacement chosen late can still fade completely; `decay_phase_end` is the last step of the phase.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..errors import BudgetError, ConfigError, DpmError
from .activation import CALIBRATED, NOT_COLLECTED, CalibrationActivations
from .compaction import CompactionPlan, CompactionResult, Removal, compact_plan
from .config import DPMConfig
from .cost import CostModel, Key
from .deadline import Progress
from .groups import discover_groups
from .layout import FlatLayout
from .obs import linear_consumers
from .preflight import preflight_keys, run_preflight
from .pruner_state import load_pruner_state, pruner_state
from .schedule import remaining_fraction
from .rectify import StepSums, c_len, c_rate, rate_threshold
from .selection import check_head_ratio, round_targets, score_groups, select
from .state import ACTIVE, DECAYING, PRUNED, Event, GroupState, Progress

EPS = 1e-12


class DecayPruner:
    """Decays the structures a base criterion selects to exact zeros over N optimizer steps.

    With `criterion="activation"` or `"obs"` a selection needs the activations of calibration data at the current
    weights, collected right before the step that selects (after opt.step(), before pruner.step()):

        opt.step()
        if pruner.needs_activations():
            model.eval()
            with torch.no_grad(), pruner.collect_activations():
                for x in calibration_batches:      # the same few batches every time
                    model(x)
            model.train()
        pruner.step()                              # raises ConfigError if they were not collected
    """

    def __init__(self, model: nn.Module, example_inputs: Any, config: DPMConfig | None = None,
                 optimizer: torch.optim.Optimizer | None = None, *, progress: Progress | None = None,
                 **options: Any):
        """progress: called with a line every 10 s while torch-pruning builds its graph (default: stderr)."""
        if config is not None and options:
            raise ConfigError("pass either a DPMConfig or keyword options, not both")
        self.config = config if config is not None else DPMConfig(**options)
        self.model = model
        self.example_inputs = example_inputs
        self.optimizer = optimizer
        found = discover_groups(model, example_inputs, self.config.ignore, self.config.ignore_classifier,
                                timeout_s=self.config.graph_timeout_s, progress=progress or _stderr,
                                through_norm=self.config.prune_through_norm)
        self.graph, self.groups = found.graph, found.groups
        self.skipped, self.classifier, self.protected = found.skipped, found.classifier, found.protected
        check_head_ratio(self.config, self.groups)
        self.cost = CostModel(model, example_inputs, self.groups, count_head_channels=self.config.head_ratio is None)
        self.layout = FlatLayout(self.groups)
        # One state over all channels (the hot path) with per-group views (selection, reports).
        self.state = GroupState(self.layout.channels)
        self.states = [self.state.view(a, b - a) for a, b in zip(self.layout.offsets, self.layout.offsets[1:])]
        self.targets = round_targets(self.config)
        cfg = self.config
        self.selection_steps, self.decay_phase_end = cfg.selection_steps, cfg.decay_phase_end
        self.steps_done = 0
        self.round = -1
        self.events: list[Event] = []
        self._before: torch.Tensor | None = None  # parameters after the last step, for C_rate
        self._step_norms: torch.Tensor | None = None  # this step's norms before decay, for release events
        self.activations = CalibrationActivations()  # criterion "activation": what the selection ranks by
        self.activation_fallback: list[str] = []  # groups the last scoring could not rank by its criterion
        self._check_reachable()
        if self.config.preflight:  # fail now, not after training (the model is left untouched)
            keys = preflight_keys(self.groups, self.cost, self.config)
            run_preflight(self._compaction_plan(keys), self.groups, keys)

    # ----------------------------------------------------------------- the training-loop hook
    def step(self) -> None:
        """Call once right after every optimizer.step()."""
        # DPM's work is hundreds of small per-parameter reductions: on one thread they run 10x faster
        # than on two when the cores are shared, because each op stops paying for a thread barrier.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self._step()
        finally:
            torch.set_num_threads(threads)

    @torch.no_grad()
    def _step(self) -> None:
        self.steps_done += 1
        t = self.steps_done
        scale, replacements = None, []
        decaying = self.state.mask(DECAYING)
        if bool(decaying.any()):
            if self.config.rectify.enabled and self._before is not None:
                sums = StepSums(self.layout, self._before)
                norms = sums.norm_sq.sqrt()
                replacements = self._rectify(t, decaying, sums)
            else:
                norms = self.layout.norms()  # after the optimizer step
            scale = self._decay_scale(norms, t)
        pruned = self.state.mask(PRUNED)
        if bool(pruned.any()):
            # Pruned structures stay exactly zero, optimizer state (momentum, Adam moments) included.
            keep = (~pruned).float()
            scale = keep if scale is None else scale * keep
            if self.optimizer is not None:
                self.layout.scale_state(self.optimizer, keep)
        if scale is not None:
            self.layout.scale(scale)
        self._begin_decay(replacements, "replacement")
        for k, s in enumerate(self.selection_steps):
            if s == t:
                self._start_round(k)
        self._take_snapshot()

    def _take_snapshot(self) -> None:
        """Self-Rectifying compares each step with the parameters as this step leaves them."""
        wanted = self.config.rectify.enabled and bool(self.state.mask(DECAYING).any())
        self._before = self.layout.values() if wanted else None

    def _decay_scale(self, norms: torch.Tensor, t: int) -> torch.Tensor:
        """Smooth Pruning: norm L_init * (N - n) / N after this step (linear; or the cosine shape, see
        schedule.py); exactly zero at n = N.

        Every scale comes from the post-step norms before any is applied; overlapping structures
        (a weight in two channels) then get the product, at or below both ramps."""
        st, n_total = self.state, self.config.decay_steps
        dec = st.mask(DECAYING)
        st.n[dec] += 1
        target = st.l_init * remaining_fraction(st.n, n_total, self.config.decay_shape)
        scale = torch.where(dec, target / norms.clamp_min(EPS), torch.ones_like(target))
        done = dec & (st.n >= n_total)
        if bool(done.any()):
            scale[done] = 0.0
            st.status[done] = PRUNED
            for i in torch.nonzero(done).flatten().tolist():
                gi, c = self.layout.key(i)
                self.events.append(Event(t, "pruned", self.groups[gi].name, c, int(st.selected_round[i]), norm=0.0))
        return scale

    @torch.no_grad()
    def _enforce_zeros(self) -> None:
        """Zero every pruned structure and its optimizer state now (outside the per-step path)."""
        keep = (~self.state.mask(PRUNED)).float()
        self.layout.scale(keep)
        if self.optimizer is not None:
            self.layout.scale_state(self.optimizer, keep)

    # ----------------------------------------------------------------- selection
    def _removed(self, extra: list[Key] = ()) -> set[Key]:
        keys = {(gi, c) for gi, st in enumerate(self.states)
                for c in torch.nonzero(st.status != ACTIVE).flatten().tolist()}
        return keys | set(extra)

    def _released_in(self, round_index: int) -> set[Key]:
        return {(gi, c) for gi, st in enumerate(self.states)
                for c in torch.nonzero(st.released_round == round_index).flatten().tolist()}

    def needs_activations(self) -> bool:
        """True when the criterion is 'activation' and the next step() starts a selection round: collect
        with `collect_activations()` first. Self-Rectifying replacements within a round reuse the
        activations of the round's selection (the weights are read afresh), so no other step needs them."""
        return self.config.criterion in CALIBRATED and self.steps_done + 1 in self.selection_steps

    def collect_activations(self) -> Any:
        """A context manager: forward passes of calibration data inside it (no_grad, eval mode: the
        caller's choice) give the 'activation' criterion its statistics, accumulated over all of them.
        Hooks are removed on exit, also when a forward fails (nothing is kept then); no attribute is left
        on any module."""
        moments_for = linear_consumers(self.groups, self.model) if self.config.criterion == "obs" else None
        return self.activations.collect(self.model, self.steps_done, moments_for)

    def scores(self) -> list[torch.Tensor]:
        """The criterion's importance of every structure now (what the next selection ranks by)."""
        activations = moments = None
        if self.config.criterion in CALIBRATED:
            activations = self.activations.bound(self.model)
        if self.config.criterion == "obs":
            moments = self.activations.bound_moments(self.model)
        fallbacks: list[str] = []
        scores = score_groups(self.groups, self.config.criterion, self.config.seed + self.steps_done,
                              activations, fallbacks, moments)
        self.activation_fallback = fallbacks
        return scores

    def _start_round(self, k: int) -> None:
        # A round's selection must see the activations at this step's weights, not an earlier round's.
        if self.config.criterion in CALIBRATED and self.activations.step != self.steps_done - 1:
            raise ConfigError(NOT_COLLECTED)
        self.round = k
        keys = select(self.groups, self.cost, self.config, self.targets[k], self._removed(),
                      self._released_in(k), self.scores())
        self._begin_decay(keys, "selected")

    def _begin_decay(self, keys: list[Key], kind: str) -> None:
        by_group: dict[int, list[int]] = {}
        for gi, c in keys:
            by_group.setdefault(gi, []).append(c)
        all_norms = self.layout.split(self.layout.norms()) if by_group else []
        for gi, channels in by_group.items():
            st, norms = self.states[gi], all_norms[gi]
            idx = torch.tensor(channels, dtype=torch.long)
            st.status[idx], st.n[idx], st.streak[idx] = DECAYING, 0, 0
            st.l_init[idx] = norms[idx]
            st.selected_round[idx] = self.round
            for c in channels:
                self.events.append(Event(self.steps_done, kind, self.groups[gi].name, c, self.round,
                                         norm=float(norms[c])))

    # ----------------------------------------------------------------- self-rectifying
    def _rectify(self, t: int, decaying: torch.Tensor, sums: StepSums) -> list[Key]:
        """Release structures the loss keeps pulling out; return the replacements to start decaying."""
        cfg, n_total, st = self.config.rectify, self.config.decay_steps, self.state
        evaluable = decaying & (st.n + 1 < n_total)  # decay steps 1 .. N-1
        if not bool(evaluable.any()):
            return []
        rate = c_rate(sums, st.l_init, n_total)
        self._step_norms = sums.norm_sq.sqrt()  # for the norm a release or suppression logs
        t_rate = rate_threshold(cfg, rate[evaluable])
        lengths = c_len(sums, st.status != PRUNED, self.layout.group_ids)
        passing = evaluable & (rate > t_rate) & (lengths > cfg.len_threshold)
        st.streak[passing] += 1
        st.streak[evaluable & ~passing] = 0
        ready = [(float(rate[i]), float(lengths[i]), *self.layout.key(i))
                 for i in torch.nonzero(passing & (st.streak >= cfg.patience)).flatten().tolist()]
        ready.sort(key=lambda r: -r[0])
        return self._release(t, ready, self.scores() if ready else [], [])

    def _release(self, t: int, ready: list[tuple[float, float, int, int]], scores: list[torch.Tensor],
                 pending: list[Key]) -> list[Key]:
        """Release `ready` (C_rate, C_len, group, channel) together; return their replacements.

        One selection per step covers all of them, at a cost cap of what they free. If no replacement
        keeps the budget, they are tried one at a time, and those that still fail are suppressed."""
        late = t + self.config.decay_steps > self.decay_phase_end
        for rate, length, gi, c in ready:
            self.states[gi].streak[c] = 0
            if late:
                self._log(t, "suppressed", gi, c, rate, length, "fewer than N steps of the decay phase remain")
        if late or not ready:
            return []
        unit = self.cost.unit_costs(self.config.budget_kind)
        for _, _, gi, c in ready:
            self.states[gi].status[c], self.states[gi].released_round[c] = ACTIVE, self.round
        try:
            new = select(self.groups, self.cost, self.config, self.targets[self.round], self._removed(pending),
                         self._released_in(self.round), scores, cost_cap=sum(unit[gi] for _, _, gi, _ in ready))
        except BudgetError:
            for _, _, gi, c in ready:
                self.states[gi].status[c], self.states[gi].released_round[c] = DECAYING, -1
            if len(ready) > 1:
                new = []
                for one in ready:
                    new += self._release(t, [one], scores, pending + new)
                return new
            self._log(t, "suppressed", ready[0][2], ready[0][3], ready[0][0], ready[0][1],
                      "no eligible replacement keeps the budget")
            return []
        for rate, length, gi, c in ready:
            self._log(t, "release", gi, c, rate, length)
        return new

    def _log(self, t: int, kind: str, gi: int, c: int, rate: float | None = None, length: float | None = None,
             note: str = "") -> None:
        norms = self._step_norms
        norm = float(norms[self.layout.offsets[gi] + c]) if norms is not None else None
        self.events.append(Event(t, kind, self.groups[gi].name, c, self.round, rate, length, note, norm))

    @torch.no_grad()
    def prune_now(self, keys: list[Key]) -> None:
        """Zero `keys` at once and mark every round done: what a plan or a single-shot user needs."""
        for gi, c in keys:
            self.states[gi].status[c] = PRUNED
        self.round = len(self.selection_steps) - 1
        self._enforce_zeros()

    # ----------------------------------------------------------------- reporting and checks
    def progress(self) -> Progress:
        removed = self._removed()
        state = self.cost.copy_state()
        self.cost.reset()
        self.cost.remove_many(removed)
        macs, params = self.cost.kept("macs"), self.cost.kept("params")
        self.cost.restore_state(state)
        st = self.state
        return Progress(self.steps_done, self.round, int(st.mask(DECAYING).sum()), int(st.mask(PRUNED).sum()),
                        int((st.released_round >= 0).sum()), macs, params, self.finished)

    @property
    def finished(self) -> bool:
        """All rounds selected and every target has reached exact zero."""
        return self.round == len(self.selection_steps) - 1 and not bool(self.state.mask(DECAYING).any())

    def pruned_channels(self) -> dict[str, list[int]]:
        """Per group, the channels of its pruned structures (what compaction removes)."""
        return {g.name: g.channels_of(torch.nonzero(st.mask(PRUNED)).flatten().tolist())
                for g, st in zip(self.groups, self.states) if st.mask(PRUNED).any()}

    def decaying_norms(self) -> dict[str, float]:
        """Current joint norm of every decaying structure, keyed 'group:index' (for plots)."""
        decaying = torch.nonzero(self.state.mask(DECAYING)).flatten().tolist()
        if not decaying:
            return {}
        norms = self.layout.norms()
        keys = (self.layout.key(i) for i in decaying)
        return {f"{self.groups[gi].name}:{c}": float(norms[i]) for i, (gi, c) in zip(decaying, keys)}

    def _check_reachable(self) -> None:
        """Fail before any training when the per-layer limits make the budget unreachable."""
        from .selection import Limits

        limits = Limits.from_config(self.groups, self.config)
        state = self.cost.copy_state()
        self.cost.reset()
        for gi, cap in enumerate(limits.max_prunable):
            for c in range(cap):
                self.cost.remove((gi, c))
        best = self.cost.kept(self.config.budget_kind)
        self.cost.restore_state(state)
        if best > self.config.budget + 1e-9:
            raise BudgetError(
                f"budget {self.config.budget_kind} keep={self.config.budget:g} cannot be reached under the "
                f"per-layer limits (best reachable: {best:.3f}); raise max_layer_ratio, lower min_channels "
                "or round_to, or ignore fewer layers")

    # ----------------------------------------------------------------- resume (pruner_state.py)
    def state_dict(self) -> dict[str, Any]:
        return pruner_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a run mid-decay. Load the model's weights (and the optimizer's) first."""
        load_pruner_state(self, state)
        self._take_snapshot()

    def compact(self, *, check: bool = True) -> CompactionResult:
        """Physically remove every pruned structure IN PLACE and check the function is unchanged.

        Transactional: if anything fails, the model is exactly as before the call. With
        prune_through_norm the output drift is measured and reported (result.exact is False)."""
        self._check_compactable()
        keys = [(gi, c) for gi, st in enumerate(self.states) for c in torch.nonzero(st.mask(PRUNED)).flatten().tolist()]
        return compact_plan(self._compaction_plan(keys), check=check)

    def _compaction_plan(self, keys: list[Key]) -> CompactionPlan:
        """Keys are (group, structure); a removal lists the structures' channels."""
        by_group: dict[int, list[int]] = {}
        for gi, u in keys:
            by_group.setdefault(gi, []).append(u)
        removals = [Removal(self.groups[gi].name, self.groups[gi].root, self.groups[gi].channels_of(units),
                            self.groups[gi].remove, self.groups[gi].kind) for gi, units in by_group.items()]
        return CompactionPlan(self.model, self.example_inputs, self.graph, removals, self.cost.original.macs,
                              self.cost.original.params, self.config.max_equivalence_error,
                              exact=not self.config.prune_through_norm)

    def _check_compactable(self) -> None:
        decaying = int(self.state.mask(DECAYING).sum())
        if decaying:
            raise DpmError(f"{decaying} structures are still decaying (step {self.steps_done}, the decay phase "
                           f"ends at step {self.decay_phase_end}); train until then before compacting")
        progress = self.progress()
        kept = {"macs": progress.macs_kept, "params": progress.params_kept}.get(self.config.budget_kind)
        if kept is not None and self.round == len(self.selection_steps) - 1 and kept > self.config.budget + 1e-6:
            raise BudgetError(f"the zeroed structures keep {kept:.4f} of the {self.config.budget_kind}, "
                              f"above the budget {self.config.budget:g}")
        norms_by_name = {g.name: g for g in self.groups}
        for name, channels in self.pruned_channels().items():
            residual = float(norms_by_name[name].norms()[channels].max())
            if residual != 0.0:
                raise DpmError(f"group {name}: a pruned structure has norm {residual:g}, not exactly zero; "
                               "was pruner.step() called after every optimizer.step()?")


def compact(pruner: DecayPruner, *, check: bool = True) -> CompactionResult:
    """`pruner.compact()` as a function (the engine's public API before compaction took a plan)."""
    return pruner.compact(check=check)


def _stderr(message: str) -> None:
    import sys

    print(f"dpm: {message}", file=sys.stderr, flush=True)
