"""The pruning modes under comparison, as `dpm prune` recipe overrides.

Every mode starts from the same dense model, with the same criterion, budget, total steps, optimizer
and batch order (training.seed = seed index); only the way channels leave differs:

- single        single-step pruning, then fine-tuning (pruning.mode single_step: N = 1, no Self-Rectifying)
- iterative     single-step pruning in K rounds spread over the window SP decays in
- sp            DPM Smooth Pruning: a linear norm ramp to zero over N steps, Self-Rectifying off
- sp_sr         Smooth Pruning + Self-Rectifying
- sparse_*      the same after a sparse-learning pre-phase (torch-pruning GroupNormPruner
                regularisation, sparse.py); the pre-phase's steps count against the same total
"""
from __future__ import annotations

from dataclasses import dataclass

from .protocol import Protocol


@dataclass(frozen=True)
class Mode:
    name: str
    label: str
    decay: str  # single | iterative | sp | sp_sr
    sparse: bool = False

    def overrides(self, p: Protocol, steps: int) -> list[str]:
        """Recipe overrides for this mode; `steps` is what the pipeline trains (T minus a pre-phase)."""
        common = [f"pruning.start_step={p.start_step}", f"training.steps={steps}"]
        if self.decay == "single":
            return common + self._cadence(p, p.start_step + 2) + ["pruning.mode=single_step", "pruning.rounds=1"]
        if self.decay == "iterative":
            interval = max(1, p.decay_steps // p.rounds)
            last_cut = p.start_step + (p.rounds - 1) * interval + 2
            return common + self._cadence(p, last_cut) + [
                "pruning.decay_steps=1", f"pruning.rounds={p.rounds}",
                f"pruning.round_interval={interval}", "pruning.rectify.enabled=false"]
        smooth = common + self._cadence(p, p.start_step + 1 + p.decay_steps) + [
            f"pruning.decay_steps={p.decay_steps}", "pruning.rounds=1"]
        if self.decay == "sp":
            return smooth + ["pruning.rectify.enabled=false"]
        quantile = "null" if p.rate_quantile is None else f"{p.rate_quantile}"
        return smooth + ["pruning.rectify.enabled=true", f"pruning.rectify.rate_quantile={quantile}",
                         f"pruning.rectify.rate_threshold={p.rate_threshold}",
                         f"pruning.rectify.len_threshold={p.len_threshold}",
                         f"pruning.rectify.patience={p.patience}"]

    @staticmethod
    def _cadence(p: Protocol, zero_step: int) -> list[str]:
        """The same evaluation window for every mode: a mode whose channels are zero at `zero_step`
        keeps the dense cadence until p.decay_window_end, where SP's window ends."""
        if p.eval_every_decay is None:
            return []
        return [f"training.eval_every_decay={p.eval_every_decay}",
                f"training.eval_after_decay={max(0, p.decay_window_end - zero_step)}"]


MODES = {m.name: m for m in (
    Mode("single", "single-step", "single"),
    Mode("iterative", "iterative single-step (K rounds)", "iterative"),
    Mode("sp", "DPM SP", "sp"),
    Mode("sp_sr", "DPM SP+SR", "sp_sr"),
    Mode("sparse_single", "sparse + single-step", "single", sparse=True),
    Mode("sparse_sp", "sparse + SP", "sp", sparse=True),
    Mode("sparse_sp_sr", "sparse + SP+SR", "sp_sr", sparse=True),
)}
BASELINE = "single"
