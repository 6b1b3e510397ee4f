"""Silhouette, Davies–Bouldin, Calinski–Harabasz: against scikit-learn, by hand, invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from repdiag import NonFiniteError, RepdiagWarning, ShapeError
from repdiag.functional import (
    calinski_harabasz_score,
    cluster_distance_sums,
    davies_bouldin_score,
    silhouette_samples,
    silhouette_score,
    standardize,
)

from .conftest import DEVICES

SCORES = [silhouette_score, davies_bouldin_score, calinski_harabasz_score]
# (n, d, k): k=2, k=50, d=1, d=2048, and labels with singleton clusters
SHAPES = [(60, 3, 4), (40, 1, 2), (48, 2048, 3), (150, 5, 50), (30, 2, 2)]


def _data(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])  # every cluster present
    centres = rng.normal(size=(k, d)) * 2
    x = centres[labels] + rng.normal(size=(n, d))
    return x, labels


def _sk(fn_name: str, x: np.ndarray, labels: np.ndarray) -> float:
    from sklearn import metrics

    return float(getattr(metrics, fn_name)(x, labels))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_scores_match_sklearn(shape: tuple[int, int, int], dtype: torch.dtype) -> None:
    x, labels = _data(*shape)
    xt, yt = torch.tensor(x, dtype=dtype), torch.tensor(labels)
    tol = 1e-5 if dtype == torch.float64 else 1e-4
    for fn in SCORES:
        got = fn(xt, yt)
        assert got.dtype == dtype and got.shape == ()
        want = torch.tensor(_sk(fn.__name__, x, labels), dtype=torch.float64)
        assert_close(got.double(), want, rtol=tol, atol=tol * 1e-2, msg=f"{fn.__name__} {shape} {dtype}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_singleton_clusters_score_zero_like_sklearn(dtype: torch.dtype) -> None:
    from sklearn.metrics import silhouette_samples as sk_samples

    x, labels = _data(12, 3, 3)
    labels[-1] = 7  # one sample alone in its cluster
    labels[-2] = 9  # and another
    got = silhouette_samples(torch.tensor(x, dtype=dtype), torch.tensor(labels), block=5)
    assert_close(got.double(), torch.tensor(sk_samples(x, labels)), rtol=1e-4, atol=1e-5)
    assert float(got[-1]) == 0.0 and float(got[-2]) == 0.0


@pytest.mark.parametrize("block", [1, 7, 64, 4096])
def test_blocked_distance_sums_equal_naive(block: int) -> None:
    x, labels = _data(50, 4, 3)
    xt = torch.tensor(x)
    onehot = torch.nn.functional.one_hot(torch.tensor(labels), 3)
    naive = torch.cdist(xt, xt) @ onehot.double()
    assert_close(cluster_distance_sums(xt, onehot, block=block), naive)


def test_hand_worked_values() -> None:
    x = torch.tensor([[0.0], [1.0], [5.0], [6.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    # s_0 = (5.5 - 1) / 5.5, s_1 = (4.5 - 1) / 4.5, symmetric for the other cluster
    s0, s1 = 4.5 / 5.5, 3.5 / 4.5
    assert_close(silhouette_samples(x, y), torch.tensor([s0, s1, s1, s0], dtype=torch.float64))
    assert_close(silhouette_score(x, y), torch.tensor((s0 + s1) / 2, dtype=torch.float64))
    # DB: s = (0.5, 0.5), centroid distance 5 -> (0.5 + 0.5) / 5
    assert_close(davies_bouldin_score(x, y), torch.tensor(0.2, dtype=torch.float64))
    # CH: B = 2 * 2.5^2 * 2 = 25, W = 4 * 0.25 = 1 -> (25 / 1) / (1 / 2)
    assert_close(calinski_harabasz_score(x, y), torch.tensor(50.0, dtype=torch.float64))


@pytest.mark.parametrize("fn", SCORES)
def test_invariances(fn) -> None:  # type: ignore[no-untyped-def]
    x, labels = _data(80, 6, 5, seed=3)
    xt, yt = torch.tensor(x), torch.tensor(labels)
    ref = fn(xt, yt)
    perm = torch.randperm(80, generator=torch.Generator().manual_seed(1))
    relabel = torch.tensor([4, 2, 0, 1, 3])[yt] * 10 - 3  # other ids, other order
    assert_close(fn(xt, relabel), ref)
    assert_close(fn(xt[perm], yt[perm]), ref)
    assert_close(fn(xt + torch.randn(6, dtype=torch.float64) * 100, yt), ref, rtol=1e-6, atol=1e-8)
    assert_close(fn(xt * 7.5, yt), ref)  # all three are invariant to isotropic scaling


@pytest.mark.parametrize("fn", SCORES)
@pytest.mark.parametrize("case", ["one_class", "k_equals_n", "identical"])
def test_undefined_cases_give_nan_and_warn(fn, case: str) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    if case == "one_class":
        y = torch.zeros(6, dtype=torch.int64)
    elif case == "k_equals_n":
        y = torch.arange(6)
    else:
        x = torch.ones(6, 3, dtype=torch.float64)
    with pytest.warns(RepdiagWarning, match="undefined"):
        v = fn(x, y)
    assert torch.isnan(v)


def test_silhouette_samples_undefined_is_all_nan() -> None:
    with pytest.warns(RepdiagWarning, match="2 are needed"):
        s = silhouette_samples(torch.randn(5, 2), torch.zeros(5, dtype=torch.int64))
    assert s.shape == (5,) and bool(torch.isnan(s).all())


def test_ch_zero_within_dispersion_is_nan() -> None:
    x = torch.tensor([[0.0], [0.0], [3.0], [3.0]])
    with pytest.warns(RepdiagWarning, match="within-cluster dispersion"):
        assert torch.isnan(calinski_harabasz_score(x, torch.tensor([0, 0, 1, 1])))
    assert float(davies_bouldin_score(x, torch.tensor([0, 0, 1, 1]))) == 0.0  # as scikit-learn


@pytest.mark.parametrize("fn", SCORES)
def test_bad_input(fn) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(6, 2)
    x[2, 1] = float("nan")
    with pytest.raises(NonFiniteError, match="non-finite"):
        fn(x, torch.tensor([0, 0, 0, 1, 1, 1]))
    with pytest.raises(ShapeError, match="n_samples, n_features"):
        fn(torch.randn(6, 2, 2), torch.tensor([0, 0, 0, 1, 1, 1]))
    with pytest.raises(ShapeError, match="one per sample"):
        fn(torch.randn(6, 2), torch.tensor([0, 1]))
    with pytest.raises(ShapeError, match="integer"):
        fn(torch.randn(6, 2), torch.tensor([0.0, 0, 0, 1, 1, 1]))


@pytest.mark.parametrize("device", DEVICES)
def test_device_and_dtype_follow_input(device: str) -> None:
    x, labels = _data(40, 3, 3)
    xt, yt = torch.tensor(x, dtype=torch.float32, device=device), torch.tensor(labels, device=device)
    for fn in SCORES:
        v = fn(xt, yt)
        assert v.device.type == device and v.dtype == torch.float32
    s = silhouette_samples(xt, yt)
    assert s.device.type == device and s.shape == (40,)


def test_standardize_matches_sklearn() -> None:
    from sklearn.preprocessing import StandardScaler

    x = np.random.default_rng(0).normal(size=(30, 4)) * [1, 10, 100, 0] + [0, 1, 2, 5]
    assert_close(standardize(torch.tensor(x)), torch.tensor(StandardScaler().fit_transform(x)))


@pytest.mark.parametrize("seed", range(4))
def test_silhouette_exact_on_duplicate_rows_float32(seed: int) -> None:
    """Identical rows are at distance 0 (the |x|^2 + |y|^2 - 2 x.y expansion alone gave 1e-5..8e-5 off)."""
    from sklearn.metrics import silhouette_samples as sk_samples
    from sklearn.metrics import silhouette_score as sk_score

    rng = np.random.default_rng(seed)
    base = (rng.normal(size=(4, 6)) * 3 + 10).astype(np.float32)  # far from the origin: cancellation
    x = np.concatenate([base, base[[0, 1, 1, 3]]])  # duplicates within and across clusters
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    got = silhouette_score(torch.tensor(x), torch.tensor(y))
    assert got.dtype == torch.float32
    assert_close(got.double(), torch.tensor(sk_score(x.astype(np.float64), y), dtype=torch.float64), rtol=0, atol=1e-6)
    assert_close(silhouette_samples(torch.tensor(x), torch.tensor(y)).double(),
                 torch.tensor(sk_samples(x.astype(np.float64), y)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("cap", [3, 10_000])
def test_device_path_equals_cpu_path(cap: int) -> None:
    """The torch block loop (CUDA's, with a fixed budget of near-duplicate fixes per block and the
    fall-back when it overflows) gives the sums of the numpy loop (CPU's)."""
    from repdiag.functional._clustering import _distance_sums

    x, labels = _data(90, 5, 3)
    xt = torch.tensor(np.concatenate([x, x[:20]]), dtype=torch.float32)  # 20 duplicated rows
    onehot = torch.nn.functional.one_hot(torch.tensor(np.concatenate([labels, labels[:20]])), 3)
    want = cluster_distance_sums(xt, onehot, block=32)
    got, over = _distance_sums(xt, onehot, 32, cap_per_block=cap)
    assert (int(over) > 0) == (cap == 3)
    if cap == 3:
        got, over = _distance_sums(xt, onehot, 32, cap_per_block=None)
    assert int(over) == 0
    assert_close(got, want, rtol=1e-5, atol=1e-4)
    naive = torch.cdist(xt.double(), xt.double()) @ onehot.double()
    assert_close(want, naive, rtol=1e-5, atol=1e-4)
