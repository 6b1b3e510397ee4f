"""Write a tidy table to TensorBoard: one scalar per row, histograms of buffered activations.

Works with :class:`torch.utils.tensorboard.SummaryWriter` (``pip install tensorboard``) or any
object with its ``add_scalar`` / ``add_histogram`` methods (Lightning's
``TensorBoardLogger.experiment`` is one).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .._errors import ConfigError, RepdiagWarning
from ..tables import CORE_COLUMNS, MODEL_LAYER, validate_table

__all__ = ["log_to", "row_tag", "table_tags"]


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


def log_to(
    source: Any,
    writer: Any,
    *,
    histograms: bool = False,
    prefix: str = "",
    step: int | None = None,
    double_precision: bool = False,
) -> pd.DataFrame:
    """Write every row of a table as a TensorBoard scalar; returns the table written.

    Parameters
    ----------
    source : Recorder or DataFrame
        A recorder (its :meth:`~repdiag.Recorder.table` is written) or a tidy table.
    writer : SummaryWriter
        Anything with ``add_scalar(tag, value, global_step)`` (and ``add_histogram`` for
        ``histograms=True``).
    histograms : bool
        Also write a histogram of each layer's buffered activations (all entries of the kept
        rows) under ``layer/activations``; needs a recorder.
    prefix : str
        Prepended to every tag (say ``"repdiag/"``).
    step : int, optional
        ``global_step`` for every scalar; by default each row's ``step`` (0 where missing).
    double_precision : bool
        Store float64 values (new-style tensor summaries) instead of TensorBoard's default
        float32 ``simple_value``.

    Notes
    -----
    Tags are ``[run/]layer/metric[/param=value]`` (:func:`row_tag`); TensorBoard groups them by
    layer. With ``torch.distributed`` initialised, a recorder's table and histograms describe
    every rank (this is then a collective: call it on every rank).

    Examples
    --------
    >>> from torch.utils.tensorboard import SummaryWriter    # doctest: +SKIP
    >>> repdiag.integrations.tensorboard.log_to(rec, SummaryWriter("runs/bn"))  # doctest: +SKIP
    """
    from ..capture import Recorder

    if isinstance(source, Recorder):
        rec: Recorder | None = source
        table = source.table()
    elif isinstance(source, pd.DataFrame):
        rec, table = None, validate_table(source)
    else:
        raise ConfigError(f"source must be a repdiag Recorder or a tidy table (DataFrame); got "
                          f"{type(source).__name__}. Pass rec or rec.table().")
    if not hasattr(writer, "add_scalar"):
        raise ConfigError(f"writer must have add_scalar (a torch.utils.tensorboard.SummaryWriter); got "
                          f"{type(writer).__name__}.")
    if histograms and rec is None:
        raise ConfigError("histograms=True needs the recorder (a table holds no activations); pass rec, not a table.")
    kwargs = {"new_style": True, "double_precision": True} if double_precision else {}
    for tag, r in zip(table_tags(table), table.to_dict("records")):
        s = step if step is not None else (0 if r["step"] is pd.NA or r["step"] is None else int(r["step"]))
        writer.add_scalar(prefix + tag, float(r["value"]), global_step=s, **kwargs)
    if histograms and rec is not None:
        hist_step = step if step is not None else rec.step_count
        for d in rec.layer_data():
            if d.samples is None or d.samples.numel() == 0 or d.layer == MODEL_LAYER:
                continue  # nothing buffered since the last reset
            x = d.samples.detach().flatten()
            x = x[x.isfinite()].float().cpu()
            if x.numel() == 0:
                warnings.warn(f"no finite buffered activations in layer {d.layer!r}; histogram skipped",
                              RepdiagWarning, stacklevel=2)
                continue
            writer.add_histogram(f"{prefix}{d.layer}/activations", x, global_step=hist_step)
    if hasattr(writer, "flush"):
        writer.flush()
    return table
