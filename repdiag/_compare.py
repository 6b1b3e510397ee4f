"""The body of :func:`repdiag.compare`: runs side by side with their layers aligned, and groups of
runs (seeds of one condition) pooled into means, spreads and bootstrap intervals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd

from ._align import Match, align_layers, apply_alignment, warn_alignment
from ._errors import ConfigError
from ._groups import group_diff
from .tables import CORE_COLUMNS, RUN_COLUMNS, TableError, concat_tables

__all__ = ["compare_tables", "run_groups", "GROUP_STAT_COLUMNS"]

GROUP_STAT_COLUMNS = ("diff", "ci_low", "ci_high", "effect_size", "note")


def run_groups(frame: pd.DataFrame) -> dict[str, str]:
    """``{run: group}`` from the ``group`` column (one group per run)."""
    if "group" not in frame or frame["group"].isna().any():
        runs = frame.loc[frame["group"].isna(), "run"].unique().tolist() if "group" in frame else \
            frame["run"].unique().tolist()
        raise TableError(f"by='group' needs a group for every run; run(s) {runs[:5]} have none. Pass group=... to "
                         "attach, load run directories with repdiag.load_run, or set frame['group'].")
    pairs = frame[["run", "group"]].drop_duplicates()
    twice = pairs[pairs["run"].duplicated()]["run"].tolist()
    if twice:
        raise TableError(f"each run must belong to one group; run(s) {twice[:5]} carry several. Give the runs "
                         "distinct names (run=...).")
    return dict(zip(pairs["run"], pairs["group"]))


def _wide(frame: pd.DataFrame, step: Literal["last", "all"] | int, agg: str) -> pd.DataFrame:
    runs = list(dict.fromkeys(frame["run"].tolist()))
    params = [c for c in frame.columns[len(CORE_COLUMNS):] if c not in RUN_COLUMNS and frame[c].notna().any()]
    if step == "last":
        has_step = frame["step"].notna()
        last = frame[has_step].groupby(["run", "layer", "metric"], dropna=False)["step"].transform("max")
        keep = ~has_step
        keep.loc[last.index] = frame.loc[last.index, "step"] == last
        frame = frame[keep.fillna(False).astype(bool)]
    elif isinstance(step, int) and not isinstance(step, bool):
        frame = frame[frame["step"] == step]
    elif step != "all":
        raise ConfigError(f"step must be 'last', 'all' or an int; got {step!r}.")
    index = ["layer", "depth", "metric", *params] + (["step"] if step == "all" else [])
    filled = frame.drop(columns=[c for c in RUN_COLUMNS if c in frame])
    for p in params:  # pivot drops NaN keys; mark them explicitly
        filled[p] = filled[p].astype("object").where(filled[p].notna(), "-")
    # groupby + unstack keeps only the cells that occur (pivot_table(dropna=False) builds the full
    # product of every index level first, minutes for a table with several parameter columns)
    wide = filled.groupby([*index, "run"], sort=False, dropna=False)["value"].agg(agg).unstack("run")
    wide = wide.reindex(columns=[r for r in runs if r in wide.columns])
    wide = wide.dropna(how="all")
    wide.columns.name = "run"
    return wide


def _by_group(wide: pd.DataFrame, groups: dict[str, str], a: str | None, b: str | None,
              **boot: Any) -> pd.DataFrame:
    names = list(dict.fromkeys(groups[r] for r in wide.columns))
    if a is None or b is None:
        rest = [g for g in names if g not in (a, b)]
        a = a if a is not None else (rest.pop(0) if rest else None)
        b = b if b is not None else (rest.pop(0) if rest else None)
    for label, g in (("a", a), ("b", b)):
        if g is not None and g not in names:
            raise ConfigError(f"{label} must be one of the groups {names}; got {g!r}.")
    cols: dict[str, Any] = {}
    for g in names:
        members = [r for r in wide.columns if groups[r] == g]
        cols[f"{g}_mean"] = wide[members].mean(axis=1)
        cols[f"{g}_std"] = wide[members].std(axis=1, ddof=1)
        cols[f"{g}_runs"] = wide[members].notna().sum(axis=1).astype("int64")
    out = pd.DataFrame(cols, index=wide.index)
    if a is not None and b is not None:
        ra = [r for r in wide.columns if groups[r] == a]
        rb = [r for r in wide.columns if groups[r] == b]
        stats = [group_diff(va, vb, **boot) for va, vb in zip(wide[ra].to_numpy(float), wide[rb].to_numpy(float))]
        for c in GROUP_STAT_COLUMNS:
            out[c] = [getattr(s, c) for s in stats]
        out["note"] = out["note"].astype("string")
    out.attrs["groups"] = {g: [r for r in wide.columns if groups[r] == g] for g in names}
    out.attrs["a"], out.attrs["b"] = a, b
    return out


def compare_tables(
    tables: Sequence[pd.DataFrame] | pd.DataFrame,
    *,
    by: Literal["run", "group"] | None = None,
    step: Literal["last", "all"] | int = "last",
    match: Match = "auto",
    agg: Literal["mean", "median", "last"] = "mean",
    a: str | None = None,
    b: str | None = None,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    random_state: int = 0,
    stacklevel: int = 2,
) -> pd.DataFrame:
    """See :func:`repdiag.compare`."""
    if agg not in ("mean", "median", "last"):
        raise ConfigError(f"agg must be 'mean', 'median' or 'last'; got {agg!r}.")
    if by not in (None, "run", "group"):
        raise ConfigError(f"by must be None, 'run' or 'group'; got {by!r}.")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1); got {confidence!r}.")
    frame = concat_tables([tables] if isinstance(tables, pd.DataFrame) else list(tables))
    alignment = align_layers(frame, match)
    groups = run_groups(frame) if by == "group" else {}
    wide = _wide(apply_alignment(frame, alignment), step, agg)
    warn_alignment(alignment, wide, explicit=match != "auto", stacklevel=stacklevel + 1)
    out = _by_group(wide, groups, a, b, confidence=confidence, n_resamples=n_resamples,
                    random_state=random_state) if by == "group" else wide
    out.attrs["alignment"] = alignment
    out.attrs["aligned_by"] = str(alignment["how"].iloc[0]) if len(alignment) else "name"
    return out
