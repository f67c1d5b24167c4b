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

from ..errors import BudgetError, ConfigError
from .config import DPMConfig
from .cost import CostModel, Key
from .groups import discover_groups
from .rectify import Snapshot, StepSums, c_len, c_rate, rate_threshold
from .selection import round_targets, score_groups, select
from .state import ACTIVE, DECAYING, PRUNED, Event, GroupState, Progress
from .structures import ParamSums, squares

EPS = 1e-12


class DecayPruner:
    """Decays the structures a base criterion selects to exact zeros over N optimizer steps."""

    def __init__(self, model: nn.Module, example_inputs: Any, config: DPMConfig | None = None,
                 optimizer: torch.optim.Optimizer | None = None, **options: Any):
        if config is not None and options:
            raise ConfigError("pass either a DPMConfig or keyword options, not both")
        self.config = config if config is not None else DPMConfig(**options)
        self.model = model
        self.example_inputs = example_inputs
        self.optimizer = optimizer
        found = discover_groups(model, example_inputs, self.config.ignore, self.config.ignore_classifier)
        self.graph, self.groups = found.graph, found.groups
        self.skipped, self.classifier = found.skipped, found.classifier
        self.cost = CostModel(model, example_inputs, self.groups)
        self.states = [GroupState(g.channels) for g in self.groups]
        self.targets = round_targets(self.config)
        cfg = self.config
        self.selection_steps = [cfg.start_step + k * cfg.interval + 1 for k in range(cfg.rounds)]
        extra = cfg.decay_steps if cfg.rectify.enabled and cfg.decay_steps > 1 else 0
        self.decay_phase_end = self.selection_steps[-1] + cfg.decay_steps + extra
        self.steps_done = 0
        self.round = -1
        self.events: list[Event] = []
        self._snapshot = Snapshot()
        self._check_reachable()

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
        decaying = [gi for gi, st in enumerate(self.states) if st.mask(DECAYING).any()]
        squares_now = ParamSums(squares)
        norms = {gi: self.groups[gi].norms(squares_now).cpu() for gi in decaying}
        replacements: list[Key] = []
        if self.config.rectify.enabled and decaying:
            replacements = self._rectify(t, decaying)
        scales = {gi: self._decay_scale(gi, norms[gi], t) for gi in decaying}
        # Every scale comes from the post-step norms before any is applied; overlapping structures
        # (a weight in two channels) then get the product, at or below both ramps.
        for gi, scale in scales.items():
            self.groups[gi].scale(scale.to(self.groups[gi].slices[0].param.device))
        self._enforce_zeros()
        self._begin_decay(replacements, "replacement")
        for k, s in enumerate(self.selection_steps):
            if s == t:
                self._start_round(k)
        if self.config.rectify.enabled:
            self._snapshot.take([g for g, st in zip(self.groups, self.states) if st.mask(DECAYING).any()])

    def _decay_scale(self, gi: int, norms: torch.Tensor, t: int) -> torch.Tensor:
        """Smooth Pruning: norm L_init * (N - n) / N after this step; exactly zero at n = N."""
        st, n_total = self.states[gi], self.config.decay_steps
        dec = st.mask(DECAYING)
        st.n[dec] += 1
        target = st.l_init * (n_total - st.n).float() / n_total
        scale = torch.ones(self.groups[gi].channels)
        scale[dec] = target[dec] / norms[dec].clamp_min(EPS)
        done = dec & (st.n >= n_total)
        scale[done] = 0.0
        st.status[done] = PRUNED
        for c in torch.nonzero(done).flatten().tolist():
            self.events.append(Event(t, "pruned", self.groups[gi].name, c, int(st.selected_round[c])))
        return scale

    @torch.no_grad()
    def _enforce_zeros(self) -> None:
        """Pruned structures stay exactly zero, optimizer state (momentum, Adam moments) included."""
        for g, st in zip(self.groups, self.states):
            pruned = st.mask(PRUNED)
            if pruned.any():
                keep = (~pruned).float().to(g.slices[0].param.device)
                g.scale(keep)
                if self.optimizer is not None:
                    g.scale_state(self.optimizer, keep)

    # ----------------------------------------------------------------- selection
    def _removed(self, extra: list[Key] = ()) -> set[Key]:
        keys = {(gi, c) for gi, st in enumerate(self.states)
                for c in torch.nonzero(st.status != ACTIVE).flatten().tolist()}
        return keys | set(extra)

    def _released_in(self, round_index: int) -> set[Key]:
        return {(gi, c) for gi, st in enumerate(self.states)
                for c in torch.nonzero(st.released_round == round_index).flatten().tolist()}

    def _scores(self) -> list[torch.Tensor]:
        return score_groups(self.groups, self.config.criterion, self.config.seed + self.steps_done)

    def _start_round(self, k: int) -> None:
        self.round = k
        keys = select(self.groups, self.cost, self.config, self.targets[k], self._removed(),
                      self._released_in(k), self._scores())
        self._begin_decay(keys, "selected")

    def _begin_decay(self, keys: list[Key], kind: str) -> None:
        by_group: dict[int, list[int]] = {}
        for gi, c in keys:
            by_group.setdefault(gi, []).append(c)
        for gi, channels in by_group.items():
            st, norms = self.states[gi], self.groups[gi].norms().cpu()
            idx = torch.tensor(channels, dtype=torch.long)
            st.status[idx], st.n[idx], st.streak[idx] = DECAYING, 0, 0
            st.l_init[idx] = norms[idx]
            st.selected_round[idx] = self.round
            for c in channels:
                self.events.append(Event(self.steps_done, kind, self.groups[gi].name, c, self.round))

    # ----------------------------------------------------------------- self-rectifying
    def _rectify(self, t: int, decaying: list[int]) -> list[Key]:
        """Release structures the loss keeps pulling out; return the replacements to start decaying."""
        cfg, n_total = self.config.rectify, self.config.decay_steps
        sums = StepSums(self._snapshot)
        rates = {}
        for gi in decaying:
            st, g = self.states[gi], self.groups[gi]
            evaluable = st.mask(DECAYING) & (st.n + 1 < n_total)  # decay steps 1 .. N-1
            if evaluable.any() and self._snapshot.has(g):
                rates[gi] = (evaluable, c_rate(g, sums, st.l_init, n_total))
        if not rates:
            return []
        t_rate = rate_threshold(cfg, torch.cat([r[m] for m, r in rates.values()]))
        ready = []
        for gi, (evaluable, rate) in rates.items():
            st = self.states[gi]
            passing = evaluable & (rate > t_rate)
            lengths = None
            if passing.any():  # C_len only where C_rate already passes: most steps need no gradient sums
                lengths = c_len(self.groups[gi], sums, st.status != PRUNED)
                passing &= lengths > cfg.len_threshold
            st.streak[passing] += 1
            st.streak[evaluable & ~passing] = 0
            for c in torch.nonzero(passing & (st.streak >= cfg.patience)).flatten().tolist():
                ready.append((float(rate[c]), float(lengths[c]), gi, c))
        ready.sort(key=lambda r: -r[0])
        replacements: list[Key] = []
        scores = self._scores() if ready else []
        for rate_c, len_c, gi, c in ready:
            replacements += self._try_release(t, gi, c, rate_c, len_c, replacements, scores)
        return replacements

    def _try_release(self, t: int, gi: int, c: int, c_rate: float, c_len: float,
                     pending: list[Key], scores: list[torch.Tensor]) -> list[Key]:
        st, name = self.states[gi], self.groups[gi].name
        st.streak[c] = 0
        if t + self.config.decay_steps > self.decay_phase_end:
            self.events.append(Event(t, "suppressed", name, c, self.round, c_rate, c_len,
                                     "fewer than N steps of the decay phase remain"))
            return []
        st.status[c], st.released_round[c] = ACTIVE, self.round
        try:
            new = select(self.groups, self.cost, self.config, self.targets[self.round],
                         self._removed(pending), self._released_in(self.round), scores)
        except BudgetError:
            st.status[c], st.released_round[c] = DECAYING, -1
            self.events.append(Event(t, "suppressed", name, c, self.round, c_rate, c_len,
                                     "no eligible replacement keeps the budget"))
            return []
        self.events.append(Event(t, "release", name, c, self.round, c_rate, c_len))
        return new

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
        for key in removed:
            self.cost.remove(key)
        macs, params = self.cost.kept("macs"), self.cost.kept("params")
        self.cost.restore_state(state)
        count = lambda s: sum(int(st.mask(s).sum()) for st in self.states)  # noqa: E731
        released = sum(int((st.released_round >= 0).sum()) for st in self.states)
        return Progress(self.steps_done, self.round, count(DECAYING), count(PRUNED), released,
                        macs, params, self.finished)

    @property
    def finished(self) -> bool:
        """All rounds selected and every target has reached exact zero."""
        return self.round == len(self.selection_steps) - 1 and not any(
            st.mask(DECAYING).any() for st in self.states)

    def pruned_channels(self) -> dict[str, list[int]]:
        return {g.name: torch.nonzero(st.mask(PRUNED)).flatten().tolist()
                for g, st in zip(self.groups, self.states) if st.mask(PRUNED).any()}

    def decaying_norms(self) -> dict[str, float]:
        """Current joint norm of every decaying structure, keyed 'group:index' (for plots)."""
        out = {}
        for g, st in zip(self.groups, self.states):
            dec = st.mask(DECAYING)
            if dec.any():
                norms = g.norms().cpu()
                out.update({f"{g.name}:{c}": float(norms[c]) for c in torch.nonzero(dec).flatten().tolist()})
        return out

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

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "config": self.config.to_dict(),
            "steps_done": self.steps_done,
            "round": self.round,
            "groups": {g.name: st.state_dict() for g, st in zip(self.groups, self.states)},
            "events": [e.to_dict() for e in self.events],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a run mid-decay. Load the model's weights (and the optimizer's) first."""
        names = [g.name for g in self.groups]
        if sorted(state["groups"]) != sorted(names):
            raise ConfigError("the saved DPM state belongs to a different model or ignore list")
        if state["config"] != self.config.to_dict():
            raise ConfigError("the saved DPM state was made with other pruning options; resume with the same recipe")
        for g, st in zip(self.groups, self.states):
            st.load_state_dict(state["groups"][g.name])
        self.steps_done, self.round = int(state["steps_done"]), int(state["round"])
        self.events = [Event(**e) for e in state["events"]]
        self._snapshot.take([g for g, st in zip(self.groups, self.states) if st.mask(DECAYING).any()])

    def compact(self, **kwargs: Any):
        """Physically remove every pruned structure; see `dpm_cli.engine.compaction.compact`."""
        from .compaction import compact

        return compact(self, **kwargs)
