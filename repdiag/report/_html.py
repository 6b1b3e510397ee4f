"""The HTML report: findings first (words and numbers), then one section per question of the
source papers with the plots its metrics give, then everything else, the layer alignment, the
summary table and provenance. One self-contained file; every name is escaped."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ._sections import WHY_IDENTICAL, identical_metrics, missing_by_group, not_applicable_note
from ._summary import ReportData, format_value, group_summary

__all__ = ["render_html", "report_notes", "finding_sentence"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.2em auto;max-width:1280px;
color:#222;padding:0 1em}
h1{font-size:1.5em;margin:.2em 0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.4em}
.lead{font-size:1.02em;margin:.3em 0 .6em}
.note{background:#fff7e0;border-left:4px solid #e0a800;padding:.4em .8em;margin:.4em 0;font-size:.9em}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid figure{margin:0;max-width:100%}.grid img{max-width:100%;height:auto}
figure{margin:.5em 0}figcaption{font-size:.8em;color:#555}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}
td.l,th.l{text-align:left}tr:nth-child(even){background:#f7f7f7}
table.findings td{vertical-align:top}.v-diff{font-weight:bold}.v-none{color:#555}.v-few{color:#999;font-style:italic}
code,pre{background:#f3f3f3;padding:2px 4px;font-size:.85em}pre{padding:.6em;white-space:pre-wrap}
"""

e = html.escape


def _img(fig: Any) -> str:
    b64 = base64.b64encode(fig.png).decode("ascii")
    cap = fig.caption or fig.title
    return (f'<figure><img alt="{e(fig.title)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{e(cap)}</figcaption></figure>")


def html_table(frame: pd.DataFrame, left: int, cls: str = "") -> str:
    """``frame`` as an HTML table; the first ``left`` columns are text, the rest numbers."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{e(str(c))}</th>' for i, c in enumerate(frame.columns))
    body = []
    for row in frame.itertuples(index=False):
        cells = "".join(f'<td class="l">{e(str(v))}</td>' if i < left else f"<td>{e(format_value(v))}</td>"
                        for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _metrics_of(row: Any) -> list[str]:
    m = row.get("metrics") if isinstance(row, dict) else getattr(row, "metrics", None)
    if m is None or (isinstance(m, float) and m != m):
        return []
    items = m.replace(";", ",").split(",") if isinstance(m, str) else [str(x) for x in m]
    return [x.split(" (")[0].strip() for x in items if x.strip()]  # "w1_shift_unit (scale=raw)" -> the metric


def _num(v: Any) -> str:
    return format_value(v) if v is not None and not (isinstance(v, float) and v != v) else "-"


def _g(v: Any) -> str:
    """3 significant digits (findings are read, not recomputed; table.csv has every digit)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if f != f else f"{f:.3g}"


def verdict_words(verdict: str, a: str, b: str) -> str:
    """``"a < b"`` with the group names put in (other verdicts unchanged)."""
    return f"{a} {verdict[2]} {b}" if verdict in ("a > b", "a < b") else verdict


def finding_sentence(row: Any, a: str, b: str) -> str:
    """One finding in words and numbers, e.g. ``bn < nobn: bn 0.31 vs nobn 0.46, difference
    -0.145 (95% CI -0.173 to -0.122; 3 vs 3 runs)``."""
    verdict = str(row["verdict"])
    if verdict == "not measured":
        return "not measured in these runs"
    lo, hi = row.get("ci_low"), row.get("ci_high")
    ci = f"95% CI {_g(lo)} to {_g(hi)}" if _g(lo) != "-" and _g(hi) != "-" else "no interval"
    return (f"{verdict_words(verdict, a, b)}: {a} {_g(row.get('a_value'))} vs {b} {_g(row.get('b_value'))}, "
            f"difference {_g(row.get('difference'))} ({ci}; {_num(row.get('n_a'))} vs {_num(row.get('n_b'))} runs)")


def _verdict_class(v: str) -> str:
    return "v-diff" if v in ("a > b", "a < b") else "v-none" if v == "no clear difference" else "v-few"


def _findings_block(data: ReportData) -> list[str]:
    f = data.findings
    if f is None or f.empty:
        return []
    a, b = str(f.attrs.get("a", "a")), str(f.attrs.get("b", "b"))
    rows: list[str] = []
    for rec in f.to_dict("records"):
        v = str(rec["verdict"])
        shown = verdict_words(v, a, b)
        words = finding_sentence(rec, a, b).split(": ", 1)[-1]
        note = "" if pd.isna(rec.get("note")) else str(rec.get("note") or "")
        rows.append(f'<tr><td class="l"><a href="#q{len(rows)}">{e(str(rec["question"]))}</a></td>'
                    f'<td class="l {_verdict_class(v)}">{e(shown)}</td><td class="l">{e(words)}</td>'
                    f'<td class="l">{e(str(rec.get("claim") or ""))} <i>({e(str(rec.get("paper") or ""))})</i></td>'
                    f'<td class="l">{e(note)}</td></tr>')
    head = ("<tr><th class=\"l\">question</th><th class=\"l\">verdict</th><th class=\"l\">measured "
            f"(mean over runs; difference {e(a)} - {e(b)})</th><th class=\"l\">the paper's claim</th><th class=\"l\">note</th></tr>")
    return [f"<h2>Findings: {e(a)} vs {e(b)}</h2>",
            f'<table class="findings"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>',
            f"<p style=\"font-size:.8em;color:#555\">{e(_rule())}</p>"]


def _rule() -> str:
    from .._findings_spec import CONFIDENCE, MIN_RELATIVE_DIFFERENCE, MIN_RUNS

    return (f"Each run gives one value per question (its metric averaged over the question's layers). Verdict "
            f"'a > b' or 'a < b': the {CONFIDENCE:.0%} bootstrap interval over runs excludes 0 and the difference "
            f"is at least {MIN_RELATIVE_DIFFERENCE:.0%} of the larger mean; fewer than {MIN_RUNS} runs in a group: "
            "'too few runs'. Rules: repdiag/_findings_spec.py.")


def report_notes(data: ReportData) -> list[str]:
    """The sentences shown under the findings: alignment, metrics drawn once, metrics that do not
    apply to some groups, and the notes the evaluation left."""
    frame = data.matched()
    notes = [data.match.note] if data.match.note else []
    per_layer = frame[frame["layer"] != "(model)"]
    same = identical_metrics(per_layer, data.layer_metrics())
    for first in dict.fromkeys(same.values()):
        dups = [m for m, f in same.items() if f == first]
        why = "; ".join(f"{m}: {WHY_IDENTICAL[m]}" for m in dups if m in WHY_IDENTICAL)
        notes.append(f"{', '.join(dups)} equal{'s' * (len(dups) == 1)} {first} on every layer of these runs "
                     f"(within 0.001), so {'it is' if len(dups) == 1 else 'they are'} drawn once, under {first}."
                     + (f" Why: {why}." if why else ""))
    members = data.members()
    missing = missing_by_group(frame, list(dict.fromkeys(frame["metric"].dropna())),
                               {r: data.group_of(r) for r in data.runs})
    notes += not_applicable_note(missing, members)
    return notes + list(data.notes)


def _lead(data: ReportData) -> str:
    members = data.members()
    if all(len(v) == 1 and v[0] == k for k, v in members.items()):
        who = ", ".join(f"<b>{e(r)}</b>" for r in data.runs)
        return f"Runs: {who}. Data: {e(data.meta.get('data', '?'))}."
    parts = [f"<b>{e(g)}</b> ({len(rs)} run{'s' * (len(rs) > 1)}: {e(', '.join(rs))})" for g, rs in members.items()]
    return f"{len(data.runs)} runs in {len(members)} groups: {'; '.join(parts)}. Data: {e(data.meta.get('data', '?'))}."


def _alignment_block(data: ReportData) -> list[str]:
    al = data.match.alignment
    if al is None or al.empty:
        return []
    wide = al.pivot_table(index="key", columns="run", values="layer", aggfunc="first", sort=False)
    wide = wide[[r for r in data.runs if r in wide.columns]]
    cols: dict[str, list[str]] = {}
    for r in wide.columns:  # runs that hook the same layers share one column
        sig = tuple(wide[r].fillna("-"))
        cols.setdefault(str(sig), []).append(r)
    out = pd.DataFrame({"aligned as": wide.index.astype(str)})
    for runs in cols.values():
        out[", ".join(runs) if len(runs) <= 3 else f"{runs[0]} (+{len(runs) - 1} more)"] = \
            wide[runs[0]].fillna("-").to_numpy()
    how = al.groupby("key", sort=False)["how"].agg(lambda s: ", ".join(dict.fromkeys(map(str, s))))
    out["how"] = how.reindex(wide.index).to_numpy()
    return ["<h2>How layers were aligned</h2>", "<p>Each row is one aligned layer; the cells name each run's "
            "module.</p>", html_table(out, left=len(out.columns))]


def render_html(data: ReportData, figures: Sequence[Any]) -> str:
    """The whole report as one HTML document (no external resources)."""
    title = " vs ".join(data.members())
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>repdiag report: {e(title)}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>repdiag report</h1><p class=\"lead\">{_lead(data)}</p>"]
    parts += _findings_block(data)
    for note in report_notes(data):
        parts.append(f'<div class="note">{e(note)}</div>')
    used: set[int] = set()
    f = data.findings
    if f is not None and not f.empty:
        a, b = str(f.attrs.get("a", "a")), str(f.attrs.get("b", "b"))
        for i, rec in enumerate(f.to_dict("records")):
            ms = _metrics_of(rec)
            figs = [k for k, fig in enumerate(figures) if fig.metric in ms and k not in used]
            used.update(figs)
            claim = str(rec.get("claim") or "").rstrip(".")
            text = (f"{e(str(rec.get('paper') or ''))}: {e(claim)}. Here: "
                    f"{e(finding_sentence(rec, a, b))}. Metrics: {e(', '.join(ms) or '-')}.")
            body = "".join(_img(figures[k]) for k in figs) or "<p><i>No plot: these metrics were not recorded.</i></p>"
            parts.append(f"<h2 id=\"q{i}\">{e(str(rec['question']))}</h2><p>{text}</p><div class=\"grid\">{body}</div>")
    sections = [("depth", "Other metrics against depth", "Each metric per layer in forward order; a line per group "
                 "(mean over its runs, band from the lowest to the highest run)."),
                ("embedding", "Embeddings", "Layer samples in 2-D, coloured by class; one run per group."),
                ("gamma", "Normalization gamma", "Distribution of |gamma| per normalization layer (BatchNorm, LayerNorm, GroupNorm, RMSNorm; the table's module column says which)."),
                ("training", "Other metrics during training", "Metrics recorded while training, over steps.")]
    for key, name, text in sections:
        figs = [fig for k, fig in enumerate(figures) if fig.section == key and k not in used]
        if figs:
            parts.append(f"<h2>{e(name)}</h2><p>{e(text)}</p><div class=\"grid\">{''.join(map(_img, figs))}</div>")
    parts += _alignment_block(data)
    for caption, frame in group_summary(data):
        parts.append(f"<h2>{e(caption)}</h2><p>{len(frame)} rows; full data in <code>table.csv</code>.</p>")
        parts.append(html_table(frame, left=3))
    meta = "".join(f"<tr><th class=\"l\">{e(k)}</th><td class=\"l\"><code>{e(v)}</code></td></tr>"
                   for k, v in data.meta.items())
    if data.sources:
        meta += "".join(f"<tr><th class=\"l\">{e(r)}</th><td class=\"l\"><code>{e(s)}</code></td></tr>"
                        for r, s in data.sources.items())
    parts.append(f"<h2>Provenance</h2><table>{meta}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
