"""The DPM engine: groups, selection, Smooth Pruning, Self-Rectifying, compaction."""
from .bn import recalibrate_batchnorm
from .compaction import CompactionResult, LayerWidth
from .config import DPMConfig, RectifyConfig
from .pruner import DecayPruner, compact
from .state import Event, Progress

__all__ = ["DecayPruner", "DPMConfig", "RectifyConfig", "CompactionResult", "LayerWidth", "Event",
           "Progress", "compact", "recalibrate_batchnorm"]
