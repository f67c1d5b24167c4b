"""The data behind the run plots: every step of every decay, exactly zero at the end, releases where
they happened, accuracy and loss with the decay window; and the dense pre-training labelled as such."""
from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from dpm_cli.report.runlog import read_events, read_norms
from dpm_cli.report.series import build_decay_series, decay_series, run_widths, training_series
from dpm_cli.training.loop import NORM_POINTS, Trainer
from report_run_helpers import DECAY_STEPS, event, make_run, write_events


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("report-run"))


def test_every_decay_has_every_step_and_ends_at_exactly_zero(run):
    """Was: norms every 20 steps (a 38-step ramp as two points), 'pruned' at the last logged norm."""
    data = decay_series(run)
    assert data.decay_steps == DECAY_STEPS
    pruned = [c for c in data.curves if c.end == "pruned"]
    assert len(pruned) >= 10
    for c in pruned:
        assert c.steps == list(range(c.steps[0], c.steps[0] + DECAY_STEPS + 1))  # N + 1 points, every step
        assert c.norms[-1] == 0.0
        assert all(a > b for a, b in zip(c.norms, c.norms[1:]))  # down at every step
        l_init = c.norms[0]
        for k, v in enumerate(c.norms):  # on the ramp, or below it where two structures share a weight
            assert v <= l_init * (DECAY_STEPS - k) / DECAY_STEPS + 1e-5
            assert v >= 0.9 * l_init * (DECAY_STEPS - k) / DECAY_STEPS - 1e-6


def test_curves_start_at_l_init_and_markers_sit_at_the_logged_events(run):
    data = decay_series(run)
    events = read_events(run / "events.jsonl")
    starts = {(e.key, e.step): e.norm for e in events if e.kind in ("selected", "replacement")}
    assert all(starts[(c.key, c.steps[0])] == c.norms[0] for c in data.curves)
    logged = [(e.kind, e.step, e.norm, e.key) for e in events if e.kind in ("release", "replacement", "pruned")]
    marked = [(m.kind, m.step, m.norm, m.key) for m in data.markers if m.kind != "suppressed"]
    assert marked == logged and all(m.norm is not None for m in data.markers)
    assert all(m.norm == 0.0 for m in data.markers if m.kind == "pruned")
    for c in data.curves:
        if c.end == "released":
            release = next(e for e in events if e.kind == "release" and e.key == c.key and e.step == c.steps[-1])
            assert c.norms[-1] == release.norm


def test_norms_are_logged_every_decay_step_not_every_log_step(run):
    norms = read_norms(run / "norms.jsonl")
    first = min(e.step for e in read_events(run / "events.jsonl") if e.kind == "selected")
    assert norms.steps[:DECAY_STEPS] == list(range(first, first + DECAY_STEPS))  # log_every is 10


@pytest.mark.parametrize("phase, stride", [(12, 1), (200, 1), (201, 2), (10_000, 50), (10_001, 51)])
def test_norm_log_stays_bounded_on_long_decays(phase, stride):
    fake = SimpleNamespace(pruner=SimpleNamespace(selection_steps=[5], decay_phase_end=5 + phase - 1))
    assert Trainer.norm_stride(fake) == stride
    assert -(-phase // stride) <= NORM_POINTS


def test_release_and_replacement_are_marked_where_they_happened(tmp_path):
    events = [event(1, "selected", "a:0", 1.0), event(1, "selected", "a:1", 2.0),
              event(3, "release", "a:0", 0.9), event(3, "replacement", "b:2", 0.6),
              event(5, "pruned", "a:1", 0.0), event(7, "pruned", "b:2", 0.0)]
    norms = [{"step": t, "norms": {"a:1": 2.0 * (4 - (t - 1)) / 4, **({"a:0": 1.0 - 0.25 * (t - 1)} if t < 3 else {}),
                                   **({"b:2": 0.6 * (4 - (t - 3)) / 4} if t >= 3 else {})}} for t in range(1, 7)]
    data = decay_series(write_events(tmp_path / "run", events, norms))
    assert data.decay_steps == 4 and data.window == (1, 7)
    curves = {(c.key, c.end): c for c in data.curves}
    released = curves[("a:0", "released")]
    assert released.steps == [1, 2, 3] and released.norms == [1.0, 0.75, 0.9]
    replacement = curves[("b:2", "pruned")]
    assert replacement.kind == "replacement" and replacement.steps == [3, 4, 5, 6, 7]
    assert replacement.norms[0] == 0.6 and replacement.norms[-1] == 0.0
    assert curves[("a:1", "pruned")].norms == [2.0, 1.5, 1.0, 0.5, 0.0]
    assert [(m.kind, m.step, m.norm) for m in data.markers] == [
        ("release", 3, 0.9), ("replacement", 3, 0.6), ("pruned", 5, 0.0), ("pruned", 7, 0.0)]


def test_logs_without_event_norms_still_end_at_zero(tmp_path):
    """Runs logged before events carried a norm: logged points, then exactly zero at the pruned step."""
    events = [{k: v for k, v in event(*e).items() if k != "norm"}
              for e in [(1, "selected", "a:0"), (9, "pruned", "a:0")]]
    norms = [{"step": t, "norms": {"a:0": 1.0 - t / 10}} for t in (4, 8)]
    data = build_decay_series(read_events(write_events(tmp_path / "run", events, norms) / "events.jsonl"),
                              read_norms(tmp_path / "run" / "norms.jsonl"))
    (curve,) = data.curves
    assert curve.steps == [4, 8, 9] and curve.norms[-1] == 0.0
    assert [(m.kind, m.norm) for m in data.markers] == [("pruned", 0.0)]


def test_accuracy_and_loss_over_the_run_with_the_decay_window(run):
    data = training_series(run)
    summary = json.loads((run / "summary.json").read_text())
    assert data.eval_steps == list(range(5, 41, 5)) and len(data.eval_top1) == len(data.eval_steps)
    assert data.train_steps == [10, 20, 30, 40] and len(data.train_loss) == 4
    first, last = decay_series(run).window
    assert data.window == (first, last) and first == 1 and last >= 1 + DECAY_STEPS
    assert data.before == summary["before"] and data.min_decay_top1 == summary["min_decay_top1"]
    assert data.min_decay_top1 == min(a for s, a in zip(data.eval_steps, data.eval_top1) if s <= last + 4)


def test_widths_before_and_after_come_from_the_run(run):
    summary = json.loads((run / "summary.json").read_text())
    assert run_widths(run) == [(w["name"], w["out_before"], w["out_after"]) for w in summary["widths"]]
    assert any(after < before for _, before, after in run_widths(run))


def test_plot_run_writes_every_plot(run, tmp_path):
    pytest.importorskip("matplotlib")
    from dpm_cli.report.plots import plot_run

    written = plot_run(run, tmp_path / "plots")
    assert [p.name for p in written] == ["decay_history.png", "training.png", "widths.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_dense_pretraining_is_labelled_as_such(tmp_path):
    """Was: the demo's dense pre-training ran under a 'dpm fine-tune' bar."""
    from cli_helpers import write_recipe

    from dpm_cli.pipeline.prune import prune
    from dpm_cli.recipe import load_recipe
    from dpm_cli.training.progress import PlainReporter

    recipe = write_recipe(tmp_path, steps=10, extra="pretrain: {enabled: true, epochs: 1, lr: 0.05}\n")
    stream = io.StringIO()
    prune(load_recipe(recipe), reporter=PlainReporter(stream))
    lines = stream.getvalue().splitlines()
    pre = [i for i, line in enumerate(lines) if line.startswith("[dense pre-training] step")]
    fine = [i for i, line in enumerate(lines) if line.startswith("[dpm fine-tune] step")]
    assert "dense pre-training: 10 steps" in lines and "dpm fine-tune: 10 steps" in lines
    assert pre and fine and max(pre) < min(fine)
