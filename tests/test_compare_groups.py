"""compare(tables, by="group"): per group mean, spread and runs; the difference of two groups with
a bootstrap interval that agrees with scipy.stats.bootstrap called directly, and Hedges' g."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import repdiag
from repdiag.tables import make_table


def runs_table(values: dict[str, dict[int, list[float]]], layers: tuple[str, ...] = ("0", "1")) -> list[pd.DataFrame]:
    """One table per (group, seed): metric "m" on each layer, value values[group][seed][layer index]."""
    out = []
    for group, seeds in values.items():
        for seed, per_layer in seeds.items():
            rows = [{"run": f"{group}-s{seed}", "step": 10, "layer": lay, "module": "ReLU", "depth": i, "metric": "m",
                     "value": v, "n": 100, "group": group, "seed": seed} for i, (lay, v) in enumerate(zip(layers, per_layer))]
            out.append(make_table(rows))
    return out


A = {0: [0.61, 0.20], 1: [0.64, 0.22], 2: [0.58, 0.25], 3: [0.66, 0.21]}
B = {0: [0.41, 0.18], 1: [0.45, 0.26], 2: [0.39, 0.21]}


def test_group_means_spreads_and_counts() -> None:
    res = repdiag.compare(runs_table({"bn": A, "nobn": B}), by="group")
    row = res.xs("0", level="layer").iloc[0]
    a0, b0 = np.array([v[0] for v in A.values()]), np.array([v[0] for v in B.values()])
    torch.testing.assert_close(row["bn_mean"], float(a0.mean()))
    torch.testing.assert_close(row["bn_std"], float(a0.std(ddof=1)))
    torch.testing.assert_close(row["nobn_std"], float(b0.std(ddof=1)))
    assert (row["bn_runs"], row["nobn_runs"]) == (4, 3)
    torch.testing.assert_close(row["diff"], float(a0.mean() - b0.mean()))
    assert res.attrs["a"] == "bn" and res.attrs["b"] == "nobn"
    assert res.attrs["groups"] == {"bn": [f"bn-s{i}" for i in range(4)], "nobn": [f"nobn-s{i}" for i in range(3)]}


@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_interval_agrees_with_scipy_bootstrap(confidence: float) -> None:
    res = repdiag.compare(runs_table({"bn": A, "nobn": B}), by="group", confidence=confidence, random_state=7)
    for i, layer in enumerate(("0", "1")):
        a, b = np.array([v[i] for v in A.values()]), np.array([v[i] for v in B.values()])
        ref = stats.bootstrap((a, b), lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                              n_resamples=9999, confidence_level=confidence, method="percentile", paired=False,
                              vectorized=True, random_state=7)
        row = res.xs(layer, level="layer").iloc[0]
        torch.testing.assert_close(row["ci_low"], float(ref.confidence_interval.low))
        torch.testing.assert_close(row["ci_high"], float(ref.confidence_interval.high))
        assert row["ci_low"] <= row["diff"] <= row["ci_high"]
        assert row["note"] == ""
    # layer 0 differs clearly (interval excludes 0), layer 1 does not
    assert res.xs("0", level="layer")["ci_low"].iloc[0] > 0
    r1 = res.xs("1", level="layer").iloc[0]
    assert r1["ci_low"] < 0 < r1["ci_high"]


def test_effect_size_is_hedges_g_worked_by_hand() -> None:
    res = repdiag.compare(runs_table({"a": {0: [1.0], 1: [2.0], 2: [3.0]}, "b": {0: [0.0], 1: [1.0], 2: [2.0]}},
                                     layers=("0",)), by="group")
    # means 2 and 1, both sample variances 1, pooled sd 1, d = 1, J = 1 - 3 / (4 * 6 - 9) = 0.8
    torch.testing.assert_close(res["effect_size"].iloc[0], 0.8)


def test_one_run_per_group_says_no_interval() -> None:
    res = repdiag.compare(runs_table({"bn": {0: [0.6, 0.2]}, "nobn": {0: [0.4, 0.3]}}), by="group")
    assert res["note"].tolist() == ["one run per group: no interval"] * 2
    assert res[["ci_low", "ci_high", "effect_size", "bn_std"]].isna().all(axis=None)
    torch.testing.assert_close(res["diff"].to_numpy().copy(), np.array([0.6 - 0.4, 0.2 - 0.3]))


def test_group_order_and_choice() -> None:
    tables = runs_table({"x": A, "bn": A, "nobn": B})
    res = repdiag.compare(tables, by="group", a="nobn", b="bn")
    assert [c for c in res.columns if c.endswith("_runs")] == ["x_runs", "bn_runs", "nobn_runs"]
    assert res.attrs["a"] == "nobn" and res.attrs["b"] == "bn"
    assert (res["diff"] < 0).iloc[0]
    with pytest.raises(repdiag.ConfigError, match="a must be one of the groups"):
        repdiag.compare(tables, by="group", a="gn")


def test_runs_without_a_group_are_refused() -> None:
    t = make_table([{"run": "r", "layer": "0", "module": "ReLU", "depth": 0, "metric": "m", "value": 1.0}])
    with pytest.raises(repdiag.tables.TableError, match="needs a group for every run"):
        repdiag.compare([t], by="group")


def test_groups_from_recorders_end_to_end() -> None:
    tables = []
    for group, bn in (("bn", True), ("nobn", False)):
        for seed in range(2):
            torch.manual_seed(seed)
            layers: list[torch.nn.Module] = [torch.nn.Linear(8, 16)] + ([torch.nn.BatchNorm1d(16)] if bn else [])
            model = torch.nn.Sequential(*layers, torch.nn.ReLU(), torch.nn.Linear(16, 3))
            with repdiag.attach(model, run=f"{group}-s{seed}", group=group, seed=seed, metrics=["sparsity"]) as rec:
                model(torch.randn(64, 8))
                rec.step()
                tables.append(rec.table())
    with pytest.warns(repdiag.RepdiagWarning, match="differently"):
        res = repdiag.compare(tables, by="group")
    row = res.xs("sparsity", level="metric").iloc[0]
    assert (row["bn_runs"], row["nobn_runs"]) == (2, 2)
    assert not math.isnan(row["ci_low"]) and row["note"] == ""


def test_concat_keeps_empty_string_columns_and_still_refuses_nested_cells() -> None:
    """`repdiag demo --probes off` stacked an empty slice of Parquet rows (a pyarrow string column): the nested-value
    check reduced a string-dtype result and raised TypeError."""
    t = make_table([{"run": "r", "layer": "0", "module": "ReLU", "depth": 0, "metric": "m", "value": 1.0,
                     "setting": "a"}])
    empty = t.iloc[:0].copy()
    empty["setting"] = empty["setting"].astype("string[pyarrow]")  # as read back from Parquet
    out = repdiag.tables.concat_tables([t, empty])
    assert len(out) == 1 and out["setting"].tolist() == ["a"]
    bad = t.copy()
    bad["setting"] = pd.Series([[1, 2]], dtype=object)
    with pytest.raises(repdiag.tables.TableError, match="nested values"):
        repdiag.tables.concat_tables([bad])
