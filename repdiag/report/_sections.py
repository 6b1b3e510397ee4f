"""What the report draws once, says once, or leaves out: metrics identical to another one on
every row, and metrics that do not apply to some runs (the gamma table of a run without BN)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ._plots import params_of

__all__ = ["IDENTICAL_TOL", "WHY_IDENTICAL", "identical_metrics", "missing_by_group", "not_applicable_note"]

IDENTICAL_TOL = 1e-3
"""Largest absolute difference at which two metrics count as identical (the per-sample zero
fraction comes from a 1001-bin histogram, exact to +-0.0005)."""

WHY_IDENTICAL: dict[str, str] = {
    "channel_sparsity_entries": "the mean of the channels' zero fractions is the overall zero fraction when every "
                                "channel has as many entries as the others",
    "channel_sparsity_maps": "on 2-D (MLP-style) layers every channel map is a single entry, so a zero map is a "
                             "zero entry",
    "sample_sparsity_mean": "the mean of the samples' zero fractions is the overall zero fraction when every sample "
                            "has as many entries as the others",
}
"""Why a metric can equal ``sparsity`` (Potgieter et al.'s readings coincide on these layers)."""


def _keyed(frame: pd.DataFrame, metric: str) -> pd.Series | None:
    part = frame[frame["metric"] == metric]
    if part.empty or params_of(part):
        return None
    step = part["step"].astype("float64").fillna(-1.0)
    out = pd.Series(part["value"].to_numpy(dtype=float),
                    index=pd.MultiIndex.from_arrays([part["run"], step, part["layer"]]))
    return None if out.index.has_duplicates else out


def identical_metrics(frame: pd.DataFrame, metrics: Sequence[str], tol: float = IDENTICAL_TOL) -> dict[str, str]:
    """``{metric: earlier metric it equals}`` for metrics whose value equals an earlier one's
    within ``tol`` on every (run, step, layer) both have, with the same rows and NaN pattern.
    Metrics with parameter columns are never merged; the readings of :data:`WHY_IDENTICAL` are
    merged into the others (``sample_sparsity_mean`` into ``sparsity``), not the other way.

    >>> t = pd.DataFrame({"run": ["a"] * 4, "step": [None] * 4, "layer": ["x", "y", "x", "y"],
    ...                   "module": "ReLU", "depth": 0, "metric": ["p", "p", "q", "q"],
    ...                   "value": [0.5, 0.25, 0.5, 0.2502], "n": 8})
    >>> identical_metrics(t, ["p", "q"])
    {'q': 'p'}
    """
    series = {m: _keyed(frame, m) for m in metrics}
    out: dict[str, str] = {}
    kept: list[str] = []
    for m in sorted(metrics, key=lambda m: m in WHY_IDENTICAL):  # a reading with a reason yields to the others
        s = series[m]
        if s is None:
            continue
        for first in kept:
            ref = series[first]
            if ref is None or len(ref) != len(s) or not ref.index.sort_values().equals(s.index.sort_values()):
                continue
            a, b = ref.sort_index().to_numpy(), s.sort_index().to_numpy()
            if np.array_equal(np.isnan(a), np.isnan(b)) and bool(np.all(np.abs(a - b)[~np.isnan(a)] <= tol)):
                out[m] = first
                break
        else:
            kept.append(m)
    return out


def missing_by_group(frame: pd.DataFrame, metrics: Sequence[str], groups: Mapping[str, str]
                     ) -> dict[str, list[str]]:
    """``{metric: [groups with no row of it]}`` for metrics that some groups have and others
    lack (such as the BN gamma table in a run without BN)."""
    all_groups = list(dict.fromkeys(groups.get(r, r) for r in frame["run"].dropna().unique()))
    have = frame.assign(_g=frame["run"].map(lambda r: groups.get(r, r))).groupby("metric")["_g"].unique()
    out: dict[str, list[str]] = {}
    for m in metrics:
        if m in have.index:
            lacking = [g for g in all_groups if g not in set(have[m])]
            if lacking:
                out[m] = lacking
    return out


def not_applicable_note(missing: Mapping[str, Sequence[str]], members: Mapping[str, Sequence[str]]) -> list[str]:
    """One sentence per set of groups lacking the same metrics, e.g. that ``nobn`` has no gamma
    table because it has no BatchNorm layer."""
    by_groups: dict[tuple[str, ...], list[str]] = {}
    for m, gs in missing.items():
        by_groups.setdefault(tuple(gs), []).append(m)
    notes = []
    for gs, ms in by_groups.items():
        who = ", ".join(f"{g} ({len(members.get(g, [g]))} run{'s' * (len(members.get(g, [g])) > 1)})" for g in gs)
        gamma = all(m.startswith(("gamma", "beta")) for m in ms)
        why = ("they have no affine normalization layer (BatchNorm, LayerNorm, GroupNorm, RMSNorm), so the gamma table does not apply"
               if gamma else "no run of theirs recorded them")
        notes.append(f"{who}: {', '.join(ms)} not shown for them: {why}.")
    return notes
