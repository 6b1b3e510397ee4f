"""Metric plugins: a registry of functions turning a layer's buffers and statistics into rows.

Built-ins live in ``repdiag/metrics/_plugin_*.py`` and register themselves on import; third-party
packages add theirs through the ``repdiag.metrics`` entry-point group.
"""

from ._registry import (
    ENTRY_POINT_GROUP,
    NEEDS,
    LayerData,
    Metric,
    Row,
    available_metrics,
    default_metrics,
    get_metric,
    register_metric,
    resolve_metrics,
    unregister_metric,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "NEEDS",
    "LayerData",
    "Metric",
    "Row",
    "available_metrics",
    "default_metrics",
    "get_metric",
    "register_metric",
    "resolve_metrics",
    "unregister_metric",
]
