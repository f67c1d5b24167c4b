"""The training budget every mode shares: steps, optimizer, schedule, evaluation cadence.

All modes of one comparison get the same Protocol; a mode only changes how channels leave the
network (see modes.py). Ablations change one Protocol field at a time (`replace(p, lr=0.01)`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Protocol:
    steps: int  # T: optimizer steps per run, the sparse-learning pre-phase included
    eval_every: int  # held-out evaluation (after BN re-estimation) every this many steps
    lr: float = 0.05  # fine-tuning LR (SGD, momentum 0.9, weight decay 5e-4, cosine to 0)
    batch_size: int | None = None  # fine-tuning batch; None: the one the dense model was trained with
    decay_frac: float = 0.25  # N as a fraction of T
    rounds: int = 4  # K, for iterative single-step pruning
    criterion: str = "magnitude"
    rate_quantile: float | None = 0.9  # Self-Rectifying thresholds
    rate_threshold: float = 0.0
    len_threshold: float = 1.0
    patience: int = 3
    sparse_frac: float = 1 / 3  # share of T spent in group-norm sparse learning before pruning
    sparse_reg: float = 0.02  # torch-pruning GroupNormPruner reg (alpha 4)
    sparse_counted: bool = True  # False: the pre-phase comes on top of T (the paper's setting, unequal steps)
    distill_weight: float = 0.0  # cross-entropy + this weight of distillation from the dense model, every mode
    recalibrate_bn: bool = True
    recalibrate_batches: int = 20
    # Issue 15 ingredients, each a recipe option (docs/BENCHMARKS.md, "pilot"):
    decay_shape: str = "linear"  # pruning.decay_shape: linear | cosine
    decay_lr_scale: float = 1.0  # training.schedule.decay_lr_scale: the LR multiplier during the decay
    bn_at_zero: bool = False  # pruning.recalibrate_bn.at_zero: re-estimate BN when structures reach zero
    # The anytime accuracy's cadence (training.eval_every_decay): evaluate every this many steps from
    # the first selection until eval_after_decay steps after SP's channels reach zero, in EVERY mode
    # (modes.py stretches the window of modes that cut earlier, so all share the same last step).
    eval_every_decay: int | None = None
    eval_after_decay: int = 10
    start: int | None = None  # plain steps before the first selection; None: eval_every - 2 (see start_step)

    @property
    def decay_steps(self) -> int:
        return max(2, round(self.decay_frac * self.steps))

    @property
    def start_step(self) -> int:
        """Plain steps before the first selection. Single-step pruning selects at the end of step
        start_step + 1 and cuts at start_step + 2: placing that cut on an evaluation step lets the
        anytime accuracy of single-step pruning be measured right after the cut. With the dense
        cadence (eval_every_decay) the cut is evaluated anyway, and `start` can keep the suite's start
        while regular evaluations become rare."""
        return self.start if self.start is not None else max(0, self.eval_every - 2)

    @property
    def decay_window_end(self) -> int:
        """Last step the dense cadence covers: eval_after_decay steps after SP's channels are zero."""
        return self.start_step + 1 + self.decay_steps + self.eval_after_decay

    @property
    def sparse_steps(self) -> int:
        return round(self.sparse_frac * self.steps)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "decay_steps": self.decay_steps, "start_step": self.start_step,
                "decay_window_end": self.decay_window_end,
                "sparse_steps": self.sparse_steps}
