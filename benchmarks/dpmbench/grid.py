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

# Issue 15: what makes the gain last, and the anytime accuracy measured on one schedule for every mode.
# Every run evaluates every step (eval_every_decay 1) from the first selection until 10 steps after SP's
# channels are zero; T = 600 (the long budget where the gain faded). Each ingredient is a named variant,
# paired with the main grid's runs of the same mode and seeds, and with single-step under the SAME
# ingredient where the ingredient applies to single-step too (distillation, BN at zero).
def _anytime(p: Protocol) -> Protocol:
    return replace(p, eval_every_decay=1, eval_after_decay=10)


# Regular evaluations every 100 steps (each one re-estimates BN: every 10 would double a run's cost),
# pruning starting where the suite's does.
ANYTIME_MNIST = _anytime(replace(MNIST_PROTOCOL, steps=600, eval_every=100, start=MNIST_PROTOCOL.start_step))
ANYTIME_DIGITS = _anytime(replace(DIGITS_PROTOCOL, steps=600, eval_every=100, start=DIGITS_PROTOCOL.start_step))
INGREDIENTS = (
    ("distill 0.5", {"distill_weight": 0.5}, ("single", "sp", "sp_sr"), "distillation from the dense model, every mode"),
    ("distill 0.9", {"distill_weight": 0.9}, ("single", "sp", "sp_sr"), "distillation from the dense model, every mode"),
    ("cosine", {"decay_shape": "cosine"}, ("sp", "sp_sr"), "decay shape"),
    ("N 10%", {"decay_frac": 0.1}, ("sp", "sp_sr"), "N as a fraction of T"),
    ("N 40%", {"decay_frac": 0.4}, ("sp", "sp_sr"), "N as a fraction of T (50% leaves SP+SR's 2N phase no room)"),
    ("decay lr x0.5", {"decay_lr_scale": 0.5}, ("sp", "sp_sr"), "learning rate during the decay"),
    ("decay lr x2", {"decay_lr_scale": 2.0}, ("sp", "sp_sr"), "learning rate during the decay"),
    ("BN at zero only", {"bn_at_zero": True, "recalibrate_bn": False}, ("single", "sp", "sp_sr"),
     "BN statistics re-estimated once when channels reach zero, not before every eval"),
    ("SR q 0.95", {"rate_quantile": 0.95}, ("sp_sr",), "Self-Rectifying: more releases"),
    ("SR m 1", {"patience": 1}, ("sp_sr",), "Self-Rectifying: patience"),
    ("cosine + distill 0.5", {"decay_shape": "cosine", "distill_weight": 0.5}, ("single", "sp_sr"),
     "the two most promising ingredients together"),
)


def _study(setup: str, protocol: Protocol, seeds: int) -> tuple[Comparison, tuple[Ablation, ...]]:
    main = Comparison(setup, protocol, {0.5: 0, 0.25: seeds, 0.125: seeds}, {}, keep_models=False,
                      modes=("single", "sp", "sp_sr"))
    return main, tuple(_ablate(setup, seeds, *a) for a in INGREDIENTS)


_DIGITS_STUDY, _MNIST_STUDY = _study(V, ANYTIME_DIGITS, 8), _study(M, ANYTIME_MNIST, 8)
# The >= 8-seed study of issue 15 (NOT run yet: about 3 h on 2 quiet cores by the pilot's timing).
INGREDIENTS_600 = Plan(comparisons=(_DIGITS_STUDY[0], _MNIST_STUDY[0]),
                       ablations=_DIGITS_STUDY[1] + _MNIST_STUDY[1], run_overhead=False)

# The study that was run (issue 15, docs/BENCHMARKS.md "Issue 15 study"): INGREDIENTS_600 cut to what
# 2 cores finish in a session. One plan per setup, so each runs in its own one-thread process. The main
# grid (single-step, SP, SP+SR at 4x and 8x) keeps the every-step anytime cadence; the 2x check and the
# ingredients evaluate every 5 steps inside the window: evaluation re-estimates BN on its own fixed batches
# and leaves training untouched, so final top-1 stays paired with the main grid (the anytime figure of a
# variant is then quoted with its cadence of 5).
_EVERY5 = {"eval_every_decay": 5}
STUDY_INGREDIENTS = (
    ("distill 0.5", {**_EVERY5, "distill_weight": 0.5}, ("single", "sp_sr"), "distillation, the same teacher"),
    ("BN at zero only", {**_EVERY5, "bn_at_zero": True, "recalibrate_bn": False}, ("single", "sp_sr"),
     "BN statistics re-estimated once when channels reach zero, not before every eval"),
    ("cosine", {**_EVERY5, "decay_shape": "cosine"}, ("sp_sr",), "decay shape"),
    ("N 40%", {**_EVERY5, "decay_frac": 0.4}, ("sp_sr",), "N as a fraction of T: a slower fade"),
    ("decay lr x0.5", {**_EVERY5, "decay_lr_scale": 0.5}, ("sp_sr",), "learning rate during the decay"),
    ("SR q 0.95", {**_EVERY5, "rate_quantile": 0.95}, ("sp_sr",), "Self-Rectifying: more releases"),
)


def _study15(setup: str, protocol: Protocol, seeds: int = 8) -> Plan:
    main = Comparison(setup, protocol, {0.25: seeds, 0.125: seeds}, {}, keep_models=False,
                      modes=("single", "sp", "sp_sr"))
    two_x = Ablation("2x", setup, 0.5, seeds, _EVERY5, ("single", "sp_sr"), "never worse at 2x?")
    first, last = STUDY_INGREDIENTS[:-1], STUDY_INGREDIENTS[-1:]  # run in this order: the SR variant last
    # Added after the 8x results: the two variants that moved the lowest anytime top-1 most, at 4x
    # (the anytime goal's budget).
    at_4x = tuple(Ablation(f"{name} at 4x", setup, 0.25, seeds, changes, ("sp_sr",), q)
                  for name, changes, _, q in STUDY_INGREDIENTS if name in ("cosine", "decay lr x0.5"))
    return Plan(comparisons=(main,), ablations=tuple(_ablate(setup, seeds, *a) for a in first) + (two_x,)
                + tuple(_ablate(setup, seeds, *a) for a in last) + at_4x, run_overhead=False)


STUDY_15_DIGITS = _study15(V, ANYTIME_DIGITS)
# ResNet-20/MNIST: an evaluation (20 BN batches + 1000 held-out digits) costs about 17 training steps, so
# the every-step cadence made one 600-step run take 12-20 min here (every 5 steps: 6.5 and 17 min for
# single-step and SP+SR). MNIST gets the goal's comparison only, single-step against the default SP+SR at
# 8x and 4x, evaluated every 25 steps inside the window (and always on the step the channels reach zero,
# i.e. right after a single-step cut). The cadence does not change training (evaluation re-estimates BN
# on its own batches; checked: identical final loss at cadence 1 and 5), so runs made at cadence 5
# before the switch stay paired on final top-1; their anytime figure is re-read at cadence 25.
STUDY_15_MNIST = Plan(comparisons=(Comparison(M, replace(ANYTIME_MNIST, eval_every_decay=25), {0.25: 8, 0.125: 8}, {},
                                              keep_models=False, modes=("single", "sp_sr")),), run_overhead=False)

# The MNIST half of the ingredient study (issue 15 item 2 asks for it on both suite models): SP alone at 8x
# (the unseen check's SR - SP finding) and the six ingredients of STUDY_INGREDIENTS at 8x, at cadence 25
# like STUDY_15_MNIST, whose runs they pair with (same setup, protocol, seeds).
_EVERY25 = {"eval_every_decay": 25}
_MNIST_25 = replace(ANYTIME_MNIST, eval_every_decay=25)
STUDY_15_MNIST_INGREDIENTS = Plan(
    comparisons=(Comparison(M, _MNIST_25, {0.125: 8}, {}, keep_models=False, modes=("sp",)),),
    ablations=tuple(_ablate(M, 8, name, {**changes, **_EVERY25}, modes, q)
                    for name, changes, modes, q in STUDY_INGREDIENTS),
    run_overhead=False)

# The pilot that was run (docs/BENCHMARKS.md, "pilot"): the smallest suite model, 3 paired seeds, 8x,
# single-step against SP+SR with and without distillation, at T = 150 and T = 600.
_PILOT = ("single", "sp_sr")
_T600 = {"steps": 600, "eval_every": 100, "start": DIGITS_PROTOCOL.start_step}
PILOT_15 = Plan(
    comparisons=(Comparison(V, _anytime(DIGITS_PROTOCOL), {0.125: 3}, {},
                            keep_models=False, modes=_PILOT),),
    ablations=(
        _ablate(V, 3, "distill 0.5", {"distill_weight": 0.5}, _PILOT, "distillation, every mode"),
        _ablate(V, 3, "T 600", _T600, _PILOT, "fine-tuning length"),
        _ablate(V, 3, "T 600 distill 0.5", {**_T600, "distill_weight": 0.5}, _PILOT,
                "distillation at the long budget"),
        _ablate(V, 3, "cosine", {"decay_shape": "cosine"}, ("sp_sr",), "decay shape"),
    ),
    run_overhead=False,
)

PLANS = {"full": FULL, "quick": QUICK, "mnist-extra": MNIST_EXTRA, "mnist-16seeds": MNIST_SEEDS16,
         "sr-cost-matched": SR_COST_MATCHED, "ingredients-600": INGREDIENTS_600, "pilot-15": PILOT_15,
         "study-15-digits": STUDY_15_DIGITS, "study-15-mnist": STUDY_15_MNIST,
         "study-15-mnist-ingredients": STUDY_15_MNIST_INGREDIENTS}
