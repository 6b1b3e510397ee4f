"""Writing a report: ``table.csv`` (tidy), ``report.html`` (one self-contained file, plots
embedded as base64 PNG), ``report.md`` (plots beside it in ``plots/``)."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..tables import MODEL_LAYER, write_table
from . import _plots
from ._summary import ReportData, format_value, summary_frame

__all__ = ["Figure", "make_figures", "render_html", "render_markdown", "write_report"]


@dataclass
class Figure:
    """One plot of the report: section, title, file name and PNG bytes."""

    section: str
    title: str
    name: str
    png: bytes


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")[:60] or "x"


def make_figures(data: ReportData, progress: Callable[[str], None] | None = None) -> list[Figure]:
    """Draw every figure of the report."""
    figs: list[Figure] = []
    frame = data.matched()
    positions = data.positions()
    for metric in data.layer_metrics():
        if progress:
            progress(metric)
        part = frame[(frame["metric"] == metric) & (frame["layer"] != MODEL_LAYER)]
        if part["value"].notna().any():
            figs.append(Figure("depth", metric, f"depth_{_slug(metric)}.png",
                               _plots.metric_vs_depth(part, metric, data.runs, positions)))
    if data.embeddings:
        figs.append(Figure("embedding", f"{data.embed_method.upper()} scatter", f"embedding_{data.embed_method}.png",
                           _plots.embedding_grid(data.embeddings, data.runs, data.embed_layers, data.embed_method)))
    bn_layers = list(dict.fromkeys(lay for g in data.gammas.values() for lay in g))
    if bn_layers:
        bn_layers.sort(key=lambda lay: positions.get(lay, len(positions)))
        figs.append(Figure("gamma", "BN gamma", "bn_gamma_hist.png",
                           _plots.gamma_histograms(data.gammas, data.runs, bn_layers)))
    if data.training is not None and not data.training.empty:
        tr = data.matched(training=True)
        tr_pos = {lay: i for i, lay in enumerate(sorted(tr["layer"].dropna().unique(), key=lambda v: positions.get(v, -1)))}
        wanted = data.training_metrics
        for metric in dict.fromkeys(tr["metric"].dropna().tolist()):
            if wanted is not None and metric not in wanted:
                continue
            part = tr[tr["metric"] == metric]
            if part["step"].nunique() >= 2 and part["value"].notna().any():
                if progress:
                    progress(f"{metric} over steps")
                figs.append(Figure("training", metric, f"steps_{_slug(metric)}.png",
                                   _plots.metric_over_steps(part, metric, data.runs, tr_pos)))
    return figs


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1280px;
color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.note{background:#fff7e0;border-left:4px solid #e0a800;padding:.5em .8em;margin:.6em 0}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid figure{margin:0}.grid img{max-width:100%;height:auto}
figure{margin:.5em 0}figcaption{font-size:.8em;color:#555}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}
td.l,th.l{text-align:left}tr:nth-child(even){background:#f7f7f7}
code,pre{background:#f3f3f3;padding:2px 4px;font-size:.85em}pre{padding:.6em;white-space:pre-wrap}
"""


def _img(fig: Figure) -> str:
    b64 = base64.b64encode(fig.png).decode("ascii")
    return (f'<figure><img alt="{html.escape(fig.title)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(fig.title)}</figcaption></figure>")


def _html_table(frame: pd.DataFrame, left: int) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(str(c))}</th>'
                   for i, c in enumerate(frame.columns))
    body = []
    for row in frame.itertuples(index=False):
        cells = "".join(
            f'<td class="l">{html.escape(str(v))}</td>' if i < left else f"<td>{html.escape(format_value(v))}</td>"
            for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(data: ReportData, figures: list[Figure]) -> str:
    """The whole report as one HTML document (no external resources)."""
    e = html.escape
    runs = ", ".join(f"<b>{e(r)}</b>" for r in data.runs)
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>repdiag report: "
             f"{e(' vs '.join(data.runs))}</title><style>{_CSS}</style></head><body>",
             f"<h1>repdiag report</h1><p>Runs: {runs}. Data: {e(data.meta.get('data', '?'))}.</p>"]
    if data.sources:
        items = "".join(f"<li><b>{e(r)}</b>: <code>{e(s)}</code></li>" for r, s in data.sources.items())
        parts.append(f"<ul>{items}</ul>")
    for note in ([data.match.note] if data.match.note else []) + data.notes:
        parts.append(f'<div class="note">{e(note)}</div>')
    sections = [("depth", "Metrics against depth", "Each metric per layer in forward order, one line per run."),
                ("embedding", "Embeddings", "Layer samples in 2-D, coloured by class label; runs side by side."),
                ("gamma", "BatchNorm gamma", "Distribution of |gamma| per BN layer (runs without BN have none)."),
                ("training", "During training", "Metrics recorded while training, over steps.")]
    for key, title, text in sections:
        figs = [f for f in figures if f.section == key]
        if figs:
            parts.append(f"<h2>{e(title)}</h2><p>{e(text)}</p><div class=\"grid\">{''.join(map(_img, figs))}</div>")
    summary = summary_frame(data)
    parts.append(f"<h2>Summary table</h2><p>{len(summary)} rows; full data in <code>table.csv</code>.</p>")
    parts.append(_html_table(summary, left=3))
    meta = "".join(f"<tr><th class=\"l\">{e(k)}</th><td class=\"l\"><code>{e(v)}</code></td></tr>"
                   for k, v in data.meta.items())
    parts.append(f"<h2>Provenance</h2><table>{meta}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _md_escape(s: str) -> str:
    return html.escape(str(s), quote=False).replace("|", "\\|").replace("\n", " ")


def render_markdown(data: ReportData, figures: list[Figure], plot_dir: str = "plots") -> str:
    """The report as markdown, with plots referenced as files under ``plot_dir``."""
    lines = ["# repdiag report", "", f"Runs: {', '.join(f'**{_md_escape(r)}**' for r in data.runs)}. "
             f"Data: {_md_escape(data.meta.get('data', '?'))}.", ""]
    for r, s in data.sources.items():
        lines.append(f"- **{_md_escape(r)}**: `{s.replace('`', '')}`")
    for note in ([data.match.note] if data.match.note else []) + data.notes:
        lines += ["", f"> {_md_escape(note)}"]
    lines.append("")
    for fig in figures:
        lines.append(f"![{_md_escape(fig.title)}]({plot_dir}/{fig.name})")
    summary = summary_frame(data)
    lines += ["", "## Summary table", "", "| " + " | ".join(_md_escape(c) for c in summary.columns) + " |",
              "|" + "---|" * len(summary.columns)]
    for row in summary.itertuples(index=False):
        cells = [_md_escape(v) if i < 3 else format_value(v) for i, v in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Provenance", ""] + [f"- {_md_escape(k)}: `{v.replace('`', '')}`" for k, v in data.meta.items()]
    return "\n".join(lines) + "\n"


def write_report(data: ReportData, out_dir: str | Path, *, progress: Callable[[str], None] | None = None
                 ) -> dict[str, Path]:
    """Write ``table.csv`` (and ``training.csv``), ``plots/*.png``, ``report.html``, ``report.md``
    under ``out_dir``; returns the paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": write_table(data.table, out / "table.csv")}
    if data.training is not None and not data.training.empty:
        paths["training"] = write_table(data.training, out / "training.csv")
    figures = make_figures(data, progress)
    plot_dir = out / "plots"
    plot_dir.mkdir(exist_ok=True)
    for fig in figures:
        (plot_dir / fig.name).write_bytes(fig.png)
    paths["html"] = out / "report.html"
    paths["html"].write_text(render_html(data, figures), encoding="utf-8")
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(render_markdown(data, figures), encoding="utf-8")
    return paths
