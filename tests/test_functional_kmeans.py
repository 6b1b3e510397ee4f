"""k-means, NMI, purity, nearest-centroid accuracy: against scikit-learn, by hand, invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from repdiag import ConfigError, RepdiagWarning, ShapeError
from repdiag.functional import (
    kmeans,
    nearest_centroid_accuracy,
    normalized_mutual_info,
    purity,
    stratified_split,
)

from .conftest import DEVICES


def _blobs(n: int, d: int, k: int, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    return rng.normal(size=(k, d))[labels] * 3 + rng.normal(size=(n, d)) * spread, labels


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(300, 2, 5), (200, 1, 2), (120, 64, 10), (400, 8, 50)])
def test_same_init_same_result_as_sklearn(shape: tuple[int, int, int], dtype: torch.dtype) -> None:
    from sklearn.cluster import KMeans

    n, d, k = shape
    x, _ = _blobs(n, d, k, spread=2.0)  # overlapping clusters: several Lloyd iterations
    x = x.astype(np.float32 if dtype == torch.float32 else np.float64)
    init = x[np.random.default_rng(1).choice(n, k, replace=False)]
    sk = KMeans(k, init=init, n_init=1, algorithm="lloyd").fit(x)
    got = kmeans(torch.tensor(x), k, init=torch.tensor(init))
    assert got.labels.dtype == torch.int64 and got.centers.dtype == dtype and got.inertia.dtype == dtype
    torch.testing.assert_close(got.labels, torch.tensor(sk.labels_, dtype=torch.int64))
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert_close(got.inertia.double(), torch.tensor(sk.inertia_, dtype=torch.float64), rtol=tol, atol=0)
    assert_close(got.centers.double(), torch.tensor(sk.cluster_centers_, dtype=torch.float64), rtol=tol, atol=tol)


def test_kmeanspp_finds_sklearn_quality_solution() -> None:
    from sklearn.cluster import KMeans

    x, _ = _blobs(600, 16, 8, seed=2)
    ours = float(kmeans(torch.tensor(x), 8, n_init=3, seed=0).inertia)
    theirs = KMeans(8, n_init=3, random_state=0).fit(x).inertia_
    assert ours <= theirs * 1.01


def test_hand_worked_and_seed_behaviour() -> None:
    x = torch.tensor([[0.0], [0.5], [10.0], [10.5]], dtype=torch.float64)
    labels, centers, inertia = kmeans(x, 2, init=torch.tensor([[0.0], [10.0]], dtype=torch.float64))
    assert labels.tolist() == [0, 0, 1, 1]
    assert_close(centers, torch.tensor([[0.25], [10.25]], dtype=torch.float64))
    assert_close(inertia, torch.tensor(4 * 0.0625, dtype=torch.float64))
    xb = torch.tensor(_blobs(200, 3, 4, seed=5)[0])
    state = torch.get_rng_state()
    a, b = kmeans(xb, 4, seed=3), kmeans(xb, 4, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    torch.testing.assert_close(a.labels, b.labels)
    # k-means++ from any seed recovers well-separated blobs: NMI with the truth is 1
    xs, ys = _blobs(200, 3, 4, seed=5, spread=0.05)
    for seed in range(3):
        assert_close(normalized_mutual_info(torch.tensor(ys), kmeans(torch.tensor(xs), 4, seed=seed).labels),
                     torch.tensor(1.0, dtype=torch.float64))


def test_empty_cluster_is_relocated() -> None:
    x = torch.tensor([[0.0], [0.1], [5.0], [5.1]], dtype=torch.float64)
    res = kmeans(x, 3, init=torch.tensor([[0.0], [5.0], [100.0]], dtype=torch.float64))
    assert sorted(torch.bincount(res.labels, minlength=3).tolist()) == [1, 1, 2]


def test_kmeans_bad_input() -> None:
    with pytest.raises(ConfigError, match="at most the number of samples"):
        kmeans(torch.randn(3, 2), 4)
    with pytest.raises(ShapeError, match="init must have shape"):
        kmeans(torch.randn(10, 2), 3, init=torch.randn(2, 2))
    with pytest.raises(ConfigError, match="n_init"):
        kmeans(torch.randn(10, 2), 3, n_init=0)


@pytest.mark.parametrize("device", DEVICES)
def test_kmeans_device(device: str) -> None:
    x = torch.randn(50, 3, device=device)
    res = kmeans(x, 3)
    assert res.labels.device.type == device and res.centers.device.type == device


@pytest.mark.parametrize("seed", range(4))
def test_nmi_matches_sklearn(seed: int) -> None:
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 + seed * 3, 60)
    b = (a + rng.integers(0, 2, 60)) % (2 + seed) * 5
    assert_close(normalized_mutual_info(torch.tensor(a), torch.tensor(b)),
                 torch.tensor(normalized_mutual_info_score(a, b), dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_nmi_edge_cases_and_invariance() -> None:
    one, two = torch.zeros(4, dtype=torch.int64), torch.tensor([0, 0, 1, 1])
    assert float(normalized_mutual_info(one, one)) == 1.0
    assert float(normalized_mutual_info(one, two)) == 0.0
    a, b = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([1, 1, 0, 0, 0, 2])
    assert_close(normalized_mutual_info(a, b), normalized_mutual_info(b, a))  # symmetric
    assert_close(normalized_mutual_info(a, b), normalized_mutual_info(a * 7 + 1, torch.tensor([5, 5, 3, 3, 3, 9])))


def test_purity_hand_and_naive() -> None:
    t, p = torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 0, 0, 1, 1])
    assert_close(purity(t, p), torch.tensor(0.8, dtype=torch.float64))
    rng = np.random.default_rng(0)
    tt, pp = rng.integers(0, 4, 100), rng.integers(0, 6, 100)
    naive = sum(np.bincount(tt[pp == c]).max() for c in np.unique(pp)) / 100
    assert_close(purity(torch.tensor(tt), torch.tensor(pp)), torch.tensor(naive, dtype=torch.float64))


def test_nearest_centroid_matches_sklearn() -> None:
    from sklearn.neighbors import NearestCentroid

    x, y = _blobs(200, 5, 4, seed=1, spread=3.0)
    tr, te = stratified_split(torch.tensor(y), 0.3, seed=0)
    xtr, ytr, xte, yte = x[tr.numpy()], y[tr.numpy()], x[te.numpy()], y[te.numpy()]
    want = NearestCentroid().fit(xtr, ytr).score(xte, yte)
    got = nearest_centroid_accuracy(torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte), torch.tensor(yte))
    assert_close(got, torch.tensor(want, dtype=torch.float64))
    xtr2, ytr2 = torch.tensor([[0.0], [1.0], [9.0], [10.0]]), torch.tensor([0, 0, 1, 1])
    assert_close(nearest_centroid_accuracy(xtr2, ytr2, torch.tensor([[2.0], [6.0]]), torch.tensor([0, 0])),
                 torch.tensor(0.5))
    with pytest.warns(RepdiagWarning, match="fewer than 2 classes"):
        v = nearest_centroid_accuracy(xtr2, torch.zeros(4, dtype=torch.int64), xtr2, torch.zeros(4, dtype=torch.int64))
    assert torch.isnan(v)


def test_stratified_split() -> None:
    y = torch.tensor([0] * 10 + [1] * 4 + [2])
    tr, te = stratified_split(y, 0.25, seed=0)
    assert sorted(tr.tolist() + te.tolist()) == list(range(15))
    assert torch.bincount(y[te], minlength=3).tolist() == [2, 1, 0]  # the singleton class stays in training
    tr2, te2 = stratified_split(y, 0.25, seed=0)
    assert torch.equal(te, te2)
    with pytest.raises(ConfigError, match="test_fraction"):
        stratified_split(y, 1.5)


@pytest.mark.parametrize("offset", [1e-2, 1.0])
def test_tiny_spread_far_from_origin_matches_sklearn(offset: float) -> None:
    """A deep layer of a plain network: float32 activations near ``offset`` with a spread 1e-5 of it.
    Without centring, |x|^2 - 2 x.c + |c|^2 cancels to noise and the labels flicker (no run
    converged in 300 iterations on such layers); centred as scikit-learn does, both agree."""
    from sklearn.cluster import KMeans

    x, _ = _blobs(2000, 16, 6, seed=3, spread=1.5)
    x = (offset + x * offset * 1e-5).astype(np.float32)
    init = x[np.random.default_rng(4).choice(len(x), 6, replace=False)]
    sk = KMeans(6, init=init, n_init=1, algorithm="lloyd").fit(x)
    got = kmeans(torch.tensor(x), 6, init=torch.tensor(init))
    assert (got.labels.numpy() == sk.labels_).mean() > 0.999
    assert_close(got.inertia.double(), torch.tensor(sk.inertia_, dtype=torch.float64), rtol=1e-3, atol=0)
    assert_close(got.centers, torch.tensor(sk.cluster_centers_), rtol=1e-6, atol=0)
