"""The per-call plan: each shared piece once per layer, the same figures as each plugin on its own,
k-means warm starts kept by the recorder, third-party plugins of the old shape unaffected."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import repdiag
from repdiag import ConfigError
from repdiag.functional import kmeans, normalized_mutual_info
from repdiag.functional._kmeans import kmeans_stack
from repdiag.metrics import LayerData, default_metrics, get_metric, register_metric, unregister_metric
from repdiag.metrics import _plan

from .conftest import DEVICES


def _mlp(width: int = 24, depth: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    mods: list[nn.Module] = []
    d = 8
    for _ in range(depth):
        mods += [nn.Linear(d, width), nn.ReLU()]
        d = width
    return nn.Sequential(*mods)


def _recorder(model: nn.Module, device: str = "cpu", unlabelled: bool = False, **kw: Any) -> repdiag.Recorder:
    model.to(device)
    rec = repdiag.attach(model, layers=[str(2 * i + 1) for i in range(len(model) // 2)], max_samples=300, **kw)
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(4, 8, generator=g) * 2
    with torch.no_grad():
        for b in range(4):
            y = torch.randint(0, 4, (64,), generator=g)
            model((centres[y] + torch.randn(64, 8, generator=g)).to(device))
            rec.step(labels=None if unlabelled and b == 3 else y)
    return rec


def _values(table: Any) -> dict[tuple[str, str], float]:
    return {(r.layer, r.metric): float(r.value) for r in table.itertuples()}


def _counting(monkeypatch: pytest.MonkeyPatch, name: str, counts: dict[str, int],
              weight: Callable[..., int] = lambda *a, **k: 1) -> None:
    real = getattr(_plan, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        counts[name] = counts.get(name, 0) + weight(*args, **kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(_plan, name, spy)


@pytest.mark.parametrize("standardize", [False, True])
def test_each_shared_piece_once_per_layer(monkeypatch: pytest.MonkeyPatch, standardize: bool) -> None:
    counts: dict[str, int] = {}
    for name in ("cluster_distance_sums", "centroids", "standardize", "layer_samples"):
        _counting(monkeypatch, name, counts)
    _counting(monkeypatch, "cluster_distance_sums_many", counts, weight=lambda items: 100 + len(items))
    _counting(monkeypatch, "kmeans_stack", counts, weight=lambda x, *a, **k: 100 + x.shape[0])  # calls, layers
    rec = _recorder(_mlp(), metric_options={"*": {"standardize": standardize}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = rec.table()
    assert set(table["metric"]) >= {"silhouette_labels", "kmeans_nmi", "kmeans_purity", "calinski_harabasz_labels"}
    assert counts["cluster_distance_sums_many"] == 100 + 3  # silhouette: one pass per layer, all layers at once
    assert counts.get("cluster_distance_sums", 0) == 0  # none left for the plugin to compute
    assert counts["centroids"] == 3  # Davies-Bouldin and Calinski-Harabasz share them
    assert counts["layer_samples"] == 3  # one finite check per layer
    assert counts.get("standardize", 0) == (3 if standardize else 0)
    assert counts["kmeans_stack"] == 100 + 3  # purity and NMI share one k-means, three equal layers batched


def _per_plugin(rec: repdiag.Recorder) -> dict[tuple[str, str], float]:
    """Each default layer metric called on its own (no plan) on each layer, labelled rows only."""
    out: dict[tuple[str, str], float] = {}
    for d in rec.layer_data():
        for name in default_metrics():
            m = get_metric(name)
            if m.scope != "layer":
                continue
            dd = d
            if "labels" in m.needs:
                known = d.labels >= 0
                dd = LayerData(d.layer, d.module, d.depth, d.samples[known], d.labels[known], d.stats)
            for r in m(dd, **{**rec.metric_options.get("*", {}), **rec.metric_options.get(name, {})}):
                out[(d.layer, r.get("metric", name))] = float(r["value"])
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("unlabelled", [False, True])
def test_plan_equals_each_plugin_on_its_own(device: str, unlabelled: bool) -> None:
    rec = _recorder(_mlp(), device, unlabelled=unlabelled)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = _values(rec.table())
        want = _per_plugin(rec)
    assert want and set(want) <= set(got)
    for key, v in want.items():
        assert_close(torch.tensor(got[key]), torch.tensor(v), rtol=1e-12, atol=0, msg=str(key))


def test_kmeans_stack_equals_each_set_alone() -> None:
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(3, 200, 5, generator=g) + torch.randint(0, 3, (3, 200, 1), generator=g) * 2.0
    res = kmeans_stack(xs, 4, n_init=3, seeds=[0, 1, 2])
    for i in range(3):
        one = kmeans(xs[i], 4, n_init=3, seed=i)
        torch.testing.assert_close(res.labels[i], one.labels)
        assert_close(res.inertia[i], one.inertia, rtol=1e-6, atol=0)
        assert_close(res.centers[i], one.centers, rtol=1e-5, atol=1e-6)


def test_later_tables_warm_start_from_the_recorders_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _recorder(_mlp(), metrics=["kmeans_nmi"])
    other = _recorder(_mlp(), metrics=["kmeans_nmi"])
    first = _values(rec.table())
    other.table()
    x, y = rec.samples("5")
    assert first[("5", "kmeans_nmi")] == float(normalized_mutual_info(y, kmeans(x, 4, n_init=3, seed=0).labels))
    memory = rec._plan_memory  # type: ignore[attr-defined]
    key = (4, 3, 0, False, 24, torch.float32, x.device)
    prev = memory.get("5", key)
    assert prev is not None and other._plan_memory is not memory  # type: ignore[attr-defined]
    inits: list[Any] = []
    real = _plan.kmeans_stack
    monkeypatch.setattr(_plan, "kmeans_stack", lambda *a, **k: inits.append(k.get("init")) or real(*a, **k))
    second = _values(rec.table())
    assert inits and all(i is not None and i.shape[1] == 2 for i in inits)  # previous centres, class means
    cent = torch.stack([x[y == c].mean(dim=0) for c in range(4)])
    runs = [kmeans(x, 4, init=prev), kmeans(x, 4, init=cent)]
    best = min(runs, key=lambda r: float(r.inertia))
    assert_close(torch.tensor(second[("5", "kmeans_nmi")], dtype=torch.float64),
                 normalized_mutual_info(y, best.labels), rtol=1e-12, atol=0)
    assert float(best.inertia) <= float(kmeans(x, 4, n_init=3, seed=0).inertia) * (1 + 1e-6)
    memory.clear()
    assert _values(rec.table())[("5", "kmeans_nmi")] == first[("5", "kmeans_nmi")]


def test_old_style_third_party_plugins_still_work() -> None:
    seen: list[Any] = []

    def plain(data: LayerData) -> Iterator[dict[str, Any]]:
        seen.append(data.plan)
        yield {"value": float(data.samples.mean()), "n": data.samples.shape[0]}

    def loose(data: LayerData, **options: Any) -> Iterator[dict[str, Any]]:
        yield {"value": float(options.get("scale", 1.0)), "n": 1}

    register_metric("t_plain", needs=("samples",))(plain)
    register_metric("t_loose", needs=("samples",))(loose)
    try:
        rec = _recorder(_mlp(), metrics=["t_plain", "t_loose"], metric_options={"t_loose": {"scale": 2.5}})
        v = _values(rec.table())
        x, _ = rec.samples("1")
        assert_close(torch.tensor(v[("1", "t_plain")], dtype=torch.float64), x.mean().double(), rtol=1e-7, atol=0)
        assert v[("3", "t_loose")] == 2.5
        assert all(isinstance(p, _plan.LayerPlan) for p in seen)
    finally:
        unregister_metric("t_plain")
        unregister_metric("t_loose")


def test_shared_pieces_are_valid_needs_and_unknown_ones_are_not() -> None:
    register_metric("t_shared", needs=("samples", "labels", "kmeans"))(lambda data: iter(()))
    try:
        assert get_metric("t_shared").shares == frozenset({"kmeans"})
    finally:
        unregister_metric("t_shared")
    with pytest.raises(ConfigError, match="shared pieces"):
        register_metric("t_bad", needs=("samples", "distances"))


@pytest.mark.parametrize("threads", [1, 2])
def test_distance_sums_of_many_layers_equal_each_alone(threads: int) -> None:
    """The layers' distance sums in parallel (one thread each) equal the serial calls, with layers
    of other dtypes and sizes in the mix."""
    from repdiag.functional._clustering import cluster_distance_sums, cluster_distance_sums_many, host_workers

    g = torch.Generator().manual_seed(3)
    items = []
    for n, d, dt in [(1500, 8, torch.float32), (700, 33, torch.float64), (1500, 8, torch.float32), (50, 3, torch.float32)]:
        lab = torch.randint(0, 5, (n,), generator=g)
        items.append((torch.randn(n, d, generator=g, dtype=dt) + lab[:, None].to(dt), nn.functional.one_hot(lab, 5)))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert host_workers(len(items)) <= threads
        got = cluster_distance_sums_many(items)
    finally:
        torch.set_num_threads(before)
    for (x, oh), s in zip(items, got):
        assert s.dtype == torch.float64 and s.shape == (x.shape[0], 5)
        tol = 1e-6 if x.dtype == torch.float32 else 1e-12  # one BLAS thread or two: float32 products may round apart
        assert_close(s, cluster_distance_sums(x, oh), rtol=tol, atol=tol)


@pytest.mark.parametrize("workers", [2, 3])
def test_distance_sums_blocks_shared_among_threads_equal_one_thread(workers: int) -> None:
    """One layer's blocks split among threads (each with sums of its own) give the one-thread sums,
    duplicates (recomputed exactly) included."""
    from repdiag.functional._clustering import _distance_sums_numpy

    g = torch.Generator().manual_seed(5)
    lab = torch.randint(0, 4, (900,), generator=g)
    x = torch.randn(900, 6, generator=g) + lab[:, None]
    x[100:120] = x[:20]  # duplicated rows: at distance exactly 0 in every block pair
    oh = nn.functional.one_hot(lab, 4)
    one = _distance_sums_numpy(x, oh, 128, 1)
    assert_close(_distance_sums_numpy(x, oh, 128, workers), one, rtol=1e-6, atol=1e-6)
    assert_close(_distance_sums_numpy(x.double(), oh, 128, workers), _distance_sums_numpy(x.double(), oh, 128, 1),
                 rtol=1e-12, atol=1e-12)
