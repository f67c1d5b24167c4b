"""Outputs are never pruned, compaction is a transaction, the preflight fails before training,
graph building is bounded, and pruning through LayerNorm is an opt-in that reports its drift."""
from __future__ import annotations

import threading
import time

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp
from engine_helpers import ConvHead, HardcodedSplit, NormResidual, TwoOutputs, TwoStage, batch, train_steps

from dpm_cli.engine import DecayPruner, DPMConfig
from dpm_cli.engine.deadline import Deadline
from dpm_cli.engine.outputs import compare_outputs
from dpm_cli.errors import CompactionError, EquivalenceError, GraphTimeoutError, PreflightError
from dpm_cli.models import build_model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return list(now) == list(state) and all(torch.equal(now[k], state[k]) for k in state)


def _decay(model: nn.Module, x: torch.Tensor, **options) -> DecayPruner:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = DecayPruner(model, x[:1], DPMConfig(decay_steps=1, **options), optimizer=opt)
    y = torch.randint(0, 10, (x.shape[0],))
    train_steps(model, opt, pruner, pruner.decay_phase_end, (x, y))
    return pruner


# ----------------------------------------------------------------- item 3: outputs are protected
def test_squeezenet_class_outputs_are_protected():
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    model = models.squeezenet1_1(num_classes=1000)
    x = torch.randn(1, 3, 64, 64)
    pruner = DecayPruner(model, x, DPMConfig(budget=1.0, decay_steps=1))
    assert "classifier.1" in pruner.protected and "classifier.1" not in {g.name for g in pruner.groups}
    assert pruner.skipped["classifier.1"].startswith("protected: feeds model output 0 of shape [1, 1000]")
    pruner.prune_now([(gi, 0) for gi in range(len(pruner.groups))])
    result = pruner.compact()
    assert model.eval()(x).shape == (1, 1000) and result.max_rel_error <= 1e-5


def test_conv_head_protected_and_output_layer_named():
    pruner = DecayPruner(ConvHead(), torch.randn(1, 1, 8, 8), DPMConfig(budget=0.6, decay_steps=1))
    assert pruner.protected == {"classifier.0": "feeds model output 0 of shape [1, 10]"}
    assert pruner.classifier is None  # the output comes from pooling, not from a Conv/Linear directly
    assert DecayPruner(TwoStage(), torch.randn(1, 1, 8, 8), DPMConfig(decay_steps=1)).classifier == "fc"


def test_every_output_field_is_protected_and_compared():
    pruner = DecayPruner(TwoOutputs(), torch.randn(1, 1, 8, 8), DPMConfig(budget=0.8, decay_steps=1))
    assert set(pruner.protected) == {"head", "embed"}
    assert [g.name for g in pruner.groups] == ["body"]
    ref = {"output.logits": torch.ones(2, 3), "output.embedding": torch.ones(2, 4)}
    other = {"output.logits": torch.ones(2, 3), "output.embedding": torch.full((2, 4), 1.5)}
    comparison = compare_outputs(ref, other)
    assert comparison.errors == {"output.logits": 0.0, "output.embedding": 0.5} and comparison.max_rel_error == 0.5


class RandomMask(nn.Module):
    """Draws random numbers in eval mode too, as ViT-MAE's patch masking does."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(x) * (torch.rand(x.shape[-1]) > 0.5)


def test_a_forward_that_draws_random_numbers_is_compared_from_one_random_state_and_leaves_the_callers():
    from dpm_cli.engine.outputs import snapshot_outputs

    model, x = RandomMask(), torch.randn(2, 8)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first, second = snapshot_outputs(model, x), snapshot_outputs(model, x)
    assert compare_outputs(first, second).max_rel_error == 0.0
    assert torch.equal(torch.get_rng_state(), state)  # training and a resumed run draw as before


def test_output_shape_change_is_named_not_inf():
    """With the protection switched off the head is pruned; compaction says the shape changed."""
    model = ConvHead()
    x = torch.randn(2, 1, 8, 8)
    pruner = DecayPruner(model, x[:1], DPMConfig(budget=1.0, decay_steps=1, ignore_classifier=False,
                                                 preflight=False))
    head = next(gi for gi, g in enumerate(pruner.groups) if g.name == "classifier.0")
    pruner.prune_now([(head, 0)])
    before = _state(model)
    with pytest.raises(EquivalenceError, match=r"changed the shape of output from \[1, 10\] to \[1, 9\]") as err:
        pruner.compact()
    assert "inf" not in str(err.value) and "left as it was" in str(err.value)
    assert _same(model, before) and model.classifier[0].out_channels == 10


# ----------------------------------------------------------------- item 4: transactional compaction
def test_compact_is_transactional(monkeypatch):
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, in_channels=1, width=8)
    x, _ = batch(4, 8)
    pruner = DecayPruner(model, x[:1], DPMConfig(budget=0.5, decay_steps=1, preflight=False))
    keys = [(gi, c) for gi, g in enumerate(pruner.groups) for c in range(g.channels // 2)]
    pruner.prune_now(keys)
    before, params = _state(model), list(model.parameters())
    widths = [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, nn.Conv2d)]
    model.eval()
    out = model(x)
    calls, real = [], tp.dependency.Group.prune

    def fail_on_third(group, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure midway")
        return real(group, *args, **kwargs)

    monkeypatch.setattr(tp.dependency.Group, "prune", fail_on_third)
    with pytest.raises(CompactionError, match="injected failure midway.*left as it was"):
        pruner.compact()
    assert len(calls) == 3
    assert _same(model, before) and all(a is b for a, b in zip(model.parameters(), params))
    assert [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, nn.Conv2d)] == widths
    assert torch.equal(model(x), out)
    monkeypatch.setattr(tp.dependency.Group, "prune", real)
    result = pruner.compact()  # the rolled-back graph still compacts correctly
    assert result.max_rel_error <= 1e-5 and result.macs_kept < 0.9


# ----------------------------------------------------------------- item 4: preflight
def test_preflight_names_group_and_ignore_pattern_and_leaves_model_untouched():
    torch.manual_seed(0)
    model = HardcodedSplit()
    before = _state(model)
    start = time.monotonic()
    with pytest.raises(PreflightError) as err:
        DecayPruner(model, torch.randn(1, 1, 8, 8), DPMConfig(budget=0.6, decay_steps=1))
    assert time.monotonic() - start < 20
    message = str(err.value)
    assert "\n" not in message and "group fc2" in message and "add 'fc2' to pruning.ignore" in message
    assert _same(model, before) and model.fc2.out_features == 32
    assert not any(m._forward_hooks for m in model.modules())
    # The ignore it suggests gets past it, and the run then compacts exactly.
    pruner = _decay(model, torch.randn(8, 1, 8, 8), budget=0.8, ignore=["fc2"])
    assert pruner.compact().max_rel_error <= 1e-5


def test_preflight_keeps_model_bit_identical_on_success():
    torch.manual_seed(0)
    model = build_model("densenet_small")  # concatenation: torch-pruning's concat sizes are restored too
    x = torch.randn(2, 3, 32, 32)
    before, params = _state(model), list(model.parameters())
    pruner = _decay(model, x, budget=0.5)
    assert all(a is b for a, b in zip(pruner.model.parameters(), params))
    assert pruner.compact().max_rel_error <= 1e-5
    model2 = build_model("densenet_small")
    model2.load_state_dict(before)
    DecayPruner(model2, x[:1], DPMConfig(budget=0.5, decay_steps=1))
    assert _same(model2, before)


# ----------------------------------------------------------------- item 5: bounded graph building
def test_graph_timeout_stops_with_a_clear_message(monkeypatch):
    def slow_build(self, model, example_inputs, **kwargs):
        model(example_inputs)
        time.sleep(30)

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", slow_build)
    start = time.monotonic()
    with pytest.raises(GraphTimeoutError, match=r"did not finish within 0.5 s \(tracing the model\); "
                                                r"raise graph_timeout_s"):
        DecayPruner(TwoStage(), torch.randn(1, 1, 8, 8), DPMConfig(graph_timeout_s=0.5))
    assert time.monotonic() - start < 5


def test_deadline_reports_progress_and_works_off_the_main_thread():
    lines: list[str] = []
    with Deadline(10, "building", lines.append, every_s=0.2) as deadline:
        deadline.status = "3 groups so far"
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            sum(range(100))
    assert lines and lines[0].startswith("building: ") and lines[0].endswith(", 3 groups so far")
    caught: list[BaseException] = []

    def worker() -> None:
        try:
            with Deadline(0.3, "building"):
                end = time.monotonic() + 5
                while time.monotonic() < end:
                    (lambda: None)()
        except GraphTimeoutError as err:
            caught.append(err)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert len(caught) == 1 and "within 0.3 s" in str(caught[0])


# ----------------------------------------------------------------- item 6: through normalisation
def test_prune_through_norm_is_opt_in_and_reports_drift():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    exact = DecayPruner(NormResidual(), x[:1], DPMConfig(budget=0.7, decay_steps=1))
    residual = lambda p: [g for g in p.groups if any(s.name == "embed.weight" for s in g.slices)]  # noqa: E731
    norm_skips = [why for why in exact.skipped.values() if "(LayerNorm)" in why]
    assert not residual(exact) and len(norm_skips) == 1 and norm_skips[0].endswith(
        "(LayerNorm) normalises across channels; removing a zeroed channel would change its statistics "
        "(opt in with prune_through_norm)")
    model = NormResidual()
    pruner = _decay(model, x, budget=0.5, prune_through_norm=True)
    assert len(residual(pruner)) == 1 and not any("LayerNorm" in why for why in pruner.skipped.values())
    assert model.embed.out_features == 32
    result = pruner.compact()  # not refused, although the LayerNorm statistics moved
    assert result.exact is False and 1e-6 < result.max_rel_error < float("inf")
    assert model.embed.out_features < 32 and model.norm.normalized_shape[0] == model.embed.out_features
    assert abs(result.macs_kept - 0.5) / 0.5 <= 0.02
    assert model.eval()(x).shape == (16, 10)
