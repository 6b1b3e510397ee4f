"""Sparsity, clustering and similarity plugins: through attach into the tidy table."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
import torch
from torch import nn
from torch.testing import assert_close

import repdiag
from repdiag import NonFiniteError, RepdiagWarning
from repdiag.functional import (
    channel_sparsity,
    davies_bouldin_score,
    kmeans,
    normalized_mutual_info,
    purity,
    sample_sparsity,
    silhouette_score,
    standardize,
)
from repdiag.metrics import available_metrics, default_metrics, get_metric
from repdiag.metrics._plugin_similarity import cka_between_runs
from repdiag.tables import validate_table

MINE = ["channel_sparsity_entries", "channel_sparsity_maps", "sample_sparsity_mean", "sample_sparsity_quantile",
        "silhouette_labels", "davies_bouldin_labels", "calinski_harabasz_labels", "kmeans_purity", "kmeans_nmi",
        "centroid_accuracy", "effective_rank", "participation_ratio", "cka_adjacent"]
DEFAULTS = ["channel_sparsity_maps", "sample_sparsity_mean", "silhouette_labels", "davies_bouldin_labels",
            "calinski_harabasz_labels", "kmeans_purity", "kmeans_nmi", "centroid_accuracy"]


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 16), nn.ReLU())


def _feed(model: nn.Module, rec: repdiag.Recorder, n_batches: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xs = []
    with torch.no_grad():
        for _ in range(n_batches):
            x = torch.randn(40, 1, 8, 8, generator=g)
            y = torch.arange(40) % 4
            x[:, 0, 0, 0] += 3 * y  # make the classes separable a little
            model(x)
            rec.step(labels=y)
            xs.append(x)
    return xs


def test_registered_with_declared_defaults() -> None:
    reg = available_metrics()
    for name in MINE:
        assert name in reg, name
    assert set(DEFAULTS) <= set(default_metrics())
    assert not {"effective_rank", "participation_ratio", "cka_adjacent", "sample_sparsity_quantile",
                "channel_sparsity_entries"} & set(default_metrics())
    assert get_metric("silhouette_labels").needs == frozenset({"samples", "labels", "groups", "distance_sums"})
    assert get_metric("silhouette_labels").shares == frozenset({"groups", "distance_sums"})
    assert get_metric("kmeans_nmi").shares == frozenset({"groups", "kmeans"})
    assert get_metric("channel_sparsity_maps").needs == frozenset({"stats"})


def test_every_registered_plugin_through_the_table_schema() -> None:
    model = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepdiagWarning)  # other plugins may be skipped for want of inputs
        rec = repdiag.attach(model, metrics="all", run="r", max_samples=100)
        _feed(model, rec)
        table = rec.table()
    validate_table(table)
    produced = set(table["metric"])
    skipped = {name for name, _, _ in rec.skipped}
    # every plugin ran and emitted rows under its name (or names it prefixes: gamma -> gamma_mean)
    for name in available_metrics():
        assert name in produced or name in skipped or any(m.startswith(name + "_") for m in produced), name
    assert not skipped & set(MINE)
    for name in MINE:
        assert name in produced, name
    mine = table[table["metric"].isin(MINE)]
    assert mine["value"].notna().all()
    assert (table.loc[table["metric"] == "silhouette_labels", "standardize"] == False).all()  # noqa: E712
    rec.detach()


def test_values_equal_kernels_on_the_buffers() -> None:
    model = _net()
    rec = repdiag.attach(model, metrics=MINE, run="r", max_samples=100, metric_options={"*": {"standardize": True}})
    xs = _feed(model, rec)
    table = rec.table()
    value = table.set_index(["layer", "metric"])["value"]
    x, y = rec.samples("5")
    rec.detach()
    xstd = standardize(x)
    assert (table.loc[table["metric"] == "silhouette_labels", "standardize"] == True).all()  # noqa: E712
    assert value[("5", "silhouette_labels")] == pytest.approx(float(silhouette_score(xstd, y)), rel=1e-6)
    assert value[("5", "davies_bouldin_labels")] == pytest.approx(float(davies_bouldin_score(xstd, y)), rel=1e-6)
    km = kmeans(xstd, 4, n_init=3, seed=0)
    assert value[("5", "kmeans_purity")] == pytest.approx(float(purity(y, km.labels)), rel=1e-9)
    assert value[("5", "kmeans_nmi")] == pytest.approx(float(normalized_mutual_info(y, km.labels)), rel=1e-9)
    # stats-based sparsity sees the full conv maps of every sample, not the buffered means
    with torch.no_grad():
        maps = torch.cat([model[2](model[1](model[0](xb))) for xb in xs]).double()
    assert value[("2", "channel_sparsity_maps")] == pytest.approx(
        float(channel_sparsity(maps, reading="maps").mean()), abs=1e-12)
    assert value[("2", "channel_sparsity_entries")] == pytest.approx(float(channel_sparsity(maps).mean()), abs=1e-12)
    assert value[("2", "sample_sparsity_mean")] == pytest.approx(float(sample_sparsity(maps).mean()), abs=5e-4)
    q = table[(table["layer"] == "2") & (table["metric"] == "sample_sparsity_quantile")]
    assert q["quantile"].tolist() == [0.1, 0.5, 0.9]
    want = torch.quantile(sample_sparsity(maps), torch.tensor([0.1, 0.5, 0.9], dtype=maps.dtype),
                          interpolation="lower")
    assert_close(torch.tensor(q["value"].tolist()), want.double().to(torch.float64), atol=1.5e-3, rtol=0, check_dtype=False)
    cka = table[table["metric"] == "cka_adjacent"]
    assert cka["layer"].tolist() == ["5"] and cka["reference"].tolist() == ["2"]


def test_undefined_case_warns_naming_the_layer() -> None:
    model = _net()
    rec = repdiag.attach(model, metrics=["silhouette_labels", "kmeans_nmi"], run="r")
    with torch.no_grad():
        model(torch.randn(20, 1, 8, 8))
    rec.step(labels=torch.zeros(20, dtype=torch.int64))  # one class
    with pytest.warns(RepdiagWarning) as caught:
        table = rec.table()
    messages = [str(w.message) for w in caught]
    assert any("silhouette_labels of layer '2'" in m and "2 are needed" in m for m in messages), messages
    assert any("kmeans_nmi of layer '5'" in m for m in messages), messages
    assert table.loc[table["metric"] == "silhouette_labels", "value"].isna().all()
    assert table.loc[table["metric"] == "kmeans_nmi", "value"].isna().all()
    rec.detach()


def test_nonfinite_samples_raise_naming_the_layer() -> None:
    model = _net()
    rec = repdiag.attach(model, layers=["5"], metrics=["silhouette_labels"], run="r")
    with torch.no_grad():
        model[4].weight[0, 0] = float("nan")
        model(torch.randn(20, 1, 8, 8))
    rec.step(labels=torch.arange(20) % 2)
    with pytest.raises(NonFiniteError, match=r"layer '5'"):
        rec.table()
    rec.detach()


def test_missing_labels_skip_with_reason() -> None:
    model = _net()
    rec = repdiag.attach(model, metrics=["silhouette_labels", "channel_sparsity_maps"], run="r")
    with torch.no_grad():
        model(torch.randn(20, 1, 8, 8))
    rec.step()
    with pytest.warns(RepdiagWarning, match="no labels"):
        table = rec.table()
    assert set(table["metric"]) == {"channel_sparsity_maps"}
    rec.detach()


def test_cka_between_runs_of_the_same_model_is_one() -> None:
    model_a, model_b = _net(), _net()
    rec_a = repdiag.attach(model_a, metrics=None, run="a", max_samples=50)
    rec_b = repdiag.attach(model_b, metrics=None, run="b", max_samples=50)
    _feed(model_a, rec_a)
    _feed(model_b, rec_b)
    table = cka_between_runs(rec_a, rec_b)
    validate_table(table)
    assert table["layer"].tolist() == ["2", "5"] and (table["other_run"] == "b").all()
    assert_close(torch.tensor(table["value"].tolist()), torch.ones(2, dtype=torch.float32))
    assert isinstance(table, pd.DataFrame)
