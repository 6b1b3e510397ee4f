"""Write a tidy table to TensorBoard: one scalar per row, histograms of buffered activations.

Works with :class:`torch.utils.tensorboard.SummaryWriter` (``pip install tensorboard``) or any
object with its ``add_scalar`` / ``add_histogram`` methods (Lightning's
``TensorBoardLogger.experiment`` is one).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .._errors import ConfigError
from ..capture._tblog import row_tag, table_tags, write_table
from ..tables import validate_table

__all__ = ["log_to", "row_tag", "table_tags"]


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
    if histograms and rec is None:
        raise ConfigError("histograms=True needs the recorder (a table holds no activations); pass rec, not a table.")
    return write_table(table, writer, layer_data=rec.layer_data if histograms and rec is not None else None,
                       hist_step=rec.step_count if rec is not None else 0, prefix=prefix, step=step,
                       double_precision=double_precision)
