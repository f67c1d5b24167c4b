"""Options of the DPM engine. Defaults marked "default" in DPM_SPEC.md live here as plain values."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError

BUDGET_KINDS = ("macs", "params", "channels")
CRITERIA = ("magnitude", "taylor", "bn_scale", "lamp", "random", "activation", "obs")
RANKINGS = ("global", "layer")
DECAY_SHAPES = ("linear", "cosine")  # see schedule.py


@dataclass
class RectifyConfig:
    """Self-Rectifying: release a decaying structure the loss keeps pulling back out.

    A release needs C_rate > T_rate and C_len > len_threshold on `patience` consecutive decay steps.
    T_rate = max(rate_threshold, quantile `rate_quantile` of the C_rate values of all structures
    decaying at that step); rate_quantile None uses the absolute floor alone.
    """

    enabled: bool = True
    rate_quantile: float | None = 0.99
    rate_threshold: float = 0.0
    len_threshold: float = 1.0
    patience: int = 3


@dataclass
class DPMConfig:
    """Everything that decides what is pruned and how it fades.

    budget: fraction of the ORIGINAL model kept (0 < budget <= 1), measured in `budget_kind`.
    criterion: how structures are ranked (selection.py): magnitude, taylor, bn_scale, lamp, random,
        activation (||W[:, j]|| * rms of input j on calibration data; the caller collects it before each
        selection, see DecayPruner.collect_activations), or obs (the output error removing j leaves after
        least-squares compensation by the rest, obs.py; collected the same way).
    decay_steps: N, optimizer steps from selection to exact zero; 1 = single-step pruning.
    decay_shape: the norm's path to zero, "linear" (the paper's ramp) or "cosine" (schedule.py).
    rounds: K selection rounds; round k brings the cumulative budget to k/K of the target.
    round_interval: optimizer steps between round selections (default decay_steps).
    start_step: optimizer steps of plain training before the first selection.
    preflight: when the pruner is built, zero what the run would prune, compact and check on the spot
        (then undo it), so a model torch-pruning cannot shrink fails in seconds, not after training.
    graph_timeout_s: stop building torch-pruning's dependency graph after this long (None: no limit).
    head_ratio: fraction of the heads removed from every attention module pruned by heads, like
        torch-pruning's head_pruning_ratio (0: heads are kept); the rest of the budget comes from the
        other structures. None: heads compete with the other structures in the one budget.
    prune_through_norm: also decay and remove channels coupled through LayerNorm / GroupNorm(1, C) (the
        residual width of ConvNeXt, ViT, BERT). Not exact: compaction measures and reports the drift
        instead of refusing it; fine-tune after removal.
    """

    budget: float = 0.5
    budget_kind: str = "macs"
    criterion: str = "magnitude"
    ranking: str = "global"
    max_layer_ratio: float = 0.9
    min_channels: int = 1
    round_to: int = 1
    ignore: list[str] = field(default_factory=list)
    ignore_classifier: bool = True
    decay_steps: int = 50
    decay_shape: str = "linear"
    rounds: int = 1
    round_interval: int | None = None
    start_step: int = 0
    rectify: RectifyConfig = field(default_factory=RectifyConfig)
    max_equivalence_error: float = 1e-4
    seed: int = 0
    preflight: bool = True
    graph_timeout_s: float | None = 300.0
    prune_through_norm: bool = False
    head_ratio: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rectify, dict):
            self.rectify = RectifyConfig(**self.rectify)
        self.validate()

    @property
    def interval(self) -> int:
        return self.round_interval if self.round_interval is not None else self.decay_steps

    @property
    def selection_steps(self) -> list[int]:
        """The optimizer steps at which the rounds select what decays."""
        return [self.start_step + k * self.interval + 1 for k in range(self.rounds)]

    @property
    def decay_phase_end(self) -> int:
        """The last step of the decay phase: the last round's decay, and room for a replacement chosen
        at its end (self-rectifying) to fade completely too."""
        extra = self.decay_steps if self.rectify.enabled and self.decay_steps > 1 else 0
        return self.selection_steps[-1] + self.decay_steps + extra

    def validate(self) -> None:
        _in_range("budget", self.budget, 0.0, 1.0, low_open=True, hint="e.g. 0.5 keeps half of the MACs")
        _choice("budget_kind", self.budget_kind, BUDGET_KINDS)
        _choice("criterion", self.criterion, CRITERIA)
        _choice("ranking", self.ranking, RANKINGS)
        _choice("decay_shape", self.decay_shape, DECAY_SHAPES)
        _in_range("max_layer_ratio", self.max_layer_ratio, 0.0, 1.0, low_open=True, high_open=True)
        _at_least("min_channels", self.min_channels, 1)
        _at_least("round_to", self.round_to, 1)
        _at_least("decay_steps", self.decay_steps, 1)
        _at_least("rounds", self.rounds, 1)
        _at_least("start_step", self.start_step, 0)
        if self.round_interval is not None and self.round_interval < self.decay_steps:
            raise ConfigError(
                f"round_interval ({self.round_interval}) must be >= decay_steps ({self.decay_steps}): "
                "a round starts only when the previous one has decayed"
            )
        if not isinstance(self.ignore, (list, tuple)) or not all(isinstance(p, str) for p in self.ignore):
            raise ConfigError("ignore must be a list of module-name patterns, e.g. ['fc', 'layer1.*']")
        r = self.rectify
        if r.rate_quantile is not None:
            _in_range("rectify.rate_quantile", r.rate_quantile, 0.0, 1.0, low_open=True, high_open=True)
        if r.len_threshold <= 0:
            raise ConfigError(f"rectify.len_threshold must be > 0, got {r.len_threshold}")
        _at_least("rectify.patience", r.patience, 1)
        if self.max_equivalence_error <= 0:
            raise ConfigError("max_equivalence_error must be > 0")
        if self.head_ratio is not None:
            _in_range("head_ratio", self.head_ratio, 0.0, 1.0, high_open=True,
                      hint="the fraction of heads removed per attention module, e.g. 0.25")
        if self.graph_timeout_s is not None:
            _in_range("graph_timeout_s", self.graph_timeout_s, 0.0, float("inf"), low_open=True,
                      hint="seconds, or None for no limit")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DPMConfig":
        data = dict(data)
        data["rectify"] = RectifyConfig(**data.get("rectify", {}))
        return cls(**data)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _at_least(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}; got {value!r}")


def _in_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
              high_open: bool = False, hint: str = "") -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{name} must be in {interval}; got {value!r}" + (f" ({hint})" if hint else ""))
