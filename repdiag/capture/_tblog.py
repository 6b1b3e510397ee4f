"""Writing a tidy table (and a recorder's buffered activations) to a TensorBoard writer: the
part of :mod:`repdiag.integrations.tensorboard` that :meth:`Recorder.log_to` needs, kept here so
that capture never imports the integrations layer (integrations depend on capture, not the
reverse)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from .._errors import ConfigError, RepdiagWarning
from ..metrics._registry import LayerData
from ..tables import CORE_COLUMNS, MODEL_LAYER

__all__ = ["row_tag", "table_tags", "write_table"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def row_tag(row: Mapping[Any, Any], params: Sequence[str] = (), *, run: bool = False) -> str:
    """The tag of one table row: ``[run/]layer/metric[/param=value ...]``.

    Parameter columns (``params``) that hold a value in this row are appended in order, so rows
    of one metric that differ only by a parameter (``k=2``, ``k=5``) get distinct tags.

    Examples
    --------
    >>> row_tag({"layer": "features.2", "metric": "sparsity", "k": None}, ["k"])
    'features.2/sparsity'
    >>> row_tag({"layer": "fc", "metric": "kmeans_nmi", "k": 10.0}, ["k"])
    'fc/kmeans_nmi/k=10'
    """
    parts = [str(row["run"])] if run else []
    parts += [str(row["layer"]), str(row["metric"])]
    for p in params:
        v = row.get(p)
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            continue
        parts.append(f"{p}={_fmt(v)}")
    return "/".join(parts)


def table_tags(table: pd.DataFrame) -> list[str]:
    """The tag of every row of ``table`` (see :func:`row_tag`), in row order; the run is the first
    part of the tag when the table holds more than one run."""
    params = [c for c in table.columns if c not in CORE_COLUMNS]
    several_runs = table["run"].nunique(dropna=False) > 1
    return [row_tag(r, params, run=several_runs) for r in table.to_dict("records")]


def write_table(table: pd.DataFrame, writer: Any, *, layer_data: Callable[[], list[LayerData]] | None = None,
                hist_step: int = 0, prefix: str = "", step: int | None = None,
                double_precision: bool = False) -> pd.DataFrame:
    """The body of :func:`repdiag.integrations.tensorboard.log_to` once the source is a table
    (and, for histograms, the recorder's ``layer_data``)."""
    if not hasattr(writer, "add_scalar"):
        raise ConfigError(f"writer must have add_scalar (a torch.utils.tensorboard.SummaryWriter); got "
                          f"{type(writer).__name__}.")
    kwargs = {"new_style": True, "double_precision": True} if double_precision else {}
    for tag, r in zip(table_tags(table), table.to_dict("records")):
        s = step if step is not None else (0 if r["step"] is pd.NA or r["step"] is None else int(r["step"]))
        writer.add_scalar(prefix + tag, float(r["value"]), global_step=s, **kwargs)
    if layer_data is not None:
        hist_step = step if step is not None else hist_step
        for d in layer_data():
            if d.samples is None or d.samples.numel() == 0 or d.layer == MODEL_LAYER:
                continue  # nothing buffered since the last reset
            x = d.samples.detach().flatten()
            x = x[x.isfinite()].float().cpu()
            if x.numel() == 0:
                warnings.warn(f"no finite buffered activations in layer {d.layer!r}; histogram skipped",
                              RepdiagWarning, stacklevel=3)
                continue
            writer.add_histogram(f"{prefix}{d.layer}/activations", x, global_step=hist_step)
    if hasattr(writer, "flush"):
        writer.flush()
    return table
