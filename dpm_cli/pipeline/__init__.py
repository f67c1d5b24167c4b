"""End-to-end jobs built from the library's parts: prune a checkpoint, or plan it without training."""
from .context import RunContext, load_context
from .plan import PlanReport, plan
from .prune import PruneSummary, prune

__all__ = ["RunContext", "load_context", "PlanReport", "plan", "PruneSummary", "prune"]
