"""pimsim: a cycle-approximate Processing-In-Memory simulator for recommender-model traces.

pimsim never imports torch: a trace file and a hardware preset are all it needs.
"""

from pimsim.presets import list_presets, load_preset
from pimsim.spec import HardwareSpec

__all__ = ["HardwareSpec", "list_presets", "load_preset"]
