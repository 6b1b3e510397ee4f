"""From a recorder's buffers to table rows: the per-layer data metrics see, the metric rows
computed on it (with one warning per skipped metric and reason), and the finishing of rows into
a tidy table frame."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from .._errors import RepdiagWarning
from .._layers import module_layers, run_depths
from ..metrics._plan import KMeansMemory, run_plan
from ..metrics._registry import LayerData, Metric, Row
from ..tables import MODEL_LAYER, make_table
from ._distributed import gather_layer_data, sync_target

if TYPE_CHECKING:  # pragma: no cover
    from ._recorder import Recorder

__all__ = ["collect_layer_data", "compute_rows", "finish_rows", "depth_order"]


def collect_layer_data(rec: Recorder) -> list[LayerData]:
    """The body of :meth:`Recorder.layer_data` (a collective under ``torch.distributed``)."""
    if sync_target(rec.distributed) is not None:
        return gather_layer_data(rec) or []
    out = []
    for lay in rec._ordered():
        if lay.stats is None or lay.reservoir.data is None:
            continue
        x, y = lay.reservoir.rows()
        out.append(LayerData(lay.name, lay.kind, int(lay.depth or 0), x, y, lay.stats, rec.inner, lay.module))
    return out


def compute_rows(rec: Recorder, metrics: Sequence[Metric], *, stacklevel: int) -> list[Row]:
    """The body of :meth:`Recorder.compute`: rows of ``metrics`` on ``rec.layer_data()``.

    Sets ``rec.skipped`` and warns once per (metric, reason) at ``stacklevel`` (counted from the
    caller of this function, as for :func:`warnings.warn`)."""
    data = rec.layer_data()
    if not data and sync_target(rec.distributed) is not None:
        return []  # nothing captured on any rank, or a rank that does not receive (rank0)
    memory = getattr(rec, "_plan_memory", None)  # k-means warm starts: the recorder's, across calls
    if memory is None:
        memory = KMeansMemory()
        setattr(rec, "_plan_memory", memory)
    rows, rec.skipped = run_plan(data, metrics, rec.metric_options, model=rec.inner, memory=memory)
    by_reason: dict[tuple[str, str], list[str]] = {}
    for name, lay_name, reason in rec.skipped:
        by_reason.setdefault((name, reason), []).append(lay_name)
    for (name, reason), names in by_reason.items():
        warnings.warn(f"metric {name!r} skipped on {len(names)} layer(s) ({', '.join(names[:3])}"
                      f"{', ...' if len(names) > 3 else ''}): {reason}", RepdiagWarning, stacklevel=stacklevel + 1)
    return rows


def depth_order(rec: Recorder) -> dict[str, int]:
    """One depth per layer of the run (:func:`repdiag._layers.run_depths`): the hooked layers in
    forward order with the other layers rows name (BN of the gamma table, probe layers) between them."""
    return run_depths(module_layers(rec.inner), [lay.name for lay in rec._ordered() if lay.depth is not None])


def finish_rows(rec: Recorder, rows: Iterable[Row], *, step: int | None) -> pd.DataFrame:
    """``rows`` as a table frame, with the recorder's run, ``step`` and model-level defaults filled
    in, ``depth`` unique per layer (:func:`depth_order`) and ``value`` a float (``None`` -> NaN)."""
    out = []
    depths = depth_order(rec)
    for r in rows:
        r = dict(r)
        r.setdefault("run", rec.run)
        r.setdefault("step", step)
        r.setdefault("layer", MODEL_LAYER)
        r.setdefault("module", type(rec.inner).__name__)
        r["depth"] = depths.get(r["layer"], r.get("depth", -1))
        r.setdefault("n", pd.NA)
        v = r.get("value")
        r["value"] = float("nan") if v is None else float(v)
        out.append(r)
    return make_table(out)
