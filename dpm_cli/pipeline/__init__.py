"""End-to-end jobs built from the library's parts: prune a checkpoint, plan it without training, or
train a dense model to prune (`train_dense`)."""
from .context import RunContext, load_context
from .plan import PlanReport, plan
from .pretrain import TrainSummary, train_dense
from .prune import PruneSummary, prune

__all__ = ["RunContext", "load_context", "PlanReport", "plan", "PruneSummary", "prune", "TrainSummary",
           "train_dense"]
