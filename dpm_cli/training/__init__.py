"""The built-in fine-tuning loop: objective, optimizer and schedule, evaluation, run state, progress."""
from .loop import Trainer, TrainerHooks
from .objective import Objective
from .optim import build_optimizer, build_scheduler

__all__ = ["Trainer", "TrainerHooks", "Objective", "build_optimizer", "build_scheduler"]
