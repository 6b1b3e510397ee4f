"""Reports: side-by-side HTML / markdown of tidy tables, with plots (matplotlib Agg, embedded as
base64 PNG), 2-D embeddings (UMAP or PCA) and layer matching across runs. Reads tables and
arrays; computes no metric."""

from ._embedding import (EMBEDDINGS, available_cores, embed, embed_many, embed_workers, enable_numba_cache, load_umap,
                         numba_cache_dir, umap_cache_warm, warm_up_umap)
from ._match import LayerMatch, layer_positions, match_tables
from ._summary import ReportData, format_value, group_summary, summary_frame
from ._html import render_html
from ._write import Figure, PlannedFigure, make_figures, plan_figures, render_markdown, write_report

__all__ = [
    "EMBEDDINGS",
    "Figure",
    "PlannedFigure",
    "LayerMatch",
    "ReportData",
    "available_cores",
    "embed",
    "embed_many",
    "embed_workers",
    "enable_numba_cache",
    "format_value",
    "group_summary",
    "layer_positions",
    "load_umap",
    "make_figures",
    "match_tables",
    "numba_cache_dir",
    "plan_figures",
    "render_html",
    "render_markdown",
    "summary_frame",
    "umap_cache_warm",
    "warm_up_umap",
    "write_report",
]
