"""Reading a run directory written by ``repdiag.attach(..., log_dir=PATH)`` (see ``docs/runs.md``),
also while it is still being written: only complete parts are read (temporary files, written to
hidden names and moved into place, are never matched)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .._errors import ConfigError
from ..tables import CORE_COLUMNS, RUN_COLUMNS, concat_tables, empty_table

__all__ = ["load_run", "read_meta", "is_run_dir", "read_parts"]

_PART_GLOB = "part-*.parquet"


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a run directory (it holds a ``meta.json`` of format ``repdiag-run/*``)."""
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return str(json.loads(meta.read_text(encoding="utf-8")).get("format", "")).startswith("repdiag-run/")
    except (OSError, ValueError, AttributeError):
        return False


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta.json`` of a run directory, as a dict.

    Raises
    ------
    ConfigError
        If ``path`` is not a run directory.
    """
    path = Path(path)
    if not is_run_dir(path):
        raise ConfigError(f"path must be a run directory written by repdiag.attach(..., log_dir=...) (it holds "
                          f"meta.json); got {str(path)!r}. Pass the directory given as log_dir.")
    meta: dict[str, Any] = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    return meta


def read_parts(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Every complete row part of a run directory, in order, as one table (no metadata)."""
    parts = sorted((Path(path) / "rows").glob(_PART_GLOB))
    frames = []
    for p in parts:
        f = pd.read_parquet(p)
        empty = [c for c in f.columns[len(CORE_COLUMNS):] if c not in RUN_COLUMNS and f[c].isna().all()]
        frames.append(f.drop(columns=empty))  # part 0 carries later parts' columns, empty
    if not frames:
        return empty_table()
    return concat_tables(frames)


def load_run(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a run directory into one tidy table.

    Parameters
    ----------
    path : path-like
        A directory written by ``repdiag.attach(..., log_dir=path)``; it may still be being
        written (the parts complete so far are read).

    Returns
    -------
    DataFrame
        The tidy table (core columns, parameter columns) with ``group`` (string) and ``seed``
        (Int64) columns last, rows in the order they were written; ``attrs["meta"]`` holds
        ``meta.json`` as a dict.

    Examples
    --------
    >>> t = repdiag.load_run("runs/bn-s0")                       # doctest: +SKIP
    >>> t[t.metric == "sparsity"].groupby("layer").value.last()  # doctest: +SKIP
    """
    meta = read_meta(path)
    table = read_parts(path)
    for col, dtype in (("group", "string"), ("seed", "Int64")):
        if col not in table:
            table[col] = pd.Series([meta.get(col)] * len(table), dtype=dtype)
    if table["run"].isna().any() and meta.get("run") is not None:
        table["run"] = table["run"].fillna(meta["run"])
    table = table[[c for c in table.columns if c not in RUN_COLUMNS] + list(RUN_COLUMNS)]
    table.attrs["meta"] = meta
    return table
