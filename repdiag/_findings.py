"""``repdiag.findings``: one row per question of the source papers, with the measured difference
between two groups of runs, its interval, a verdict and the paper's own claim beside it.

The questions, metrics, thresholds and wording are in :mod:`repdiag._findings_spec`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._align import align_layers, apply_alignment
from ._compare import run_groups
from ._errors import ConfigError
from ._findings_spec import (
    CONFIDENCE,
    HOW_TO_MEASURE,
    MIN_RELATIVE_DIFFERENCE,
    MIN_RUNS,
    QUESTIONS,
    Question,
)
from ._groups import GroupDiff, group_diff
from .tables import MODEL_LAYER, concat_tables

__all__ = ["findings", "verdict", "FINDINGS_COLUMNS"]

FINDINGS_COLUMNS = ("key", "question", "paper", "claim", "metrics", "layers", "a_value", "b_value", "difference",
                    "ci_low", "ci_high", "effect_size", "n_a", "n_b", "verdict", "note")


def verdict(d: GroupDiff) -> str:
    """The verdict of one difference under the rules of :mod:`repdiag._findings_spec`."""
    if d.n_a == 0 or d.n_b == 0:
        return "not measured"
    if d.n_a < MIN_RUNS or d.n_b < MIN_RUNS:
        return "too few runs"
    scale = max(abs(d.mean_a), abs(d.mean_b))
    big = scale > 0 and abs(d.diff) >= MIN_RELATIVE_DIFFERENCE * scale
    if big and d.ci_low > 0:
        return "a > b"
    if big and d.ci_high < 0:
        return "a < b"
    return "no clear difference"


def _select(frame: pd.DataFrame, metric: str, where: dict[str, Any]) -> pd.DataFrame:
    sel = frame[frame["metric"] == metric]
    for col, want in where.items():
        if col not in sel:
            return sel.iloc[0:0]
        vals = sel[col]
        if isinstance(want, bool):  # booleans may come back from disk as strings
            ok = vals.map(lambda v: v is want or v == want or str(v) == str(want))
        else:
            ok = vals == want
        sel = sel[ok.fillna(False).astype(bool)]
    return sel


def _layers(sel: pd.DataFrame, how: str, in_a: pd.Series, in_b: pd.Series) -> list[str]:
    """The question's layers: model-wide rows, or the (aligned) layers that runs of both groups
    have (all layers when none are shared), in forward order; ``"deep"`` keeps the deeper half."""
    if how == "model":
        return [MODEL_LAYER] if (sel["layer"] == MODEL_LAYER).any() else []
    sel = sel[sel["layer"] != MODEL_LAYER]
    shared = set(sel.loc[in_a.loc[sel.index], "layer"]) & set(sel.loc[in_b.loc[sel.index], "layer"])
    if shared:
        sel = sel[sel["layer"].isin(shared)]
    keys = [str(k) for k in sel.groupby("layer")["depth"].min().sort_values().index]
    return keys[len(keys) // 2:] if how == "deep" else keys


def _per_run(sel: pd.DataFrame, layers: list[str]) -> pd.Series:
    """One value per run: the mean over the question's layers (and parameter values)."""
    return sel[sel["layer"].isin(layers)].groupby("run", sort=False)["value"].mean()


class _Context:
    """What every question needs: the aligned last-step rows, the groups and their runs."""

    def __init__(self, frame: pd.DataFrame, a: str, b: str, boot: dict[str, Any]) -> None:
        self.groups = run_groups(frame)
        names = list(dict.fromkeys(self.groups.values()))
        for label, g in (("a", a), ("b", b)):
            if g not in names:
                raise ConfigError(f"{label} must be one of the groups {names}; got {g!r}. Pass a=..., b=... "
                                  "naming two groups (attach(group=...)).")
        alignment = align_layers(frame)
        norm_runs = set(alignment.loc[alignment["role"] == "norm", "run"])
        self.has_norm = {g: all(r in norm_runs for r, gg in self.groups.items() if gg == g) and
                         any(r in norm_runs for r, gg in self.groups.items() if gg == g) for g in names}
        rows = apply_alignment(frame, alignment)
        has_step = rows["step"].notna()
        last = rows[has_step].groupby(["run", "layer", "metric"])["step"].transform("max")
        keep = ~has_step
        keep.loc[last.index] = rows.loc[last.index, "step"] == last
        self.rows = {"all": rows, "last": rows[keep.fillna(False).astype(bool)]}
        self.in_a = rows["run"].isin([r for r, g in self.groups.items() if g == a])
        self.in_b = rows["run"].isin([r for r, g in self.groups.items() if g == b])
        self.a, self.b, self.boot = a, b, boot

    def values(self, sel: pd.DataFrame, layers: list[str]) -> tuple[np.ndarray, np.ndarray]:
        per = _per_run(sel, layers)
        va = [v for r, v in per.items() if self.groups.get(str(r)) == self.a]
        vb = [v for r, v in per.items() if self.groups.get(str(r)) == self.b]
        return np.asarray(va, dtype=float), np.asarray(vb, dtype=float)

    def diff(self, metric: str, where: dict[str, Any], how: str, steps: str = "last") -> tuple[GroupDiff, list[str]]:
        sel = _select(self.rows[steps], metric, where)
        layers = _layers(sel, how, self.in_a, self.in_b)
        va, vb = self.values(sel, layers)
        return group_diff(va, vb, confidence=CONFIDENCE, **self.boot), layers

    def in_group(self, metric: str, where: dict[str, Any], group: str) -> bool:
        sel = _select(self.rows["last"], metric, where)
        return bool(sel["run"].isin([r for r, g in self.groups.items() if g == group]).any())


def _label(metric: str, where: dict[str, Any]) -> str:
    return metric + "".join(f" ({k}={v})" for k, v in where.items())


def _fmt(x: float) -> str:
    return "nan" if x != x else f"{x:.3g}"


def _paper_note(q: Question, ctx: _Context, v: str) -> str:
    if q.bn_direction is None or ctx.has_norm[ctx.a] == ctx.has_norm[ctx.b] or v not in (
            "a > b", "a < b", "no clear difference"):
        return ""
    bn, plain = (ctx.a, ctx.b) if ctx.has_norm[ctx.a] else (ctx.b, ctx.a)
    if q.bn_direction == "~":
        want = f"{bn} similar to or larger than {plain}"
        ok = v == "no clear difference" or v == ("a > b" if bn == ctx.a else "a < b")
    else:
        flip = {"<": ">", ">": "<"}
        want = f"{bn} {q.bn_direction} {plain}"
        ok = v == ("a " + (q.bn_direction if bn == ctx.a else flip[q.bn_direction]) + " b")
    return f"agrees with the paper ({want})" if ok else f"differs from the paper, which reports {want}"


def _answer(q: Question, ctx: _Context) -> dict[str, Any]:
    metric = next((m for m in q.metrics if ctx.in_group(m, q.where, ctx.a) and ctx.in_group(m, q.where, ctx.b)),
                  next((m for m in q.metrics if ctx.in_group(m, q.where, ctx.a) or ctx.in_group(m, q.where, ctx.b)),
                       q.metrics[0]))
    d, layers = ctx.diff(metric, q.where, q.layers, q.steps)
    v = verdict(d)
    notes: list[str] = []
    metrics = [_label(metric, q.where)]
    if v == "not measured":
        missing = [g for g, n in ((ctx.a, d.n_a), (ctx.b, d.n_b)) if n == 0]
        notes.append(f"{metric} is not in the tables of {' or '.join(missing)}; measure it with "
                     f"{HOW_TO_MEASURE[q.needs]}")
    elif v == "too few runs":
        notes.append(f"{d.n_a} and {d.n_b} runs: at least {MIN_RUNS} per group are needed for an interval "
                     "(train more seeds)")
    elif d.note:
        notes.append(d.note)
    if q.normalised is not None and v not in ("not measured",):
        n_metric, n_where = q.normalised
        n_metric = metric if n_metric in q.metrics else n_metric
        dn, _ = ctx.diff(n_metric, n_where, q.layers, q.steps)
        vn = verdict(dn)
        if dn.n_a and dn.n_b:
            metrics.append(_label(n_metric, n_where))
            if vn != v:
                why = ("the raw difference may come from a difference in scale alone" if vn == "no clear difference"
                       else "relative to its scale the quantity differs")
                notes.append(f"raw and scale-normalised disagree: {_label(n_metric, n_where)} says {vn!r} "
                             f"({_fmt(dn.mean_a)} vs {_fmt(dn.mean_b)}); {why}")
    if q.context is not None:
        c_metric, c_where = q.context
        dc, _ = ctx.diff(c_metric, c_where, "all")
        quoted = [f"{g} {_fmt(m)}" for g, m, n in ((ctx.a, dc.mean_a, dc.n_a), (ctx.b, dc.mean_b, dc.n_b)) if n]
        if quoted:
            notes.append(f"{_label(c_metric, c_where)}: {', '.join(quoted)}" + ("" if len(quoted) == 2 else " (no affine norm layers in "
                         f"{ctx.b if dc.n_a else ctx.a})"))
    paper = _paper_note(q, ctx, v)
    if paper:
        notes.append(paper)
    return {"key": q.key, "question": q.question, "paper": q.paper, "claim": q.claim, "metrics": ", ".join(metrics),
            "layers": ", ".join(layers), "a_value": d.mean_a, "b_value": d.mean_b, "difference": d.diff,
            "ci_low": d.ci_low, "ci_high": d.ci_high, "effect_size": d.effect_size, "n_a": d.n_a, "n_b": d.n_b,
            "verdict": v, "note": "; ".join(notes)}


def findings(
    tables: Sequence[pd.DataFrame] | pd.DataFrame,
    a: str = "bn",
    b: str = "nobn",
    *,
    n_resamples: int = 9999,
    random_state: int = 0,
) -> pd.DataFrame:
    """One row per question of the source papers: what differs between groups ``a`` and ``b``.

    Each run contributes one value per question: the question's metric averaged over the
    question's layers that both groups have (aligned across runs as in :func:`repdiag.compare`),
    at the run's last step, or over all logged steps for measurements taken during training
    (landscape, covariate shift, EM shift). The groups' means are differenced, with a 95% percentile bootstrap
    interval over runs (``scipy.stats.bootstrap``) and Hedges' g, and a verdict is drawn by the
    rules documented in :mod:`repdiag._findings_spec` (interval excludes 0 and the difference
    is at least 5% of the larger mean; fewer than 2 runs in a group: "too few runs").

    Parameters
    ----------
    tables : sequence of DataFrame, or one DataFrame
        Tidy tables with a ``group`` column (``attach(group=...)``, :func:`repdiag.load_run`).
    a, b : str
        The groups to compare (``difference = a - b``).
    n_resamples, random_state : int
        Of the bootstrap (the result is reproducible).

    Returns
    -------
    DataFrame
        Columns ``key, question, paper, claim, metrics, layers, a_value, b_value, difference,
        ci_low, ci_high, effect_size, n_a, n_b, verdict, note``; ``verdict`` is one of ``"a > b"``,
        ``"a < b"``, ``"no clear difference"``, ``"too few runs"``, ``"not measured"``. The note
        says what is missing and how to measure it, where a raw metric and its scale-normalised
        variant disagree, and whether the verdict agrees with the paper's claim (when exactly one
        group has norm layers). ``attrs["a"]``, ``attrs["b"]`` name the groups.

    Examples
    --------
    >>> tables = [repdiag.load_run(p) for p in sorted(Path("runs").iterdir())]  # doctest: +SKIP
    >>> repdiag.findings(tables, a="bn", b="nobn")[["question", "difference", "verdict"]]  # doctest: +SKIP
    """
    frame = concat_tables([tables] if isinstance(tables, pd.DataFrame) else list(tables))
    ctx = _Context(frame, a, b, {"n_resamples": n_resamples, "random_state": random_state})
    out = pd.DataFrame([_answer(q, ctx) for q in QUESTIONS], columns=list(FINDINGS_COLUMNS))
    out = out.astype({"n_a": "int64", "n_b": "int64"})
    out.attrs["a"], out.attrs["b"] = a, b
    return out

