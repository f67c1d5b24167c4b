"""Which runs the suite makes: the mode comparison per setup, and the ablations behind the defaults.

Seeds are spent where differences are small: at 2x fewer MACs every mode is level (the reference
implementation found it saturated), so it gets 3 seeds; 4x and 8x get 8 paired seeds. Ablations change
one Protocol field and are paired with the main grid's runs of the same mode and seeds. `full` must
stay within 40 minutes on 2 cores (measured 20.9 min); the other plans are follow-ups with their own
commands in docs/BENCHMARKS.md.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .protocol import Protocol

BUDGETS = (0.5, 0.25, 0.125)  # keep 1/2, 1/4, 1/8 of the dense MACs
CORE = ("single", "iterative", "sp", "sp_sr")
SPARSE = ("sparse_single", "sparse_sp", "sparse_sp_sr")


@dataclass(frozen=True)
class Comparison:
    setup: str
    protocol: Protocol
    seeds: dict[float, int]  # budget -> paired seeds for the core modes
    sparse_seeds: dict[float, int]  # budget -> paired seeds for the sparse-learning modes
    keep_models: bool = True  # keep seed 0's compact models for the latency measurement
    modes: tuple[str, ...] = CORE + SPARSE  # a follow-up may run only some modes


@dataclass(frozen=True)
class Ablation:
    name: str
    setup: str
    budget: float
    seeds: int
    changes: dict[str, Any]  # Protocol fields that differ from the setup's main protocol
    modes: tuple[str, ...]
    question: str = ""


@dataclass(frozen=True)
class Plan:
    comparisons: tuple[Comparison, ...]
    ablations: tuple[Ablation, ...] = ()
    latency_repeats: int = 30
    overhead_args: tuple[str, ...] = ()  # arguments for benchmarks/overhead.py; () = its defaults
    run_overhead: bool = True

    def protocol_of(self, setup: str) -> Protocol:
        return next(c.protocol for c in self.comparisons if c.setup == setup)

    def ablation_protocol(self, a: Ablation) -> Protocol:
        return replace(self.protocol_of(a.setup), **a.changes)


# ResNet-20 on MNIST, the headline: T = 150 steps at batch 32 (1.2 epochs of fine-tuning; batch 64 would
# double the cost of the suite), evaluations every 19 steps so that single-step pruning is evaluated on
# the step of its cut and SP one step after its channels reach zero (start_step 17, N = 38).
MNIST_PROTOCOL = Protocol(steps=150, eval_every=19, batch_size=32, rate_quantile=0.99)
# VGG on digits: cheap enough for every ablation with 8 seeds.
DIGITS_PROTOCOL = Protocol(steps=150, eval_every=10, rate_quantile=0.99)

M, V = "resnet20-mnist", "vgg-digits"


def _ablate(setup: str, seeds: int, name: str, changes: dict[str, Any], modes: tuple[str, ...], q: str) -> Ablation:
    return Ablation(name, setup, 0.125, seeds, changes, modes, q)


DIGITS_ABLATIONS = tuple(_ablate(V, 8, *a) for a in (
    ("N 10%", {"decay_frac": 0.1}, ("sp", "sp_sr"), "N as a fraction of the steps"),
    ("N 40%", {"decay_frac": 0.4}, ("sp", "sp_sr"), "N as a fraction of the steps"),
    ("lr 0.01", {"lr": 0.01}, ("single", "sp"), "fine-tuning learning rate"),
    ("lr 0.1", {"lr": 0.1}, ("single", "sp"), "fine-tuning learning rate"),
    ("SR q 0.9 (engine default)", {"rate_quantile": 0.9}, ("sp_sr",), "T_rate quantile"),
    ("SR q 0.95", {"rate_quantile": 0.95}, ("sp_sr",), "T_rate quantile"),
    ("SR m 1", {"patience": 1}, ("sp_sr",), "patience m"),
    ("SR m 6", {"patience": 6}, ("sp_sr",), "patience m"),
    ("SR T_len 0.5", {"len_threshold": 0.5}, ("sp_sr",), "T_len"),
    ("SR T_len 2", {"len_threshold": 2.0}, ("sp_sr",), "T_len"),
    ("distill 0.5", {"distill_weight": 0.5}, ("single", "sp"), "distillation from the dense model"),
    ("no BN re-estimation", {"recalibrate_bn": False}, ("single", "sp"), "BN re-estimation"),
    ("criterion taylor", {"criterion": "taylor"}, ("single", "sp"), "criterion"),
    ("criterion bn_scale", {"criterion": "bn_scale"}, ("single", "sp"), "criterion"),
    ("criterion lamp", {"criterion": "lamp"}, ("single", "sp"), "criterion"),
    ("K 2", {"rounds": 2}, ("iterative",), "rounds"),
    ("sparse reg 0.005", {"sparse_reg": 0.005}, ("sparse_single", "sparse_sp"), "sparse-learning strength"),
    ("sparse reg 0.1", {"sparse_reg": 0.1}, ("sparse_single", "sparse_sp"), "sparse-learning strength"),
    ("sparse on top (T+S steps)", {"sparse_counted": False}, ("sparse_single", "sparse_sp"),
     "is sparse learning worse only because it takes steps from fine-tuning?"),
))

FULL = Plan(
    comparisons=(
        Comparison(M, MNIST_PROTOCOL, {0.5: 3, 0.25: 8, 0.125: 8}, {0.5: 1, 0.25: 2, 0.125: 2}),
        Comparison(V, DIGITS_PROTOCOL, {0.5: 3, 0.25: 8, 0.125: 8}, {0.5: 3, 0.25: 8, 0.125: 8}),
    ),
    ablations=DIGITS_ABLATIONS + (
        _ablate(M, 8, "distill 0.5", {"distill_weight": 0.5}, ("single", "sp"), "distillation from the dense model"),
    ),
)

# Supplementary (not in the 40-minute suite): the ablations that matter most, on the headline setup.
MNIST_EXTRA = Plan(
    comparisons=(Comparison(M, MNIST_PROTOCOL, {0.125: 4}, {}, keep_models=False),),
    ablations=tuple(_ablate(M, 4, *a) for a in (
        ("lr 0.01", {"lr": 0.01}, ("single", "sp"), "fine-tuning learning rate"),
        ("N 10%", {"decay_frac": 0.1}, ("sp",), "N as a fraction of the steps"),
        ("N 40%", {"decay_frac": 0.4}, ("sp", "sp_sr"), "N as a fraction of the steps"),
        ("SR q 0.9 (engine default)", {"rate_quantile": 0.9}, ("sp_sr",), "T_rate quantile"),
        ("no BN re-estimation", {"recalibrate_bn": False}, ("single", "sp"), "BN re-estimation"),
    )) + (
        # Longer fine-tuning (N stays 25% of T): does SP's lead over single-step close?
        _ablate(M, 8, "T 300", {"steps": 300}, ("single", "sp"), "fine-tuning length"),
        _ablate(M, 4, "T 600", {"steps": 600}, ("single", "sp"), "fine-tuning length"),
    ),
    run_overhead=False,
)

# The reduced suite the test runs: one seed, few steps, the tiny model, every mode and budget.
QUICK = Plan(
    comparisons=(
        Comparison("tiny-digits", Protocol(steps=24, eval_every=4, decay_frac=0.25),
                   {0.5: 1, 0.25: 1, 0.125: 1}, {0.5: 1, 0.25: 1, 0.125: 1}),
    ),
    ablations=(
        Ablation("lr 0.01", "tiny-digits", 0.125, 1, {"lr": 0.01}, ("sp",), "smoke test of the ablation path"),
    ),
    latency_repeats=3,
    overhead_args=("--steps", "2", "--batch", "4", "--warmup", "0"),
)

# Follow-up: SP+SR beat SP in 7 of 8 seeds at 8x on MNIST (+0.38 +- 0.25, under two standard errors);
# 16 paired seeds of the three modes that matter tell whether that is real.
MNIST_SEEDS16 = Plan(
    comparisons=(Comparison(M, MNIST_PROTOCOL, {0.125: 16}, {}, keep_models=False, modes=("single", "sp", "sp_sr")),),
    run_overhead=False,
)

# Follow-up: SP+SR lost to SP on digits because replacements were not cost-matched (a cheap fc unit
# replaced by an expensive conv channel). With cost-matched replacements, does SR still lose?
SR_COST_MATCHED = Plan(
    comparisons=(
        Comparison(V, DIGITS_PROTOCOL, {0.25: 8, 0.125: 8}, {}, keep_models=False, modes=("single", "sp", "sp_sr")),
        Comparison(M, MNIST_PROTOCOL, {0.125: 8}, {}, keep_models=False, modes=("single", "sp", "sp_sr")),
    ),
    run_overhead=False,
)

PLANS = {"full": FULL, "quick": QUICK, "mnist-extra": MNIST_EXTRA, "mnist-16seeds": MNIST_SEEDS16,
         "sr-cost-matched": SR_COST_MATCHED}
