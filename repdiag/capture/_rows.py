"""From buffers to table rows: the per-layer data metrics see, the metric rows computed on it
(with one warning per skipped metric and reason), and the finishing of rows into a tidy table
frame. Each function takes what it needs (layers, model, options), not the recorder."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from torch import nn

from .._errors import RepdiagWarning
from .._layers import module_layers, run_depths
from ..metrics._plan import KMeansMemory, run_plan
from ..metrics._registry import LayerData, Metric, Row, settle_rows
from ..tables import MODEL_LAYER, make_table
from ._hooks import HookedLayer

__all__ = ["collect_layer_data", "compute_rows", "finish_rows", "depth_order"]


def collect_layer_data(layers: Iterable[HookedLayer], model: nn.Module) -> list[LayerData]:
    """What metric plugins see of this process's ``layers`` (in forward order): one entry per
    layer that has run."""
    out = []
    for lay in layers:
        if lay.stats is None or lay.reservoir.data is None:
            continue
        x, y = lay.reservoir.rows()
        out.append(LayerData(lay.name, lay.kind, int(lay.depth or 0), x, y, lay.stats, model, lay.module))
    return out


def compute_rows(data: list[LayerData], metrics: Sequence[Metric], options: Mapping[str, Mapping[str, Any]], *,
                 model: nn.Module, memory: KMeansMemory, distributed: bool,
                 stacklevel: int) -> tuple[list[Row], list[tuple[str, str, str]]]:
    """Rows of ``metrics`` on ``data`` and the (metric, layer, reason) of each skipped one.

    Warns once per (metric, reason) at ``stacklevel`` (counted from the caller of this function,
    as for :func:`warnings.warn`). ``memory`` keeps k-means warm starts across calls."""
    if not data and distributed:
        return [], []  # nothing captured on any rank, or a rank that does not receive (rank0)
    rows, skipped = run_plan(data, metrics, {k: dict(v) for k, v in options.items()}, model=model, memory=memory)
    by_reason: dict[tuple[str, str], list[str]] = {}
    for name, lay_name, reason in skipped:
        by_reason.setdefault((name, reason), []).append(lay_name)
    for (name, reason), names in by_reason.items():
        warnings.warn(f"metric {name!r} skipped on {len(names)} layer(s) ({', '.join(names[:3])}"
                      f"{', ...' if len(names) > 3 else ''}): {reason}", RepdiagWarning, stacklevel=stacklevel + 1)
    return rows, skipped


def depth_order(model: nn.Module, hooked: Sequence[str]) -> dict[str, int]:
    """One depth per layer of the run (:func:`repdiag._layers.run_depths`): the ``hooked`` layers
    (that have run, in forward order) with the other layers rows name (BN of the gamma table,
    probe layers) between them."""
    return run_depths(module_layers(model), list(hooked))


def finish_rows(rows: Iterable[Row], *, run: str | None, step: int | None, model: nn.Module,
                depths: Mapping[str, int]) -> pd.DataFrame:
    """``rows`` as a table frame, with ``run``, ``step`` and model-level defaults filled in,
    ``depth`` unique per layer (``depths``, from :func:`depth_order`) and ``value`` a float
    (``None`` -> NaN)."""
    out = []
    # values still on a device (rows that did not come through run_plan): one transfer for all
    for r in settle_rows([dict(r) for r in rows]):
        r.setdefault("run", run)
        r.setdefault("step", step)
        r.setdefault("layer", MODEL_LAYER)
        r.setdefault("module", type(model).__name__)
        r["depth"] = depths.get(r["layer"], r.get("depth", -1))
        r.setdefault("n", pd.NA)
        v = r.get("value")
        r["value"] = float("nan") if v is None else float(v)
        out.append(r)
    return make_table(out)
