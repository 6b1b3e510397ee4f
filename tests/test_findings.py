"""findings() verdicts on synthetic tables whose differences are known: clear, none, too small,
one seed, not measured, raw vs scale-normalised disagreeing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import repdiag
from repdiag._findings_spec import QUESTIONS
from repdiag.tables import MODEL_LAYER, make_table

# per group: metric -> (where, per-seed values); the BN group also has a BatchNorm layer
SEEDS = 3


def build(values: dict[str, dict[tuple[str, tuple[tuple[str, object], ...]], list[float]]],
          seeds: int = SEEDS) -> list[pd.DataFrame]:
    tables = []
    for group, metrics in values.items():
        for s in range(seeds):
            rows: list[dict[str, object]] = []
            for (metric, where), per_seed in metrics.items():
                model_wide = metric in ("loss_range", "loss_range_rel", "grad_change", "grad_change_rel",
                                        "beta_smoothness")
                layers = [(MODEL_LAYER, "Net", -1)] if model_wide else (
                    ([("0", "Linear", 0), ("1", "BatchNorm1d", 1), ("3", "Linear", 3)] if group == "bn" else
                     [("0", "Linear", 0), ("2", "Linear", 2)]) if metric.startswith("ics") else (
                    [("1", "BatchNorm1d", 1)] if metric.startswith("gamma") else [("2", "ReLU", 2), ("5", "ReLU", 5)]
                    if group == "bn" else [("1", "ReLU", 1), ("3", "ReLU", 3)]))
                for lay, module, depth in layers:
                    value = per_seed[s] + (100.0 if module == "BatchNorm1d" and metric.startswith("ics") else 0.0)
                    rows.append({"run": f"{group}-s{s}", "step": 100, "layer": lay, "module": module, "depth": depth,
                                 "metric": metric, "value": value, "n": 64, **dict(where),
                                 "group": group, "seed": s})
                    # an earlier step: ignored for measurements of the trained net (last step), averaged in
                    # for those taken during training (the landscape's metrics here: mean = 2 v)
                    during = model_wide or metric.startswith("ics")
                    rows.append({**rows[-1], "step": 10, "value": 3 * value if during else 1e6})
            tables.append(make_table(rows))
    return tables


BN = {
    ("sparsity", ()): [0.61, 0.64, 0.59],
    ("silhouette_labels", (("standardize", False),)): [0.30, 0.26, 0.33],
    ("silhouette_labels", (("standardize", True),)): [0.31, 0.27, 0.30],
    ("loss_range", ()): [0.05, 0.07, 0.06],
    ("loss_range_rel", ()): [0.40, 0.50, 0.45],
    ("beta_smoothness", ()): [5.0, 7.0, 6.0],
    ("channels_off", (("threshold", 0.99),)): [0.100, 0.101, 0.102],
    ("gamma_below", (("threshold", 0.05),)): [0.2, 0.25, 0.3],
    ("ics_l2", ()): [0.5, 0.6, 0.7],  # on Linear 0, 3 (and BN 1, which the no-BN nets lack: value + 100)
}
NOBN = {
    ("sparsity", ()): [0.40, 0.43, 0.38],
    ("silhouette_labels", (("standardize", False),)): [0.31, 0.24, 0.32],
    ("silhouette_labels", (("standardize", True),)): [0.30, 0.28, 0.29],
    ("loss_range", ()): [2.0, 2.4, 2.2],
    ("loss_range_rel", ()): [0.45, 0.40, 0.50],
    ("beta_smoothness", ()): [6.0, 5.0, 7.0],
    ("channels_off", (("threshold", 0.99),)): [0.0980, 0.0985, 0.0990],  # consistent but tiny (2.5%)
    ("ics_l2", ()): [0.6, 0.7, 0.5],
}


def by_key(f: pd.DataFrame) -> pd.DataFrame:
    return f.set_index("key")


def test_verdicts_on_known_differences() -> None:
    f = by_key(repdiag.findings(build({"bn": BN, "nobn": NOBN}), a="bn", b="nobn"))
    assert list(f.index) == [q.key for q in QUESTIONS]
    assert f.loc["sparsity", "verdict"] == "a > b"
    assert f.loc["loss_range", "verdict"] == "a < b"
    assert f.loc["clustering", "verdict"] == "no clear difference"
    assert f.loc["beta_smoothness", "verdict"] == "no clear difference"  # same values, reshuffled
    assert f.loc["disabled_features", "verdict"] == "no clear difference"  # interval > 0 but only 2.5% apart
    assert f.loc["disabled_features", "ci_low"] > 0
    # covariate shift: only the layers both groups have (Linear 0 and 3 / 0 and 2), averaged over steps
    assert f.loc["covariate_shift", "layers"] == "0, 3"
    torch.testing.assert_close(f.loc["covariate_shift", "a_value"], 2 * 0.6)
    assert f.loc["covariate_shift", "verdict"] == "no clear difference"
    assert f.loc["covariate_shift", "note"].startswith("agrees with the paper (bn similar to or larger")
    for key in ("gradient_predictiveness", "em_shift"):
        assert f.loc[key, "verdict"] == "not measured"
    assert "loss_fn=" in f.loc["gradient_predictiveness", "note"] and "probe=" in f.loc["em_shift", "note"]
    # the numbers: per-run values (last step only), their means, and scipy's interval
    a, b = np.array(BN[("sparsity", ())]), np.array(NOBN[("sparsity", ())])
    torch.testing.assert_close(f.loc["sparsity", "a_value"], float(a.mean()))
    torch.testing.assert_close(f.loc["sparsity", "difference"], float(a.mean() - b.mean()))
    ref = stats.bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), method="percentile",
                          n_resamples=9999, random_state=0, vectorized=True).confidence_interval
    torch.testing.assert_close(f.loc["sparsity", "ci_low"], float(ref.low))
    torch.testing.assert_close(f.loc["sparsity", "ci_high"], float(ref.high))
    assert (f.loc["sparsity", "n_a"], f.loc["sparsity", "n_b"]) == (3, 3)
    torch.testing.assert_close(f.loc["loss_range", "a_value"], 2 * float(np.mean(BN[("loss_range", ())])))
    assert f.loc["sparsity", "layers"] == "2, 5"  # the BN run's names: layers aligned by role and order
    assert f.loc["clustering", "layers"] == "5"  # the deeper half
    assert f.loc["loss_range", "layers"] == MODEL_LAYER


def test_notes_raw_vs_normalised_paper_and_context() -> None:
    f = by_key(repdiag.findings(build({"bn": BN, "nobn": NOBN})))
    note = f.loc["loss_range", "note"]
    assert "raw and scale-normalised disagree" in note and "'no clear difference'" in note
    assert "agrees with the paper (bn < nobn)" in note
    assert f.loc["loss_range", "metrics"] == "loss_range, loss_range_rel"
    assert f.loc["clustering", "note"].endswith("differs from the paper, which reports bn > nobn")
    assert "gamma_below (threshold=0.05): bn 0.25 (no affine norm layers in nobn)" in f.loc["disabled_features", "note"]
    # swapping a and b flips the verdicts and keeps the paper comparison right
    g = by_key(repdiag.findings(build({"bn": BN, "nobn": NOBN}), a="nobn", b="bn"))
    assert g.loc["loss_range", "verdict"] == "a > b" and "agrees with the paper (bn < nobn)" in g.loc["loss_range", "note"]
    torch.testing.assert_close(g.loc["sparsity", "difference"], -f.loc["sparsity", "difference"])


def test_one_seed_gives_too_few_runs() -> None:
    f = by_key(repdiag.findings(build({"bn": BN, "nobn": NOBN}, seeds=1)))
    assert f.loc["sparsity", "verdict"] == "too few runs"
    assert f.loc[["sparsity", "loss_range"], ["ci_low", "ci_high"]].isna().all(axis=None)
    torch.testing.assert_close(f.loc["sparsity", "difference"], 0.61 - 0.40)
    assert "at least 2 per group" in f.loc["sparsity", "note"]
    assert f.loc["em_shift", "verdict"] == "not measured"


def test_unknown_group_is_refused() -> None:
    with pytest.raises(repdiag.ConfigError, match="b must be one of the groups"):
        repdiag.findings(build({"bn": BN, "nobn": NOBN}), a="bn", b="gn")
