"""repdiag: what normalization does to a network's hidden representations and optimization.

``import repdiag`` is cheap: torch, pandas and the metric code load on first use of a name.

>>> import repdiag
>>> rec = repdiag.attach(model)            # doctest: +SKIP
>>> ...; rec.step(labels=y)                # doctest: +SKIP
>>> rec.table()                            # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DistributedError,
    LayerNotFoundError,
    NonFiniteError,
    RepdiagError,
    RepdiagWarning,
    ShapeError,
)
from ._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from . import bn, capture, functional, landscape, metrics, nn, runs, tables
    from .capture import Recorder, attach
    from ._findings import findings
    from .runs import load_run
    from .tables import compare

__all__ = [
    "__version__",
    "attach",
    "Recorder",
    "compare",
    "load_run",
    "findings",
    "save_checkpoint",
    "load_checkpoint",
    "RepdiagError",
    "ShapeError",
    "ConfigError",
    "LayerNotFoundError",
    "NonFiniteError",
    "CheckpointError",
    "DataError",
    "DistributedError",
    "RepdiagWarning",
    "functional",
    "capture",
    "metrics",
    "tables",
    "runs",
    "landscape",
    "bn",
    "nn",
]

_LAZY_ATTRS = {
    "attach": ("repdiag.capture", "attach"),
    "Recorder": ("repdiag.capture", "Recorder"),
    "compare": ("repdiag.tables", "compare"),
    "load_run": ("repdiag.runs", "load_run"),
    "findings": ("repdiag._findings", "findings"),
    "save_checkpoint": ("repdiag.checkpoint", "save_checkpoint"),
    "load_checkpoint": ("repdiag.checkpoint", "load_checkpoint"),
}
_LAZY_MODULES = {"functional", "capture", "metrics", "tables", "runs", "landscape", "bn", "nn", "checkpoint",
                 "integrations"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRS:
        mod, attr = _LAZY_ATTRS[name]
        value = getattr(importlib.import_module(mod), attr)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(f"repdiag.{name}")
    else:
        raise AttributeError(f"module 'repdiag' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
