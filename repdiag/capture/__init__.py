"""Capture: forward hooks, bounded reservoirs and streaming statistics."""

from ._buffer import Reservoir
from ._native import available as native_available
from ._native import use_native
from ._attach import attach
from ._recorder import Recorder, StepContext
from ._select import ACTIVATION_TYPES, list_layers, select_layers, unwrap
from ._stats import HIST_BINS, StreamingStats

__all__ = [
    "ACTIVATION_TYPES",
    "HIST_BINS",
    "Recorder",
    "Reservoir",
    "StepContext",
    "StreamingStats",
    "attach",
    "list_layers",
    "native_available",
    "select_layers",
    "unwrap",
    "use_native",
]
