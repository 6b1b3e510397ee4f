"""The report's reading aids: axis labels with meaning and direction, bands over seeds, legends
that cover no data, class legends, metrics drawn once, metrics that do not apply said once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from repdiag.metrics import available_metrics
from repdiag.report import LayerMatch, ReportData
from repdiag.report._axes import PROBE_AXES, better_of, meaning_of, y_label
from repdiag.report._html import render_html, report_notes
from repdiag.report._plots import depth_figure, embedding_figure, steps_figure
from repdiag.report._sections import identical_metrics, missing_by_group, not_applicable_note
from repdiag.report._summary import group_summary
from repdiag.tables import make_table


def _rows(run: str, metric: str, values: dict[str, float], step: int | None = None, **extra: object) -> list[dict]:
    return [{"run": run, "step": step, "layer": lay, "module": "ReLU", "depth": i, "metric": metric, "value": v,
             "n": 100, **extra} for i, (lay, v) in enumerate(values.items())]


def test_every_builtin_plugin_says_what_it_means_and_which_way_is_better() -> None:
    for name, m in available_metrics().items():
        assert m.meaning, f"{name} registers no meaning"
        assert m.better in ("higher", "lower", ""), name
        assert name not in PROBE_AXES, f"{name}: the plugin's own declaration must be the only one"
    assert better_of("silhouette_labels") == "higher" and better_of("davies_bouldin_labels") == "lower"
    assert better_of("sparsity") == "" and "no better side" in y_label("sparsity")
    assert y_label("ics_cos").endswith("(\u2191 higher is better)")  # Santurkar: cos(G, G') near 1 = no shift
    assert meaning_of("a_metric_nobody_declared") == "a_metric_nobody_declared"


def test_register_metric_rejects_a_bad_direction() -> None:
    from repdiag.metrics import register_metric
    from repdiag.metrics._registry import unregister_metric

    with pytest.raises(Exception, match="better must be 'higher', 'lower' or ''"):
        register_metric("x_bad_dir", better="up")(lambda d: [])
    unregister_metric("x_bad_dir")


def test_identical_metrics_merges_only_equal_readings() -> None:
    layers = {"a": 0.5, "b": 0.25}
    t = make_table(_rows("r", "sample_sparsity_mean", layers) + _rows("r", "sparsity", {"a": 0.5004, "b": 0.25})
                   + _rows("r", "channel_sparsity_maps", {"a": 0.5, "b": 0.3})
                   + _rows("r", "gamma_below", layers, threshold=0.1))
    same = identical_metrics(t, ["sample_sparsity_mean", "sparsity", "channel_sparsity_maps", "gamma_below"])
    assert same == {"sample_sparsity_mean": "sparsity"}  # the plain reading is kept, within 0.001
    off = make_table(_rows("r", "sparsity", layers) + _rows("r", "sample_sparsity_mean", {"a": 0.5, "b": 0.2515}))
    assert identical_metrics(off, ["sparsity", "sample_sparsity_mean"]) == {}  # 0.0015 apart: both drawn
    nan = make_table(_rows("r", "sparsity", layers) + _rows("r", "sample_sparsity_mean", {"a": 0.5, "b": np.nan}))
    assert identical_metrics(nan, ["sparsity", "sample_sparsity_mean"]) == {}
    fewer = make_table(_rows("r", "sparsity", layers) + _rows("r", "sample_sparsity_mean", {"a": 0.5}))
    assert identical_metrics(fewer, ["sparsity", "sample_sparsity_mean"]) == {}


def _two_groups() -> ReportData:
    rows = []
    for g, base in (("bn", 0.2), ("nobn", 0.5)):
        for s in range(3):
            run = f"{g}-s{s}"
            rows += _rows(run, "sparsity", {"l1": base + 0.01 * s, "l2": base + 0.1 + 0.01 * s})
            if g == "bn":
                rows += [{**r, "module": "BatchNorm2d"} for r in _rows(run, "gamma_mean", {"bn1": 1.0 + s})]
    table = make_table(rows)
    runs = list(dict.fromkeys(table["run"]))
    return ReportData(runs, table, LayerMatch("name", ["l1", "bn1", "l2"]),
                      groups={r: r.split("-")[0] for r in runs})


def test_gamma_of_runs_without_bn_is_said_once_not_shown_as_nan() -> None:
    data = _two_groups()
    missing = missing_by_group(data.table, ["sparsity", "gamma_mean"], {r: data.group_of(r) for r in data.runs})
    assert missing == {"gamma_mean": ["nobn"]}
    notes = not_applicable_note(missing, data.members())
    assert len(notes) == 1 and notes[0].startswith("nobn (3 runs): gamma_mean") and "BatchNorm" in notes[0]
    tables = dict(group_summary(data))
    main, only_bn = tables["Summary table (mean ± sd over each group's runs)"], tables["Measured only in bn"]
    assert list(main.columns) == ["metric", "layer", "setting", "bn", "nobn"]
    assert list(only_bn.columns) == ["metric", "layer", "setting", "bn"]  # no nobn column of nan cells
    want = np.array([0.2, 0.21, 0.22])
    assert main.loc[main["layer"] == "l1", "bn"].item() == f"{want.mean():.4g} ± {want.std(ddof=1):.4g}"
    assert only_bn["bn"].item() == f"2 ± {np.std([1.0, 2.0, 3.0], ddof=1):.4g}"
    html = render_html(data, [])
    assert html.count("gamma_mean not shown") == 1 and ">nan<" not in html


def test_depth_plot_has_axis_meaning_bands_over_seeds_and_a_legend_off_the_axes() -> None:
    data = _two_groups()
    part = data.table[data.table["metric"] == "sparsity"]
    fig = depth_figure(part, "sparsity", data.runs, {"l1": 0, "l2": 1}, {r: data.group_of(r) for r in data.runs})
    ax = fig.axes[0]
    assert ax.get_ylabel() == y_label("sparsity")
    lines = ax.get_lines()
    assert len(lines) == 2  # one line per group
    torch.testing.assert_close(torch.tensor(lines[0].get_ydata(), dtype=torch.float64),
                               torch.tensor([0.21, 0.31], dtype=torch.float64))  # mean over the 3 seeds
    bands = [c for c in ax.collections if c.get_paths()]
    assert len(bands) == 2  # min-max band per group
    lo_hi = bands[0].get_paths()[0].vertices[:, 1]
    torch.testing.assert_close(torch.tensor([lo_hi.min(), lo_hi.max()], dtype=torch.float64),
                               torch.tensor([0.2, 0.32], dtype=torch.float64))
    assert ax.get_legend() is None and len(fig.legends) == 1  # the legend sits outside the axes
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["bn (3 runs)", "nobn (3 runs)"]
    assert "mean over a group's runs" in fig.legends[0].get_title().get_text()
    fig.canvas.draw()
    box, axbox = fig.legends[0].get_window_extent(), ax.get_window_extent()
    assert box.y1 <= axbox.y0  # below the axes: it covers no line


def test_steps_plot_has_a_panel_per_layer_and_bands() -> None:
    rows = []
    for g, base in (("bn", 1.0), ("nobn", 2.0)):
        for s in range(2):
            for step in (0, 10, 20):
                rows += _rows(f"{g}-s{s}", "w1_shift", {"l1": base + s + step, "l2": base}, step=step)
    t = make_table(rows)
    runs = list(dict.fromkeys(t["run"]))
    fig = steps_figure(t, "w1_shift", runs, {"l1": 0, "l2": 1}, {r: r.split("-")[0] for r in runs})
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["l1 ReLU", "l2 ReLU"]
    assert panels[0].get_ylabel() == y_label("w1_shift") and "lower is better" in panels[0].get_ylabel()
    torch.testing.assert_close(torch.tensor(panels[0].get_lines()[0].get_ydata(), dtype=torch.float64),
                               torch.tensor([1.5, 11.5, 21.5], dtype=torch.float64))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["bn (2 runs)", "nobn (2 runs)"]


def test_embedding_panel_has_a_class_legend() -> None:
    rng = np.random.default_rng(0)
    lab = np.array([0, 1, 2, 3, -1] * 8)
    points = {("bn", "l1"): (rng.normal(size=(40, 2)), lab), ("nobn", "l1"): (rng.normal(size=(40, 2)), lab)}
    fig = embedding_figure(points, ["bn", "nobn"], ["l1"], "umap")
    (legend,) = fig.legends
    assert legend.get_title().get_text() == "class"
    assert [t.get_text() for t in legend.get_texts()] == ["0", "1", "2", "3", "no label"]


def test_sparsity_readings_equal_on_mlps_are_noted_with_the_reason() -> None:
    layers = {"fc1": 0.4, "fc2": 0.6}
    t = make_table(_rows("mlp", "sparsity", layers) + _rows("mlp", "channel_sparsity_maps", layers)
                   + _rows("mlp", "sample_sparsity_mean", {"fc1": 0.4002, "fc2": 0.6}))
    data = ReportData(["mlp"], t, LayerMatch("name", ["fc1", "fc2"]))
    (note,) = report_notes(data)
    assert note.startswith("channel_sparsity_maps, sample_sparsity_mean equal sparsity on every layer")
    assert "every channel map is a single entry" in note


def test_doctests_of_the_report_modules() -> None:
    import doctest

    from repdiag.report import _axes, _match, _plots, _sections

    for mod in (_axes, _match, _plots, _sections):
        assert doctest.testmod(mod, raise_on_error=False).failed == 0, mod.__name__


def test_figures_drawn_in_spawned_processes_are_the_serial_bytes() -> None:
    """A report's figures spread over a spawned worker and this process: each drawn once, in the
    plan's order, byte for byte what one process draws; fewer than 8 figures stay here."""
    from repdiag.report import make_figures, plan_figures
    from repdiag.report._write import figure_workers

    rows = []
    for g, base in (("bn", 0.2), ("nobn", 0.5)):
        for s in range(2):
            for k, m in enumerate(("sparsity", "silhouette_labels", "kmeans_nmi", "davies_bouldin_labels",
                                   "calinski_harabasz_labels", "centroid_accuracy", "effective_rank",
                                   "participation_ratio")):
                rows += _rows(f"{g}-s{s}", m, {"l1": base + 0.01 * s + k, "l2": base + 0.1 + 0.02 * s + k})
    table = make_table(rows)
    runs = list(dict.fromkeys(table["run"]))
    data = ReportData(runs, table, LayerMatch("name", ["l1", "l2"]), groups={r: r.split("-")[0] for r in runs})
    plan = plan_figures(data)
    assert len(plan) >= 8 and figure_workers(len(plan), cores=2) == 2 and figure_workers(7, cores=16) == 1
    import multiprocessing

    titles: list[str] = []
    alive: list[int] = []

    def progress(title: str) -> None:
        titles.append(title)
        alive.append(len(multiprocessing.active_children()))

    serial = make_figures(data, plan=plan, workers=1)
    spread = make_figures(data, progress, plan=plan, workers=2)
    assert sorted(titles) == sorted(p.title for p in plan)  # progress once per figure
    assert max(alive) >= 1  # a spawned worker was there to draw
    assert [f.name for f in spread] == [p.name for p in plan]
    assert [f.png for f in spread] == [f.png for f in serial]
