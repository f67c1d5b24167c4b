"""The DPM engine: groups, selection, Smooth Pruning, Self-Rectifying, compaction."""
from .bn import recalibrate_batchnorm
from .compaction import CompactionResult, LayerWidth, compact
from .config import DPMConfig, RectifyConfig
from .pruner import DecayPruner
from .state import Event, Progress

__all__ = ["DecayPruner", "DPMConfig", "RectifyConfig", "CompactionResult", "LayerWidth", "Event",
           "Progress", "compact", "recalibrate_batchnorm"]
