"""Writing a report: ``table.csv`` (tidy), ``report.html`` (one self-contained file, plots
embedded as base64 PNG), ``report.md`` (plots beside it in ``plots/``)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from ..tables import MODEL_LAYER, write_table
from . import _plots
from ._sections import identical_metrics
from ._html import finding_sentence, render_html, report_notes
from ._summary import ReportData, format_value, group_summary

__all__ = ["Figure", "PlannedFigure", "make_figures", "plan_figures", "render_html", "render_markdown", "write_report"]


@dataclass
class Figure:
    """One plot of the report: section, title, file name, PNG bytes and the metric it shows."""

    section: str
    title: str
    name: str
    png: bytes
    metric: str = ""
    caption: str = ""


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")[:60] or "x"


def _caption(metric: str, same: list[str]) -> str:
    from ._axes import axis_text, meaning_of

    text = f"{meaning_of(metric)}; {axis_text(metric)}."
    if same:
        text += f" Also {', '.join(same)} (identical here)."
    return text


@dataclass
class PlannedFigure:
    """A figure not drawn yet: what :class:`Figure` holds, with ``draw() -> PNG bytes``."""

    section: str
    title: str
    name: str
    draw: Callable[[], bytes]
    metric: str = ""
    caption: str = ""


MAX_STEP_SETTINGS = 3
"""Parameter settings of a training metric drawn as separate figures (more: the first only)."""


def plan_figures(data: ReportData) -> list[PlannedFigure]:
    """Every figure of the report, not yet drawn (so a progress bar knows the count first). A
    metric identical to an earlier one on every row is drawn once."""
    plan: list[PlannedFigure] = []
    frame = data.matched()
    positions = data.positions()
    groups = {r: data.group_of(r) for r in data.runs}
    per_layer = frame[frame["layer"] != MODEL_LAYER]
    metrics = data.layer_metrics()
    same = identical_metrics(per_layer, metrics)
    for metric in metrics:
        part = per_layer[per_layer["metric"] == metric]
        if metric in same or not part["value"].notna().any():
            continue
        plan.append(PlannedFigure(
            "depth", metric, f"depth_{_slug(metric)}.png",
            partial(_plots.metric_vs_depth, part, metric, data.runs, positions, groups), metric,
            _caption(metric, [m for m, f in same.items() if f == metric])))
    if data.embeddings:
        shown = [r for r in data.runs if any(k[0] == r for k in data.embeddings)]
        plan.append(PlannedFigure(
            "embedding", f"{data.embed_method.upper()} scatter", f"embedding_{data.embed_method}.png",
            partial(_plots.embedding_grid, data.embeddings, shown, data.embed_layers, data.embed_method)))
    bn_layers = list(dict.fromkeys(lay for g in data.gammas.values() for lay in g))
    if bn_layers:
        bn_layers.sort(key=lambda lay: positions.get(lay, len(positions)))
        plan.append(PlannedFigure("gamma", "Normalization gamma", "bn_gamma_hist.png",
                                  partial(_plots.gamma_histograms, data.gammas, data.runs, bn_layers, groups), "gamma",
                                  "Histogram of |gamma| per normalization layer; the channels of a group's runs pooled."))
    if data.training is not None and not data.training.empty:
        tr = data.matched(training=True)
        tr_pos = {lay: i for i, lay in enumerate(sorted(tr["layer"].dropna().unique(), key=lambda v: positions.get(v, -1)))}
        wanted = data.training_metrics
        tr_metrics = list(dict.fromkeys(tr["metric"].dropna().tolist()))
        tr_same = identical_metrics(tr, tr_metrics)
        for metric in tr_metrics:
            part = tr[tr["metric"] == metric]
            if (wanted is not None and metric not in wanted) or metric in tr_same or part["step"].nunique() < 2 \
                    or not part["value"].notna().any():
                continue
            n = _plots.settings(part)
            todo = range(n) if n <= MAX_STEP_SETTINGS else range(1)
            for k in todo:  # each setting of a few (raw and scale-normalised W1) gets its own figure
                plan.append(PlannedFigure(
                    "training", f"{metric} over training" + (f" ({k + 1} of {n})" if n > 1 else ""),
                    f"steps_{_slug(metric)}{f'_{k}' if k else ''}.png",
                    partial(_plots.metric_over_steps, part, metric, data.runs, tr_pos, groups, k), metric,
                    "Over training steps, a panel per layer: "
                    + _caption(metric, [m for m, f in tr_same.items() if f == metric])
                    + (f" First of {n} settings; all in training.csv." if len(todo) < n else "")))
    return plan


def figure_workers(n_figures: int, cores: int | None = None) -> int:
    """Figures drawn at once: one per core (this process and ``cores - 1`` spawned ones, which pay
    ~3 s to import repdiag and matplotlib), one for fewer than 8 figures."""
    from ..functional._device import available_cores

    cores = available_cores() if cores is None else cores
    return 1 if n_figures < 8 else max(1, min(n_figures, cores))


def _draw(job: Callable[[], bytes]) -> bytes:
    return job()


def make_figures(data: ReportData, progress: Callable[[str], None] | None = None,
                 plan: list[PlannedFigure] | None = None, workers: int | None = None) -> list[Figure]:
    """Draw every figure of the report (``plan`` from :func:`plan_figures`, else planned here),
    ``workers`` at once (None: :func:`figure_workers`; matplotlib's Agg output does not depend on
    the process that draws it); ``progress(title)`` is called as each is done."""
    from ._spread import spread

    plan = plan if plan is not None else plan_figures(data)
    workers = figure_workers(len(plan)) if workers is None else workers
    pngs = spread(_draw, [p.draw for p in plan], workers=workers,
                  done=(lambda i: progress(plan[i].title)) if progress else None)
    return [Figure(p.section, p.title, p.name, png, p.metric, p.caption) for p, png in zip(plan, pngs)]


def _md_escape(s: str) -> str:
    return html.escape(str(s), quote=False).replace("|", "\\|").replace("\n", " ")


def render_markdown(data: ReportData, figures: list[Figure], plot_dir: str = "plots") -> str:
    """The report as markdown, with plots referenced as files under ``plot_dir``."""
    lines = ["# repdiag report", "", f"Runs: {', '.join(f'**{_md_escape(r)}**' for r in data.runs)}. "
             f"Data: {_md_escape(data.meta.get('data', '?'))}.", ""]
    for r, s in data.sources.items():
        lines.append(f"- **{_md_escape(r)}**: `{s.replace('`', '')}`")
    if data.findings is not None and not data.findings.empty:
        f = data.findings
        a, b = str(f.attrs.get("a", "a")), str(f.attrs.get("b", "b"))
        lines += ["", f"## Findings: {_md_escape(a)} vs {_md_escape(b)}", ""]
        lines += [f"- **{_md_escape(rec['question'])}** {_md_escape(finding_sentence(rec, a, b))}"
                  for rec in f.to_dict("records")]
    for note in report_notes(data):
        lines += ["", f"> {_md_escape(note)}"]
    lines.append("")
    for fig in figures:
        lines.append(f"![{_md_escape(fig.title)}]({plot_dir}/{fig.name})")
    for caption, summary in group_summary(data):
        lines += ["", f"## {_md_escape(caption)}", "", "| " + " | ".join(_md_escape(c) for c in summary.columns)
                  + " |", "|" + "---|" * len(summary.columns)]
        for row in summary.itertuples(index=False):
            cells = [_md_escape(v) if i < 3 else format_value(v) for i, v in enumerate(row)]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Provenance", ""] + [f"- {_md_escape(k)}: `{v.replace('`', '')}`" for k, v in data.meta.items()]
    return "\n".join(lines) + "\n"


def write_report(data: ReportData, out_dir: str | Path, *, progress: Callable[[str], None] | None = None,
                 plan: list[PlannedFigure] | None = None) -> dict[str, Path]:
    """Write ``table.csv`` (and ``training.csv``), ``plots/*.png``, ``report.html``, ``report.md``
    under ``out_dir``; returns the paths by kind. ``plan``: figures from :func:`plan_figures`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": write_table(data.table, out / "table.csv")}
    if data.training is not None and not data.training.empty:
        paths["training"] = write_table(data.training, out / "training.csv")
    figures = make_figures(data, progress, plan)
    plot_dir = out / "plots"
    plot_dir.mkdir(exist_ok=True)
    for fig in figures:
        (plot_dir / fig.name).write_bytes(fig.png)
    paths["html"] = out / "report.html"
    paths["html"].write_text(render_html(data, figures), encoding="utf-8")
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(render_markdown(data, figures), encoding="utf-8")
    return paths
