"""What the report shows, gathered in one object, and the side-by-side summary derived from it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..tables import MODEL_LAYER, compare, concat_tables
from ._match import LayerMatch, layer_positions

__all__ = ["ReportData", "summary_frame", "format_value", "group_summary"]


@dataclass
class ReportData:
    """Everything a report shows. Built by the CLI; read by the HTML and markdown writers.

    Attributes
    ----------
    runs : list of str
        Run names in display order.
    table : DataFrame
        The tidy table of the evaluation (original layer names).
    match : LayerMatch
        How layers were matched across runs.
    training : DataFrame or None
        Tidy rows recorded during training (values over steps), when the runs were trained here.
    embeddings : dict
        ``{(run, matched layer): (xy (n, 2), labels (n,))}``.
    embed_layers : list of str
        Matched layer labels shown in the scatter grid.
    embed_method : str
        ``"umap"``, ``"pca"`` or ``"none"``.
    gammas : dict
        ``{run: {matched BN layer: gamma values (c,)}}``.
    sources : dict
        ``{run: what it was loaded from}``.
    meta : dict
        Provenance: command line, versions, data, date.
    notes : list of str
        Sentences shown at the top (layer matching, skipped metrics, ...).
    training_metrics : list of str or None
        Metrics of ``training`` drawn over steps (None: all of them).
    groups : dict
        ``{run: group}`` (the condition, e.g. ``"bn"``); a run missing here is its own group.
    findings : DataFrame or None
        :func:`repdiag.findings` of the runs (one row per question of the source papers).
    """

    runs: list[str]
    table: pd.DataFrame
    match: LayerMatch
    training: pd.DataFrame | None = None
    embeddings: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    embed_layers: list[str] = field(default_factory=list)
    embed_method: str = "none"
    gammas: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    training_metrics: list[str] | None = None
    groups: dict[str, str] = field(default_factory=dict)
    findings: pd.DataFrame | None = None

    def group_of(self, run: str) -> str:
        """The group of ``run`` (the run itself when it has none)."""
        return self.groups.get(run) or run

    def members(self) -> dict[str, list[str]]:
        """``{group: [runs]}`` in display order."""
        out: dict[str, list[str]] = {}
        for r in self.runs:
            out.setdefault(self.group_of(r), []).append(r)
        return out

    def matched(self, training: bool = False) -> pd.DataFrame:
        """The evaluation (or training) table with matched layer labels and depth = position."""
        frame = self.training if training else self.table
        if frame is None or frame.empty:
            return concat_tables([]) if frame is None else frame
        out = self.match.apply(frame)
        pos = layer_positions(self.match, out["layer"].dropna().unique().tolist())
        out["depth"] = out["layer"].map(lambda v: pos.get(v, -1) if isinstance(v, str) else -1).astype("Int64")
        return out

    def layer_metrics(self) -> list[str]:
        """Metrics with per-layer rows, in order of first appearance."""
        t = self.table
        return list(dict.fromkeys(t.loc[t["layer"] != MODEL_LAYER, "metric"].dropna().tolist()))

    def positions(self) -> dict[str, int]:
        """x positions of every matched layer label in the evaluation table."""
        return layer_positions(self.match, self.matched()["layer"].dropna().unique().tolist())


def format_value(v: Any) -> str:
    """A compact number: 4 significant digits, ``nan`` for NaN, ``-`` for missing."""
    if v is None or v is pd.NA:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "nan"
    if f == int(f) and abs(f) < 1e6:
        return str(int(f))
    return f"{f:.4g}"


def summary_frame(data: ReportData) -> pd.DataFrame:
    """Runs side by side: columns ``metric, layer, setting, <run>...``, sorted by metric then depth."""
    frame = data.matched()
    if frame.empty:
        return pd.DataFrame(columns=["metric", "layer", "setting", *data.runs])
    wide = compare(frame, step="last", match="name")
    params = [n for n in wide.index.names if n not in ("layer", "depth", "metric")]
    wide = wide.reset_index()
    metric_rank = {m: i for i, m in enumerate(dict.fromkeys(frame["metric"].tolist()))}

    def setting(row: Any) -> str:
        return ", ".join(f"{p}={format_value(row[p])}" for p in params if row[p] != "-" and not pd.isna(row[p]))

    wide["setting"] = wide.apply(setting, axis=1) if len(wide) else ""
    wide["_m"] = wide["metric"].map(metric_rank)
    wide["_d"] = wide["depth"].astype("float64").fillna(-1)
    wide = wide.sort_values(["_m", "_d"], kind="stable")
    cols = ["metric", "layer", "setting", *[r for r in data.runs if r in wide.columns]]
    return wide[cols].reset_index(drop=True)


def _cell(values: pd.Series) -> str:
    v = values.dropna().astype(float)
    if v.empty:
        return "nan"
    if len(v) == 1:
        return format_value(v.iloc[0])
    return f"{format_value(v.mean())} ± {format_value(v.std(ddof=1))}"


def group_summary(data: ReportData) -> list[tuple[str, pd.DataFrame]]:
    """The summary for display: a column per group (``mean ± sd`` over its runs, the value
    itself for a group of one), split so that metrics some groups lack (the gamma table of a run
    without BN) sit in their own table with only the groups that have them.

    Returns ``[(caption, frame), ...]``; frames have columns ``metric, layer, setting, <group>...``.
    """
    wide = summary_frame(data)
    members = {g: [r for r in rs if r in wide.columns] for g, rs in data.members().items()}
    members = {g: rs for g, rs in members.items() if rs}
    if wide.empty:
        return [("Summary table", wide)]
    cells = pd.DataFrame({g: wide[rs].apply(_cell, axis=1) for g, rs in members.items()})
    present = pd.DataFrame({g: wide[rs].notna().any(axis=1) for g, rs in members.items()})
    sig = present.apply(lambda row: tuple(g for g in members if row[g]), axis=1)
    spread = any(len(rs) > 1 for rs in members.values())
    head = "Summary table" + (" (mean ± sd over each group's runs)" if spread else "")
    out = []
    for groups in dict.fromkeys(sig):
        if not groups:
            continue
        sel = sig == groups
        frame = pd.concat([wide.loc[sel, ["metric", "layer", "setting"]], cells.loc[sel, list(groups)]], axis=1)
        caption = head if len(groups) == len(members) else f"Measured only in {', '.join(groups)}"
        out.append((caption, frame.reset_index(drop=True)))
    out.sort(key=lambda item: not item[0].startswith("Summary"))
    return out
