"""`dpm prune --reuse`: skip training when the outputs on disk were built from the same inputs.

The run directory's `summary.json` records the provenance of the run (see `dpm_cli.provenance`), the
output formats asked for and the sha256 of every output written. An earlier result is reused only
when all of these hold: same checkpoint, recipe and data hashes, same dpm/torch/torch-pruning
versions, the same output formats, and every output file still has the recorded hash. Anything else
is a mismatch, said in one line: without --force it is refused (exit 2, nothing touched), with
--force the run trains again and replaces the old result. A mismatch never reuses silently.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .. import provenance
from ..errors import InputError
from ..outputs import OutputPlan
from ..training.rundir import RunDir


# The provenance of a run, written when it starts: a run stopped before its summary (a CI job's
# timeout) is known by it, so `--reuse` continues it and `--resume` refuses other inputs.
STARTED_FROM = "provenance.json"


def record_start(run: RunDir, record: dict[str, Any]) -> None:
    run.write_text(run.path / STARTED_FROM, json.dumps(record, indent=2, sort_keys=True) + "\n")


def unfinished(record: dict[str, Any], run: RunDir) -> bool:
    """Whether `run` holds a run of exactly these inputs (checkpoint, recipe, data, versions) that
    stopped before it wrote its summary, with state to continue from: `--reuse` then resumes it."""
    if (run.path / "summary.json").exists() or not run.state.is_file():
        return False
    started = _read(run.path / STARTED_FROM)
    return started is not None and not provenance.differences(started, record, versions=True)


def resume_problem(record: dict[str, Any], run: RunDir) -> str | None:
    """Why `--resume` must not continue the run in `run` with these inputs, or None. The recipe may
    change where resuming allows it (rundir.recipe_changes says what); the checkpoint and the data may
    not: the run's state was trained from them. A run of an older dpm recorded nothing: not checked."""
    started = _read(run.path / STARTED_FROM)
    if started is None:
        return None
    reasons = [r for r in provenance.differences(started, record, versions=False) if not r.startswith("recipe")]
    if not reasons:
        return None
    return (f"--resume: {run.name} was started from other inputs ({'; '.join(reasons)}); resume with the checkpoint "
            "and data it was started from, or start over with --force and without --resume")


def output_hashes(files: dict[str, str]) -> dict[str, str]:
    return {fmt: provenance.sha256_path(path) for fmt, path in files.items()}


def reusable(current: dict[str, Any], run: RunDir, outputs: OutputPlan, *, force: bool) -> dict[str, Any] | None:
    """The earlier summary (as a dict) if it can be reused, None when there is nothing to reuse (or
    --force allows rebuilding a mismatch); raises InputError on a mismatch without --force."""
    summary_path = run.path / "summary.json"
    existing = [outputs.path(fmt) for fmt in outputs.formats if outputs.path(fmt).exists()]
    if not summary_path.is_file() and not existing:
        return None  # the first run: nothing to reuse
    earlier, reasons = _read(summary_path), []
    if earlier is None:
        reasons.append(f"no readable {summary_path}")
    else:
        reasons = provenance.differences(earlier.get("provenance"), current, versions=True)
        reasons += _output_problems(earlier, outputs)
    if not reasons:
        return earlier
    if force:
        return None
    raise InputError(f"--reuse: the result in {run.path} was not built from these inputs ({'; '.join(reasons)}); "
                     "pass --force with --reuse to rebuild it, or choose another --run-dir and --output")


def _output_problems(earlier: dict[str, Any], outputs: OutputPlan) -> list[str]:
    if sorted(earlier.get("output_formats") or []) != sorted(outputs.formats):
        return [f"output formats {earlier.get('output_formats')} recorded, {list(outputs.formats)} asked for"]
    recorded = earlier.get("output_sha256") or {}
    problems = []
    for fmt in outputs.formats:
        path = outputs.path(fmt)
        if fmt not in recorded:
            if path.exists():  # a file the run did not write (it said why in its notes)
                problems.append(f"{path} was not written by that run")
        elif not path.is_file():
            problems.append(f"{path} is missing")
        elif provenance.sha256_file(path) != recorded[fmt]:
            problems.append(f"{path} changed since it was written")
    if outputs.hf:  # the folder too: a deleted model-hf was "reused" and never written again, even with --force
        folder = outputs.hf_path()
        if "hf" not in recorded:
            problems.append(f"that run wrote no Hugging Face folder ({folder})")
        elif not folder.is_dir():
            problems.append(f"{folder} is missing")
        elif provenance.sha256_path(folder) != recorded["hf"]:
            problems.append(f"{folder} changed since it was written")
    return problems


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def summary_from(doc: dict[str, Any], summary_cls: type) -> Any:
    """Rebuild a PruneSummary from summary.json, marked as reused."""
    names = {f.name for f in dataclasses.fields(summary_cls)}
    summary = summary_cls(**{k: v for k, v in doc.items() if k in names})
    summary.reused = True
    key = (doc.get("provenance") or {}).get("key", "")[:12]
    summary.notes = [*summary.notes, f"reused the earlier result: same checkpoint, recipe, data and versions "
                                     f"(provenance key {key}); nothing was trained"]
    return summary
