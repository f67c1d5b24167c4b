"""A real, small pruning run (digits MLP, N = 12, releases on) for the report tests, plus synthetic logs."""
from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import write_checkpoint, write_recipe

DECAY_STEPS = 12


def make_run(tmp: Path) -> Path:
    """`dpm prune` on the digits MLP: 40 steps, N = 12, metrics logged every 10 steps (sparser than N),
    evaluated every 5. Returns the run folder."""
    from dpm_cli.pipeline.prune import prune
    from dpm_cli.recipe import load_recipe

    tmp.mkdir(parents=True, exist_ok=True)
    recipe = write_recipe(tmp, steps=40)
    text = recipe.read_text().replace("decay_steps: 4", f"decay_steps: {DECAY_STEPS}")
    recipe.write_text(text.replace("log_every: 5", "log_every: 10\n  eval_every: 5"))
    prune(load_recipe(recipe), model_path=write_checkpoint(tmp))
    return tmp / "run"


def write_events(run: Path, events: list[dict], norms: list[dict] = ()) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (run / "norms.jsonl").write_text("".join(json.dumps(n) + "\n" for n in norms))
    return run


def event(step: int, kind: str, key: str, norm: float | None = None) -> dict:
    group, index = key.split(":")
    return {"step": step, "kind": kind, "group": group, "index": int(index), "round": 0,
            "c_rate": 0.5 if kind == "release" else None, "c_len": 2.0 if kind == "release" else None,
            "note": "", "norm": norm}
