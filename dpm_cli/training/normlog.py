"""The decay curves' data: norms of the decaying structures, appended to RUN/norms.jsonl during the decay.

Logged at every step of the decay phase, or at every k-th step when the phase is longer than
NORM_POINTS: enough points for a linear ramp to look like one, and norms.jsonl stays bounded.
"""
from __future__ import annotations

import math
from typing import Any

NORM_POINTS = 200


def norm_stride(pruner: Any) -> int:
    """Log decaying norms every this many steps: 1 unless the decay phase is long."""
    if pruner is None:
        return 1
    span = pruner.decay_phase_end - pruner.selection_steps[0] + 1
    return max(1, math.ceil(span / NORM_POINTS))


def log_decaying_norms(pruner: Any, run_dir: Any, step: int) -> None:
    """Append this step's norms when something decays and the step is on the stride."""
    if run_dir is None or pruner is None or pruner.round < 0:
        return
    if (step - pruner.selection_steps[0]) % norm_stride(pruner) != 0:
        return
    norms = pruner.decaying_norms()
    if norms:
        run_dir.append(run_dir.norms, {"step": step, "norms": norms})
