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
    "TableError",
    "make_table",
    "empty_table",
    "validate_table",
    "concat_tables",
    "compare",
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
        if out[col].map(lambda v: isinstance(v, (list, dict, tuple, set))).any():
            raise TableError(f"column {col!r} holds nested values; tidy tables hold one scalar per cell.")
    return out


def concat_tables(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Stack tidy tables (parameter columns are united; absent ones are NaN)."""
    frames = [validate_table(t) for t in tables]
    if not frames:
        return empty_table()
    extra: list[str] = []
    for f in frames:
        extra += [c for c in f.columns[len(CORE_COLUMNS):] if c not in extra]
    out = pd.concat([f.reindex(columns=[*CORE_COLUMNS, *extra]) for f in frames], ignore_index=True)
    return _cast(out)


def compare(
    tables: Sequence[pd.DataFrame] | pd.DataFrame,
    *,
    step: Literal["last", "all"] | int = "last",
    match: Literal["name", "depth"] = "name",
    agg: Literal["mean", "median", "last"] = "mean",
) -> pd.DataFrame:
    """Put runs side by side: one row per (layer, metric, parameters), one column per run.

    Parameters
    ----------
    tables : sequence of DataFrame, or one DataFrame
        Tidy tables; several runs may share a frame, told apart by ``run``.
    step : "last", "all" or int
        ``"last"`` keeps each run's latest step per layer and metric (rows with no step are
        always kept); ``"all"`` keeps ``step`` in the index; an int keeps that step only.
    match : "name" or "depth"
        Match layers across runs by module path, or by forward order (``depth``) when the
        architectures name their layers differently; then ``layer`` shows the first run's name.
    agg : "mean", "median" or "last"
        How repeated observations of one cell (several rows at one step) are combined.

    Returns
    -------
    DataFrame
        Index ``(layer, depth, metric, *parameters)`` (plus ``step`` with ``step="all"``);
        columns the run names, in order of first appearance.
    """
    if match not in ("name", "depth"):
        raise ConfigError(f"match must be 'name' or 'depth'; got {match!r}.")
    if agg not in ("mean", "median", "last"):
        raise ConfigError(f"agg must be 'mean', 'median' or 'last'; got {agg!r}.")
    frame = concat_tables([tables] if isinstance(tables, pd.DataFrame) else list(tables))
    if frame["run"].isna().any():
        raise TableError("every row needs a run name to compare runs; pass run=... to attach or set frame['run'].")
    runs = list(dict.fromkeys(frame["run"].tolist()))
    params = [c for c in frame.columns[len(CORE_COLUMNS):] if frame[c].notna().any()]
    key_layer = "layer" if match == "name" else "depth"
    if step == "last":
        has_step = frame["step"].notna()
        last = frame[has_step].groupby(["run", key_layer, "metric"], dropna=False)["step"].transform("max")
        keep = ~has_step
        keep.loc[last.index] = frame.loc[last.index, "step"] == last
        frame = frame[keep.fillna(False).astype(bool)]
    elif isinstance(step, int) and not isinstance(step, bool):
        frame = frame[frame["step"] == step]
    elif step != "all":
        raise ConfigError(f"step must be 'last', 'all' or an int; got {step!r}.")
    if match == "depth":
        names = frame.drop_duplicates("depth")[["depth", "layer"]].set_index("depth")["layer"]
        frame = frame.assign(layer=frame["depth"].map(names))
    index = ["layer", "depth", "metric", *params] + (["step"] if step == "all" else [])
    filled = frame.copy()
    for p in params:  # pivot drops NaN keys; mark them explicitly
        filled[p] = filled[p].astype("object").where(filled[p].notna(), "-")
    func = {"mean": "mean", "median": "median", "last": "last"}[agg]
    wide = filled.pivot_table(index=index, columns="run", values="value", aggfunc=func, dropna=False, sort=False)
    wide = wide.reindex(columns=[r for r in runs if r in wide.columns])
    wide = wide.dropna(how="all")
    wide.columns.name = "run"
    return wide


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
