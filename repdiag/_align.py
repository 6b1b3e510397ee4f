"""Aligning layers across runs, with no help from the user: by module path where the runs' names
agree, otherwise by role and forward order (the k-th activation of one run with the k-th
activation of another, the k-th norm layer with the k-th norm layer, ...).

A BN and a no-BN ``nn.Sequential`` name their ReLUs ``2, 5, 8`` and ``1, 3, 5``: the same names
would pair nothing (or worse, pair a ReLU with a BatchNorm), so names are used only when every
run has the same ``(layer, module class)`` pairs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import pandas as pd

from ._errors import ConfigError, RepdiagWarning
from ._layers import role_of
from .tables import MODEL_LAYER, TableError, concat_tables

__all__ = ["align_layers", "apply_alignment", "Match", "MATCHES"]

Match = Literal["auto", "name", "order", "depth"]
MATCHES: tuple[str, ...] = ("auto", "name", "order", "depth")
HOW_TEXT = {"name": "by name", "order": "by role and forward order", "depth": "by depth number"}


def _layers_of(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, layer): module, depth (smallest seen) and first appearance, in forward order."""
    f = frame[frame["layer"].notna() & (frame["layer"] != MODEL_LAYER)]
    f = f.assign(_first=range(len(f)))
    per = f.groupby(["run", "layer"], sort=False).agg(module=("module", "first"), depth=("depth", "min"),
                                                     _first=("_first", "min")).reset_index()
    per["_d"] = per["depth"].astype("float64").fillna(float("inf"))
    rank = {r: i for i, r in enumerate(dict.fromkeys(frame["run"].tolist()))}
    per["_r"] = per["run"].map(rank)
    return per.sort_values(["_r", "_d", "_first"], kind="stable").drop(columns=["_r", "_d", "_first"])


def align_layers(tables: Sequence[pd.DataFrame] | pd.DataFrame, match: Match = "auto") -> pd.DataFrame:
    """How the layers of several runs line up.

    Parameters
    ----------
    tables : sequence of DataFrame, or one DataFrame
        Tidy tables; runs are told apart by ``run``.
    match : {"auto", "name", "order", "depth"}
        ``"auto"``: by name when every run has the same ``(layer, module)`` pairs, otherwise by
        role and order. ``"name"``: by module path. ``"order"``: the k-th layer of a role
        (:func:`repdiag._layers.role_of`: activation, norm, linear, conv, block, other) in
        forward order is paired with the k-th layer of that role in every other run.
        ``"depth"``: by the ``depth`` number.

    Returns
    -------
    DataFrame
        Columns ``run, layer, module, role, depth, key, how``: one row per run and layer;
        ``key`` is the shared label rows are matched on (the first run's name of the aligned
        layer), ``how`` is ``"name"``, ``"order"`` or ``"depth"``.

    Examples
    --------
    >>> from repdiag.tables import make_table
    >>> bn = make_table([{"run": "bn", "layer": "2", "module": "ReLU", "depth": 2, "metric": "m", "value": 1},
    ...                  {"run": "bn", "layer": "1", "module": "BatchNorm1d", "depth": 1, "metric": "g", "value": 1}])
    >>> plain = make_table([{"run": "nobn", "layer": "1", "module": "ReLU", "depth": 1, "metric": "m", "value": 2}])
    >>> align_layers([bn, plain])[["run", "layer", "key", "how"]].values.tolist()
    [['bn', '1', '1', 'order'], ['bn', '2', '2', 'order'], ['nobn', '1', '2', 'order']]
    """
    if match not in MATCHES:
        raise ConfigError(f"match must be one of {list(MATCHES)}; got {match!r}. 'auto' aligns by name where the "
                          "runs' layer names agree, else by role and forward order.")
    frame = concat_tables([tables] if isinstance(tables, pd.DataFrame) else list(tables))
    if frame["run"].isna().any():
        raise TableError("every row needs a run name to compare runs; pass run=... to attach or set frame['run'].")
    per = _layers_of(frame)
    per["role"] = per["module"].map(lambda m: role_of(m if isinstance(m, str) else None))
    runs = list(dict.fromkeys(frame["run"].tolist()))
    how = match
    if match == "auto":
        pairs = [set(zip(g["layer"], g["module"].fillna(""))) for _, g in per.groupby("run", sort=False)]
        how = "name" if all(p == pairs[0] for p in pairs) else "order"
    if how == "name":
        per["key"] = per["layer"]
    elif how == "depth":
        first = per.drop_duplicates("depth").set_index("depth")["layer"]
        per["key"] = per["depth"].map(first)
    else:
        per["_k"] = per.groupby(["run", "role"], sort=False).cumcount()
        order = {r: i for i, r in enumerate(runs)}
        per["_r"] = per["run"].map(order)
        labels = per.sort_values("_r", kind="stable").drop_duplicates(["role", "_k"]).set_index(["role", "_k"])["layer"]
        per["key"] = [labels[(ro, k)] for ro, k in zip(per["role"], per["_k"])]
        per = per.drop(columns=["_k", "_r"])
    per["how"] = how
    per = per.astype({"key": "string", "role": "string", "how": "string"})
    return per[["run", "layer", "module", "role", "depth", "key", "how"]].reset_index(drop=True)


def apply_alignment(frame: pd.DataFrame, alignment: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``layer`` replaced by the aligned key and ``depth`` by the key's depth in
    the first run that has it (model-wide rows keep theirs)."""
    if alignment.empty:
        return frame
    key = dict(zip(zip(alignment["run"], alignment["layer"]), alignment["key"]))
    first = alignment.drop_duplicates("key").set_index("key")["depth"]
    out = frame.copy()
    layer = [key.get((r, lay), lay) for r, lay in zip(out["run"], out["layer"])]
    out["layer"] = pd.array(layer, dtype="string")
    has = out["layer"].isin(first.index)
    out.loc[has, "depth"] = out.loc[has, "layer"].map(first).astype("Int64")
    return out


def warn_alignment(alignment: pd.DataFrame, wide: pd.DataFrame, *, explicit: bool, stacklevel: int) -> None:
    """The warnings of :func:`repdiag.compare`: one when names differ and the layers were aligned
    by role and order (unless the caller asked for it), one when fewer than half of the rows that
    several runs measure hold two or more runs."""
    if alignment.empty:
        return
    how = str(alignment["how"].iloc[0])
    runs = list(dict.fromkeys(alignment["run"]))
    if how == "order" and not explicit:
        naming: dict[tuple[str, ...], list[str]] = {}  # runs by the layer names they use
        for r in runs:
            naming.setdefault(tuple(alignment.loc[alignment.run == r, "layer"]), []).append(r)
        names = "; ".join(f"{rs[0]}{f' and {len(rs) - 1} more' if len(rs) > 1 else ''}: {', '.join(lay[:4])}"
                          f"{', ...' if len(lay) > 4 else ''}" for lay, rs in list(naming.items())[:3])
        warnings.warn(f"the runs name their layers differently ({names}), so layers are aligned by role and forward "
                      "order (k-th activation with k-th activation, norm with norm); result.attrs['alignment'] shows "
                      "the pairs. Pass match='name' to pair by module path instead.", RepdiagWarning,
                      stacklevel=stacklevel + 1)
    if len(runs) < 2 or wide.empty:
        return
    counts = wide.notna().sum(axis=1)
    metrics = wide.index.get_level_values("metric")
    shared = pd.Series(counts.values).groupby(metrics).transform("max").values >= 2  # metrics >= 2 runs measure
    if shared.sum() == 0:
        return
    paired = int(((counts.values >= 2) & shared).sum())
    if paired < shared.sum() / 2:
        alt = {"name": "match='order' (role and forward order)", "order": "match='name' (module paths)",
               "depth": "match='order'"}[how]
        warnings.warn(f"only {paired} of {int(shared.sum())} rows of metrics measured in several runs hold two or "
                      f"more runs after aligning layers {HOW_TEXT[how]}; the runs may hook different layers. Pass "
                      f"{alt}, or hook the same kinds of layers in every run (attach(layers=...)).", RepdiagWarning,
                      stacklevel=stacklevel + 1)
