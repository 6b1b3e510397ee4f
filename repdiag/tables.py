"""The tidy table: one row per observation, one schema for every measurement.

Core columns, in order (see ``DESIGN.md``):

========  =========  =====================================================================
column    dtype      meaning
========  =========  =====================================================================
run       string     run name given to ``attach`` / the checkpoint's name in a report
step      Int64      training step at which the sample was taken (nullable)
layer     string     module path from ``named_modules()``; ``MODEL_LAYER`` for model-wide rows
module    string     module class name
depth     Int64      position of the layer in forward order (``-1`` for model-wide rows)
metric    string     metric name
value     float64    the measurement; NaN where undefined (a warning says why)
n         Int64      number of samples it was computed from
========  =========  =====================================================================

A metric with a parameter (a threshold, a step size, k) adds a column named after it; rows of
other metrics hold NaN (``<NA>``) there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from ._errors import ConfigError, RepdiagError

__all__ = [
    "CORE_COLUMNS",
    "CORE_DTYPES",
    "MODEL_LAYER",
    "RUN_COLUMNS",
    "TableError",
    "make_table",
    "empty_table",
    "validate_table",
    "concat_tables",
    "compare",
    "align_layers",
    "write_table",
    "read_table",
]

CORE_COLUMNS: tuple[str, ...] = ("run", "step", "layer", "module", "depth", "metric", "value", "n")
CORE_DTYPES: dict[str, str] = {
    "run": "string",
    "step": "Int64",
    "layer": "string",
    "module": "string",
    "depth": "Int64",
    "metric": "string",
    "value": "float64",
    "n": "Int64",
}
RUN_COLUMNS: tuple[str, ...] = ("group", "seed")
"""Columns that describe the run rather than the measurement (``group`` string, ``seed`` Int64):
present in tables of run directories and of recorders given ``group=`` or ``log_dir=``; placed
last, never treated as parameter columns."""
_RUN_DTYPES: dict[str, Any] = {"group": "string", "seed": "Int64"}
MODEL_LAYER = "(model)"
"""Layer name of rows that describe the whole model (landscape probes, for example)."""


class TableError(RepdiagError, ValueError):
    """A frame does not follow the tidy table schema."""


def _to_python(v: Any) -> Any:
    """Turn 0-d tensors and numpy scalars into Python numbers so pandas stores plain values."""
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    return v


def empty_table() -> pd.DataFrame:
    """An empty frame with the core columns and dtypes."""
    return pd.DataFrame({c: pd.Series([], dtype=CORE_DTYPES[c]) for c in CORE_COLUMNS})


def make_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build a tidy table from row mappings.

    Each row must hold ``metric`` and ``value``; missing core columns become ``<NA>`` (``run``,
    ``layer``, ``module``, ``step``, ``n``) or -1 (``depth``). Extra keys become parameter
    columns, placed after the core columns in order of first appearance.
    """
    records = [{k: _to_python(v) for k, v in r.items()} for r in rows]
    if not records:
        return empty_table()
    extra: list[str] = []
    for r in records:
        for k in r:
            if k not in CORE_DTYPES and k not in extra:
                extra.append(k)
    frame = pd.DataFrame.from_records(records, columns=[*CORE_COLUMNS, *extra])
    if "depth" in frame:
        frame["depth"] = frame["depth"].fillna(-1)
    return _cast(frame)


def _cast(frame: pd.DataFrame) -> pd.DataFrame:
    for col, dtype in CORE_DTYPES.items():
        if dtype == "Int64":
            frame[col] = pd.to_numeric(frame[col], errors="raise").astype("Int64")
        elif dtype == "float64":
            frame[col] = pd.to_numeric(frame[col], errors="raise").astype("float64")
        else:
            frame[col] = frame[col].astype("string")
    for col, dtype in _RUN_DTYPES.items():
        if col in frame:
            frame[col] = frame[col].astype(dtype)
    return frame.reset_index(drop=True)


def validate_table(frame: Any) -> pd.DataFrame:
    """Check ``frame`` against the schema and return it with the core dtypes.

    Raises
    ------
    TableError
        If a core column is missing or out of order, a column cannot take its dtype, or a cell
        holds a nested value (list, dict).
    """
    if not isinstance(frame, pd.DataFrame):
        raise TableError(f"a tidy table must be a pandas DataFrame; got {type(frame).__name__}.")
    cols = list(frame.columns)
    missing = [c for c in CORE_COLUMNS if c not in cols]
    if missing:
        raise TableError(
            f"the table lacks core column(s) {missing}; a tidy table has {list(CORE_COLUMNS)} first. "
            "Build tables with repdiag.tables.make_table or read them with read_table."
        )
    if cols[: len(CORE_COLUMNS)] != list(CORE_COLUMNS):
        raise TableError(f"core columns must come first in the order {list(CORE_COLUMNS)}; got {cols}.")
    if len(set(cols)) != len(cols):
        raise TableError(f"column names must be unique; got {cols}.")
    out = frame.copy()
    try:
        out = _cast(out)
    except (TypeError, ValueError) as exc:
        raise TableError(f"a core column cannot take its schema dtype {CORE_DTYPES}: {exc}") from exc
    for col in cols[len(CORE_COLUMNS):]:
        # only object columns can hold nested values (and mapping an empty string column keeps
        # its string dtype, which cannot reduce with any())
        if out[col].dtype == object and any(isinstance(v, (list, dict, tuple, set)) for v in out[col]):
            raise TableError(f"column {col!r} holds nested values; tidy tables hold one scalar per cell.")
    return out


def concat_tables(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Stack tidy tables (parameter columns are united; absent ones are NaN)."""
    frames = [validate_table(t) for t in tables]
    if not frames:
        return empty_table()
    extra: list[str] = []
    for f in frames:
        extra += [c for c in f.columns[len(CORE_COLUMNS):] if c not in extra and c not in RUN_COLUMNS]
    extra += [c for c in RUN_COLUMNS if any(c in f for f in frames)]
    out = pd.concat([f.reindex(columns=[*CORE_COLUMNS, *extra]) for f in frames], ignore_index=True)
    return _cast(out)


def compare(
    tables: Sequence[pd.DataFrame] | pd.DataFrame,
    *,
    by: Literal["run", "group"] | None = None,
    step: Literal["last", "all"] | int = "last",
    match: Literal["auto", "name", "order", "depth"] = "auto",
    agg: Literal["mean", "median", "last"] = "mean",
    a: str | None = None,
    b: str | None = None,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    random_state: int = 0,
) -> pd.DataFrame:
    """Put runs side by side, one row per (layer, metric, parameters), with layers aligned.

    Parameters
    ----------
    tables : sequence of DataFrame, or one DataFrame
        Tidy tables; several runs may share a frame, told apart by ``run``.
    by : None, "run" or "group"
        ``None`` / ``"run"``: one column per run. ``"group"``: runs pooled by their ``group``
        column (``attach(group=...)``, run directories): per group ``<g>_mean``, ``<g>_std``
        (sample std over runs) and ``<g>_runs``; and for groups ``a`` and ``b`` the columns
        ``diff`` (mean a - mean b), ``ci_low``, ``ci_high`` (``confidence`` percentile bootstrap
        interval over runs, ``scipy.stats.bootstrap``), ``effect_size`` (Hedges' g) and ``note``
        (why an interval is missing: "one run per group: no interval", ...).
    step : "last", "all" or int
        ``"last"`` keeps each run's latest step per layer and metric (rows with no step are
        always kept); ``"all"`` keeps ``step`` in the index; an int keeps that step only.
    match : "auto", "name", "order" or "depth"
        How layers of different runs are paired. ``"auto"``: by module path when every run has
        the same ``(layer, module)`` pairs, otherwise (a RepdiagWarning says so) by role and
        forward order: the k-th activation of each run together, the k-th norm layer together,
        and so on (:func:`align_layers`). ``"name"`` / ``"order"`` force one; ``"depth"`` pairs
        equal ``depth`` numbers. Aligned layers show the first run's name and depth. When fewer
        than half of the rows of metrics several runs measure hold two runs, a warning says
        what to pass.
    agg : "mean", "median" or "last"
        How repeated observations of one cell (several rows at one step) are combined.
    a, b : str, optional
        The groups to difference with ``by="group"``; default the first two in order of appearance.
    confidence, n_resamples, random_state
        Of the bootstrap interval (95%, 9999 resamples, seed 0: the result is reproducible).

    Returns
    -------
    DataFrame
        Index ``(layer, depth, metric, *parameters)`` (plus ``step`` with ``step="all"``);
        columns the run names in order of first appearance, or the group statistics.
        ``attrs["alignment"]`` is the :func:`align_layers` frame and ``attrs["aligned_by"]``
        ``"name"``, ``"order"`` or ``"depth"``; with ``by="group"``, ``attrs["groups"]`` maps each
        group to its runs and ``attrs["a"]``, ``attrs["b"]`` name the groups differenced.

    Examples
    --------
    >>> wide = repdiag.compare([table_bn, table_nobn])                      # doctest: +SKIP
    >>> repdiag.compare(tables, by="group", a="bn", b="nobn")[["diff", "ci_low", "ci_high"]]  # doctest: +SKIP
    """
    from ._compare import compare_tables

    return compare_tables(tables, by=by, step=step, match=match, agg=agg, a=a, b=b, confidence=confidence,
                          n_resamples=n_resamples, random_state=random_state, stacklevel=2)


def align_layers(tables: Sequence[pd.DataFrame] | pd.DataFrame,
                 match: Literal["auto", "name", "order", "depth"] = "auto") -> pd.DataFrame:
    """How :func:`compare` pairs the layers of several runs: columns ``run, layer, module, role,
    depth, key, how`` (see :func:`repdiag._align.align_layers`)."""
    from ._align import align_layers as _align_layers

    return _align_layers(tables, match)


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a validated table as CSV (``.csv``) or Parquet (``.parquet``, needs pyarrow)."""
    path = Path(path)
    frame = validate_table(frame)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ConfigError("writing Parquet needs pyarrow; pip install pyarrow, or write .csv.") from exc
        frame.to_parquet(path, index=False)
    else:
        raise ConfigError(f"table path must end in .csv or .parquet; got {path.name!r}.")
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_table` and validate it."""
    path = Path(path)
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path)
    else:
        raise ConfigError(f"table path must end in .csv or .parquet; got {path.name!r}.")
    return validate_table(frame)


def is_nan(value: Any) -> bool:
    """True for float NaN (helper for plugins)."""
    return isinstance(value, float) and math.isnan(value)
