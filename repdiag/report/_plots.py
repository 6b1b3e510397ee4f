"""The report's figures, drawn with matplotlib's Agg canvas (no pyplot, no global backend
change) and returned as PNG bytes. Plots read tables and arrays; they compute no metric."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..tables import CORE_COLUMNS, MODEL_LAYER, RUN_COLUMNS

__all__ = ["png", "metric_vs_depth", "metric_over_steps", "embedding_grid", "gamma_histograms", "run_colors",
           "step_layers", "depth_figure", "steps_figure", "embedding_figure", "params_of"]

_DPI = 90


def _figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig: Any) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def run_colors(runs: Sequence[str]) -> dict[str, Any]:
    """One colour per run (matplotlib's tab10 cycle)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {r: cmap(i % 10) for i, r in enumerate(runs)}


def params_of(frame: pd.DataFrame) -> list[str]:
    """The parameter columns that hold a value in ``frame`` (not the run labels)."""
    return [c for c in frame.columns[len(CORE_COLUMNS):] if c not in RUN_COLUMNS and frame[c].notna().any()]


def _combos(frame: pd.DataFrame, params: list[str]) -> list[tuple[Any, ...]]:
    if not params:
        return [()]
    return list(dict.fromkeys(tuple(r) for r in frame[params].astype("object").itertuples(index=False)))


def _label(params: list[str], combo: tuple[Any, ...]) -> str:
    return ", ".join(f"{p}={_fmt(v)}" for p, v in zip(params, combo) if not _isna(v))


def _isna(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _select(frame: pd.DataFrame, params: list[str], combo: tuple[Any, ...]) -> pd.DataFrame:
    sel = pd.Series(True, index=frame.index)
    for p, v in zip(params, combo):
        sel &= frame[p].isna() if _isna(v) else (frame[p].astype("object") == v)
    return frame[sel]


_STYLES: tuple[Any, ...] = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
BAND = "line: mean over a group's runs; band: lowest to highest run"


def _colour_keys(runs: Sequence[str], groups: Mapping[str, str] | None) -> tuple[list[str], dict[str, list[str]]]:
    """Legend entries in order (groups, or runs when none) and the runs behind each."""
    members: dict[str, list[str]] = {}
    for r in runs:
        members.setdefault((groups or {}).get(r, r), []).append(r)
    return list(members), members


def _entry(key: str, runs: Sequence[str]) -> str:
    """Legend text: the run, ``group (run)`` for a group of one, ``group (k runs)``."""
    if len(runs) > 1:
        return f"{key} ({len(runs)} runs)"
    return key if runs[0] == key else f"{key} ({runs[0]})"


def _spread(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per ``key`` value: mean, min and max over runs of each run's mean value (NaN values left out)."""
    per_run = rows.dropna(subset=["value"]).groupby([key, "run"])["value"].mean()
    if per_run.empty:
        return pd.DataFrame(columns=["mean", "lo", "hi", "k"])
    g = per_run.groupby(level=0)
    return pd.DataFrame({"mean": g.mean(), "lo": g.min(), "hi": g.max(), "k": g.size()})


def _draw(ax: Any, xs: np.ndarray, st: pd.DataFrame, color: Any, style: Any, label: str, marker: str | None) -> None:
    ax.plot(xs, st["mean"].to_numpy(float), linestyle=style, marker=marker, ms=3.5, color=color, label=label, lw=1.3)
    if (st["k"] > 1).any():
        ax.fill_between(xs, st["lo"].to_numpy(float), st["hi"].to_numpy(float), color=color, alpha=0.18, lw=0)


def _legend(fig: Any, ax: Any, bands: bool) -> None:
    """The legend below the axes, so that it covers no line."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        width = max(len(t) for t in labels) + 6  # characters an entry takes at this font size
        ncols = max(1, min(3, len(handles), int(fig.get_figwidth() * 15) // width))
        fig.legend(handles, labels, loc="outside lower center", fontsize=7, ncols=ncols, frameon=False,
                   title=BAND if bands else None, title_fontsize=6.5)


def depth_figure(frame: pd.DataFrame, metric: str, runs: Sequence[str], positions: Mapping[str, int],
                    groups: Mapping[str, str] | None = None) -> Any:
    """One metric against depth: a line per group (mean over its runs, band = min to max over
    them) or per run when ``groups`` is None, and per parameter value (up to four).

    ``frame`` holds that metric's rows with layers already matched; ``positions`` maps layer
    labels to x positions.
    """
    from ._axes import y_label

    params = params_of(frame)
    combos = _combos(frame, params)
    shown = combos[:len(_STYLES)]
    keys, members = _colour_keys(runs, groups)
    colors = run_colors(keys)
    present = [lay for lay in dict.fromkeys(frame["layer"].dropna().tolist()) if lay in positions]
    order = sorted(present, key=positions.__getitem__)
    positions = {lay: i for i, lay in enumerate(order)}  # this metric's layers only, evenly spaced
    kinds = frame.drop_duplicates("layer").set_index("layer")["module"].to_dict()
    fig = _figure(4.6, 3.4)
    ax = fig.add_subplot()
    bands = False
    for ci, combo in enumerate(shown):
        part = _select(frame, params, combo)
        part = part[part["layer"].isin(list(positions))]
        for key in keys:
            st = _spread(part[part["run"].isin(members[key])], "layer")
            if st.empty:
                continue
            st = st.loc[[lay for lay in order if lay in st.index]]
            bands |= bool((st["k"] > 1).any())
            label = _entry(key, members[key]) + (f", {_label(params, combo)}" if params and len(shown) > 1 else "")
            _draw(ax, np.array([positions[lay] for lay in st.index], float), st, colors[key], _STYLES[ci], label,
                  "o")
    title = metric + (f" ({_label(params, shown[0])})" if params and len(shown) == 1 else "")
    if len(combos) > len(shown):
        title += f" (first {len(shown)} of {len(combos)} settings)"
    ax.set_title(_wrap(title), fontsize=9)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([f"{_short(s)} {kinds.get(s) or ''}".strip() for s in order], rotation=40, ha="right",
                       fontsize=7)
    ax.set_xlabel("layer (forward order)", fontsize=8)
    ax.set_ylabel(y_label(metric), fontsize=7.5)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3)
    _legend(fig, ax, bands)
    return fig


def metric_vs_depth(frame: pd.DataFrame, metric: str, runs: Sequence[str], positions: Mapping[str, int],
                    groups: Mapping[str, str] | None = None) -> bytes:
    """PNG bytes of :func:`depth_figure`."""
    return png(depth_figure(frame, metric, runs, positions, groups))



def _wrap(title: str, width: int = 48) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(title, width)) or title


def _short(s: str, n: int = 18) -> str:
    return s if len(s) <= n else "…" + s[-(n - 1):]


MAX_PANELS = 6


def step_layers(layers: Sequence[str]) -> list[str]:
    """The layers a training plot shows: all up to :data:`MAX_PANELS`, else the first, middle
    and last.

    >>> step_layers(list("abcdefgh"))
    ['a', 'e', 'h']
    """
    if len(layers) <= MAX_PANELS:
        return list(layers)
    return list(dict.fromkeys([layers[0], layers[len(layers) // 2], layers[-1]]))


def settings(frame: pd.DataFrame) -> int:
    """How many parameter settings (``scale=raw``, ``scale=normalized``, ...) ``frame`` holds."""
    return len(_combos(frame, params_of(frame)))


def steps_figure(frame: pd.DataFrame, metric: str, runs: Sequence[str], positions: Mapping[str, int],
                 groups: Mapping[str, str] | None = None, setting: int = 0) -> Any:
    """One metric over training steps at its ``setting``-th parameter setting, a panel per layer
    (see :func:`step_layers`); colour = group, line = mean over its runs at each step, band =
    lowest to highest run."""
    from ._axes import y_label

    params = params_of(frame)
    combo = _combos(frame, params)[setting]
    part = _select(frame, params, combo).dropna(subset=["step"])
    keys, members = _colour_keys(runs, groups)
    colors = run_colors(keys)
    layers = list(dict.fromkeys(part["layer"].dropna().tolist()))
    layers.sort(key=lambda lay: positions.get(lay, -1))
    shown = step_layers(layers)
    cols = min(3, len(shown))
    nrows = math.ceil(len(shown) / cols)
    fig = _figure(2.7 * cols + 0.6, 2.2 * nrows + 0.9)
    axes = fig.subplots(nrows, cols, squeeze=False, sharex=True)
    bands = False
    for k, lay in enumerate(shown):
        ax = axes[k // cols][k % cols]
        rows = part[part["layer"] == lay]
        for key in keys:
            st = _spread(rows[rows["run"].isin(members[key])], "step").sort_index()
            if st.empty:
                continue
            bands |= bool((st["k"] > 1).any())
            _draw(ax, st.index.to_numpy(float), st, colors[key], "-", _entry(key, members[key]), None)
        kind = rows["module"].dropna().iloc[0] if rows["module"].notna().any() else ""
        ax.set_title(f"{_short(lay, 24)} {kind}".strip() if lay != MODEL_LAYER else "whole model", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if k % cols == 0:
            ax.set_ylabel(y_label(metric), fontsize=7)
        if k // cols == nrows - 1:
            ax.set_xlabel("training step", fontsize=7.5)
    for k in range(len(shown), nrows * cols):
        axes[k // cols][k % cols].set_visible(False)
    title = metric + (f" ({_label(params, combo)})" if params and _label(params, combo) else "")
    if len(shown) < len(layers):
        title += f": first, middle and last of {len(layers)} layers"
    fig.suptitle(_wrap(title, 70), fontsize=9.5)
    _legend(fig, axes[0][0], bands)
    return fig


def metric_over_steps(frame: pd.DataFrame, metric: str, runs: Sequence[str], positions: Mapping[str, int],
                      groups: Mapping[str, str] | None = None, setting: int = 0) -> bytes:
    """PNG bytes of :func:`steps_figure`."""
    return png(steps_figure(frame, metric, runs, positions, groups, setting))



def embedding_figure(points: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]], runs: Sequence[str],
                   layers: Sequence[str], method: str) -> Any:
    """Scatter of 2-D embeddings: a row per layer, a column per run, coloured by class label,
    with one class legend for the grid (grey: samples without a label)."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    cmap = colormaps["tab10"]
    fig = _figure(2.9 * len(runs) + 1.2, 2.7 * len(layers) + 0.3)
    axes = fig.subplots(len(layers), len(runs), squeeze=False)
    classes: set[int] = set()
    unlabelled = False
    for i, lay in enumerate(layers):
        for j, run in enumerate(runs):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if (run, lay) not in points:
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            else:
                xy, lab = points[(run, lay)]
                known = lab >= 0
                unlabelled |= bool((~known).any())
                classes.update(int(c) for c in np.unique(lab[known]))
                ax.scatter(xy[~known, 0], xy[~known, 1], s=4, c="0.6", linewidths=0)
                ax.scatter(xy[known, 0], xy[known, 1], s=4, c=cmap(lab[known] % 10), linewidths=0)
            ax.set_title(f"{run} · {_short(lay, 24)}", fontsize=8)
    handles = [Line2D([], [], ls="", marker="o", ms=5, color=cmap(c % 10), label=str(c)) for c in sorted(classes)]
    if unlabelled:
        handles.append(Line2D([], [], ls="", marker="o", ms=5, color="0.6", label="no label"))
    if handles:
        note = " (colours repeat after 10)" if len(classes) > 10 else ""
        fig.legend(handles=handles, loc="outside right upper", fontsize=7, title="class" + note, title_fontsize=7.5,
                   frameon=False)
    fig.suptitle(f"{method.upper()} of layer samples, coloured by class", fontsize=10)
    return fig


def embedding_grid(points: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]], runs: Sequence[str],
                   layers: Sequence[str], method: str) -> bytes:
    """PNG bytes of :func:`embedding_figure`."""
    return png(embedding_figure(points, runs, layers, method))



def gamma_histograms(gammas: Mapping[str, Mapping[str, np.ndarray]], runs: Sequence[str],
                     layers: Sequence[str], groups: Mapping[str, str] | None = None) -> bytes:
    """Histograms of |gamma| per normalization layer, groups (or runs) overlaid; a group's runs are pooled."""
    keys, members = _colour_keys([r for r in runs if r in gammas], groups)
    colors = run_colors(keys)
    cols = min(4, len(layers))
    rows = math.ceil(len(layers) / cols)
    fig = _figure(3.0 * cols, 2.4 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, lay in enumerate(layers):
        ax = axes[k // cols][k % cols]
        pooled = {key: np.concatenate([np.abs(gammas[r][lay]) for r in members[key] if lay in gammas[r]] or
                                      [np.zeros(0)]) for key in keys}
        hi = max((float(v.max()) for v in pooled.values() if v.size), default=1.0) or 1.0
        bins = np.linspace(0.0, hi, 21)
        for key, vals in pooled.items():
            if vals.size:
                n = len([r for r in members[key] if lay in gammas[r]])
                ax.hist(vals, bins=bins, alpha=0.55, color=colors[key],
                        label=key if n == 1 and members[key] == [key] else f"{key} ({n} run{'s' * (n > 1)})")
        ax.set_title(f"|gamma| · {_short(lay, 24)}", fontsize=8)
        ax.set_xlabel("|gamma|", fontsize=7)
        if k % cols == 0:
            ax.set_ylabel("channels", fontsize=7)
        ax.tick_params(labelsize=7)
    for k in range(len(layers), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    _legend(fig, axes[0][0], False)
    return png(fig)
