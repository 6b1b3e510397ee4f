"""The report's figures, drawn with matplotlib's Agg canvas (no pyplot, no global backend
change) and returned as PNG bytes. Plots read tables and arrays; they compute no metric."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..tables import CORE_COLUMNS

__all__ = ["png", "metric_vs_depth", "metric_over_steps", "embedding_grid", "gamma_histograms", "run_colors"]

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


def _params(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns[len(CORE_COLUMNS):] if frame[c].notna().any()]


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


_STYLES = ("-", "--", ":", "-.")


def metric_vs_depth(frame: pd.DataFrame, metric: str, runs: Sequence[str], positions: Mapping[str, int]) -> bytes:
    """One metric against depth, a line per run (and per parameter value, up to four).

    ``frame`` holds that metric's rows with layers already matched; ``positions`` maps layer
    labels to x positions.
    """
    params = _params(frame)
    combos = _combos(frame, params)
    shown = combos[:4]
    colors = run_colors(runs)
    present = [lay for lay in dict.fromkeys(frame["layer"].dropna().tolist()) if lay in positions]
    order = sorted(present, key=positions.__getitem__)
    positions = {lay: i for i, lay in enumerate(order)}  # this metric's layers only, evenly spaced
    kinds = frame.drop_duplicates("layer").set_index("layer")["module"].to_dict()
    fig = _figure(4.6, 3.0)
    ax = fig.add_subplot()
    for ci, combo in enumerate(shown):
        part = _select(frame, params, combo)
        for run in runs:
            rows = part[(part["run"] == run) & part["layer"].isin(list(positions))]
            if rows.empty:
                continue
            vals = rows.groupby("layer")["value"].mean()
            xs = [positions[lay] for lay in order if lay in vals.index]
            ys = [float(vals[lay]) for lay in order if lay in vals.index]
            label = run + (f" ({_label(params, combo)})" if params and len(shown) > 1 else "")
            ax.plot(xs, ys, _STYLES[ci % 4], marker="o", ms=3.5, color=colors[run], label=label)
    title = metric + (f" ({_label(params, shown[0])})" if params and len(shown) == 1 else "")
    if len(combos) > 4:
        title += f" (first 4 of {len(combos)} settings)"
    ax.set_title(title, fontsize=10)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([f"{_short(s)} {kinds.get(s) or ''}".strip() for s in order], rotation=40, ha="right",
                       fontsize=7)
    ax.set_xlabel("layer (forward order)", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return png(fig)


def _short(s: str, n: int = 18) -> str:
    return s if len(s) <= n else "…" + s[-(n - 1):]


def metric_over_steps(frame: pd.DataFrame, metric: str, runs: Sequence[str], positions: Mapping[str, int]) -> bytes:
    """One metric over training steps: colour = run; one line per layer, darker = deeper."""
    params = _params(frame)
    combo = _combos(frame, params)[0]
    part = _select(frame, params, combo)
    colors = run_colors(runs)
    fig = _figure(4.6, 3.0)
    ax = fig.add_subplot()
    layers = list(dict.fromkeys(part["layer"].dropna().tolist()))
    layers.sort(key=lambda lay: positions.get(lay, -1))
    deepest = max(1, len(layers) - 1)
    for run in runs:
        first = True
        for i, lay in enumerate(layers):
            rows = part[(part["run"] == run) & (part["layer"] == lay)].dropna(subset=["step"])
            if rows.empty:
                continue
            s = rows.groupby("step")["value"].mean()
            alpha = 0.3 + 0.7 * (i / deepest if len(layers) > 1 else 1.0)
            ax.plot(s.index.astype(float), s.to_numpy(dtype=float), color=colors[run], alpha=alpha, lw=1.2,
                    label=run if first else None)
            first = False
    title = metric + (f" ({_label(params, combo)})" if params else "")
    ax.set_title(title + ("; darker = deeper layer" if len(layers) > 1 else ""), fontsize=9)
    ax.set_xlabel("training step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return png(fig)


def embedding_grid(points: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]], runs: Sequence[str],
                   layers: Sequence[str], method: str) -> bytes:
    """Scatter of 2-D embeddings: a row per layer, a column per run, coloured by label."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    fig = _figure(2.9 * len(runs) + 0.4, 2.7 * len(layers))
    axes = fig.subplots(len(layers), len(runs), squeeze=False)
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
                ax.scatter(xy[~known, 0], xy[~known, 1], s=4, c="0.6", linewidths=0)
                ax.scatter(xy[known, 0], xy[known, 1], s=4, c=cmap(lab[known] % 10), linewidths=0)
            ax.set_title(f"{run} · {_short(lay, 24)}", fontsize=8)
    fig.suptitle(f"{method.upper()} of layer samples, coloured by label", fontsize=10)
    return png(fig)


def gamma_histograms(gammas: Mapping[str, Mapping[str, np.ndarray]], runs: Sequence[str],
                     layers: Sequence[str]) -> bytes:
    """Histograms of |gamma| per BN layer, runs overlaid."""
    colors = run_colors(runs)
    cols = min(4, len(layers))
    rows = math.ceil(len(layers) / cols)
    fig = _figure(3.0 * cols, 2.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, lay in enumerate(layers):
        ax = axes[k // cols][k % cols]
        vals = [np.abs(gammas[r][lay]) for r in runs if lay in gammas.get(r, {})]
        hi = max((float(v.max()) for v in vals if v.size), default=1.0) or 1.0
        bins = np.linspace(0.0, hi, 21)
        for r in runs:
            if lay in gammas.get(r, {}):
                ax.hist(np.abs(gammas[r][lay]), bins=bins, alpha=0.55, color=colors[r], label=r)
        ax.set_title(f"|gamma| · {_short(lay, 24)}", fontsize=8)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=7)
    for k in range(len(layers), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    return png(fig)
