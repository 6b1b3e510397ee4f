"""Property-based tests (Hypothesis) of the functional kernels: random shapes including n = 1 and
d = 1, duplicated rows, magnitudes from 1e-30 to 1e30, float16 to float64, labels of every integer
dtype. Each result is finite and equals the float64 reference (scikit-learn, SciPy, NumPy) where
defined, NaN with a RepdiagWarning where not, and never a raw exception."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repdiag import RepdiagError, RepdiagWarning
from repdiag import functional as F

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
LABEL_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8]
EXPONENTS = {torch.float16: (-3, 4), torch.bfloat16: (-30, 30), torch.float32: (-30, 30), torch.float64: (-30, 30)}
RTOL = {torch.float16: 2e-3, torch.bfloat16: 2e-3, torch.float32: 2e-4, torch.float64: 1e-7}


@st.composite
def samples(draw: Any, min_n: int = 1, max_n: int = 12, max_d: int = 4) -> tuple[torch.Tensor, torch.dtype]:
    """(n, d) samples of one dtype: small integers (a pool, so rows repeat) times 10**e."""
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    lo, hi = EXPONENTS[dtype]
    e = draw(st.integers(lo, hi))
    pool = draw(st.lists(st.lists(st.integers(-3, 3), min_size=d, max_size=d), min_size=1, max_size=max(1, n)))
    rows = [pool[draw(st.integers(0, len(pool) - 1))] for _ in range(n)]
    x = torch.tensor(rows, dtype=torch.float64) * 10.0 ** e
    return x.to(dtype), dtype


@st.composite
def labelled(draw: Any) -> tuple[torch.Tensor, torch.dtype, torch.Tensor]:
    x, dtype = draw(samples())
    n = x.shape[0]
    lab = torch.tensor(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    return x, dtype, lab.to(draw(st.sampled_from(LABEL_DTYPES)))


def _run(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor | None, list[warnings.WarningMessage]]:
    """The kernel's result and its warnings; a RepdiagError is an answer (None), any other raises."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn()
        except RepdiagError:
            return None, list(caught)
    return out, list(caught)


def _check(out: torch.Tensor, caught: list[warnings.WarningMessage], want: float | None, rtol: float,
           atol: float = 1e-6) -> None:
    """Finite and equal to ``want``, or NaN with a RepdiagWarning (``want`` None: undefined)."""
    v = out.double()
    if bool(torch.isnan(v).any()):
        assert any(issubclass(w.category, RepdiagWarning) for w in caught), "NaN without a RepdiagWarning"
        return
    assert bool(torch.isfinite(v).all()), v
    if want is not None:
        torch.testing.assert_close(v, torch.tensor(want, dtype=torch.float64).expand_as(v), rtol=rtol, atol=atol)


def _unit(x: torch.Tensor) -> np.ndarray:
    """The values x holds, in float64, divided by their largest magnitude (the scale-free reference)."""
    a = x.double().numpy()
    m = np.abs(a).max()
    return a / m if m > 0 else a


@pytest.mark.parametrize("name", ["silhouette_score", "davies_bouldin_score", "calinski_harabasz_score"])
@SETTINGS
@given(data=labelled())
def test_cluster_indices(name: str, data: tuple[torch.Tensor, torch.dtype, torch.Tensor]) -> None:
    from sklearn import metrics

    x, dtype, lab = data
    out, caught = _run(lambda: getattr(F, name)(x, lab))
    assert out is not None
    xs = _unit(x)
    k = len(np.unique(lab.numpy()))
    defined = 2 <= k <= x.shape[0] - 1 and not (xs == xs[:1]).all()
    want = float(getattr(metrics, name)(xs, lab.numpy())) if defined else None
    if not defined:
        assert torch.isnan(out)
    _check(out, caught, want, RTOL[dtype], atol=1e-4 if dtype != torch.float64 else 1e-7)


@pytest.mark.parametrize("name", ["participation_ratio", "effective_rank"])
@SETTINGS
@given(data=samples())
def test_spectrum(name: str, data: tuple[torch.Tensor, torch.dtype]) -> None:
    x, dtype = data
    out, caught = _run(lambda: getattr(F, name)(x))
    if x.shape[0] < 2:
        assert out is None  # one sample: a ShapeError, not a number
        return
    assert out is not None
    xs = _unit(x)
    s = np.linalg.svd(xs - xs.mean(0), compute_uv=False)
    defined = s.max() > 1e-12
    if name == "participation_ratio":
        want = (s ** 2).sum() ** 2 / (s ** 4).sum() if defined else None
    else:
        p = s / s.sum() if defined else s
        p = p[p > 1e-15]
        want = float(np.exp(-(p * np.log(p)).sum())) if defined else None
    # tiny singular values are noise at the compute precision; compare loosely there
    _check(out, caught, want, 1e-2 if dtype != torch.float64 else 1e-6, atol=1e-2 if dtype != torch.float64 else 1e-6)


@SETTINGS
@given(data=samples(), other=st.integers(0, 2 ** 31))
def test_linear_cka(data: tuple[torch.Tensor, torch.dtype], other: int) -> None:
    x, dtype = data
    g = torch.Generator().manual_seed(other)
    y = (x.double() @ torch.randn(x.shape[1], 2, generator=g, dtype=torch.float64)).to(dtype)
    out, caught = _run(lambda: F.linear_cka(x, y))
    assert out is not None
    a, b = _unit(x), _unit(y)
    a, b = a - a.mean(0), b - b.mean(0)
    defined = np.abs(a).max() > 0 and np.abs(b).max() > 0
    if defined and not torch.isnan(out):
        want = np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))
        assert -1e-3 <= float(out) <= 1 + 1e-3
        if dtype == torch.float64:
            _check(out, caught, float(want), 1e-6)
    else:
        _check(out, caught, None, 0)


@SETTINGS
@given(data=labelled())
def test_nearest_centroid_and_agreement(data: tuple[torch.Tensor, torch.dtype, torch.Tensor]) -> None:
    from sklearn.metrics import normalized_mutual_info_score

    x, dtype, lab = data
    out, caught = _run(lambda: F.nearest_centroid_accuracy(x, lab, x, lab))
    assert out is not None
    _check(out, caught, None, 0)
    if not torch.isnan(out):
        assert 0.0 <= float(out) <= 1.0
    pred = (lab.long() + 1) % 3
    nmi = F.normalized_mutual_info(lab, pred)
    torch.testing.assert_close(nmi, torch.tensor(normalized_mutual_info_score(lab.numpy(), pred.numpy()),
                                                 dtype=torch.float64), rtol=1e-9, atol=1e-12)
    assert 0.0 < float(F.purity(lab, pred)) <= 1.0


@SETTINGS
@given(data=samples(), k=st.integers(1, 4))
def test_kmeans(data: tuple[torch.Tensor, torch.dtype], k: int) -> None:
    x, dtype = data
    out = _run(lambda: F.kmeans(x, k, seed=0).inertia)[0]
    if k > x.shape[0]:
        assert out is None  # a ConfigError, k > n
        return
    res = F.kmeans(x, k, seed=0)
    assert res.labels.shape == (x.shape[0],) and int(res.labels.max()) < k
    xd, cd = x.double(), res.centers.double()
    inertia = float(((xd - cd[res.labels]) ** 2).sum())
    fi = torch.finfo(res.inertia.dtype)  # a value outside the output dtype's normal range cannot be exact
    if inertia == 0 or (np.isfinite(inertia) and float(fi.tiny) <= inertia < float(fi.max)):
        torch.testing.assert_close(res.inertia.double(), torch.tensor(inertia, dtype=torch.float64),
                                   rtol=RTOL[dtype] * 10, atol=float(xd.abs().max()) ** 2 * 1e-5)


@SETTINGS
@given(data=samples(max_n=10), shift=st.integers(-3, 3))
def test_transport(data: tuple[torch.Tensor, torch.dtype], shift: int) -> None:
    from scipy.stats import wasserstein_distance

    x, dtype = data
    m = float(x.double().abs().max()) or 1.0
    y = (x.double() + shift * m).to(dtype)
    w = F.wasserstein_1d(x, y)
    want = [wasserstein_distance(x[:, j].double().numpy(), y[:, j].double().numpy()) for j in range(x.shape[1])]
    torch.testing.assert_close(w.double(), torch.tensor(want), rtol=RTOL[dtype] * 10, atol=m * 1e-6)
    cb = F.coupling_bound(x, y)
    fm = F.first_moment_bound(x, y)
    want_cb = float(np.linalg.norm(x.double().numpy() - y.double().numpy(), axis=1).mean())
    want_fm = float(np.linalg.norm(x.double().numpy().mean(0) - y.double().numpy().mean(0)))
    torch.testing.assert_close(cb.double(), torch.tensor(want_cb, dtype=torch.float64), rtol=RTOL[dtype] * 10,
                               atol=m * 1e-6)
    torch.testing.assert_close(fm.double(), torch.tensor(want_fm, dtype=torch.float64), rtol=RTOL[dtype] * 10,
                               atol=m * 1e-3)


@SETTINGS
@given(data=samples(), q=st.floats(0, 1))
def test_sparsity_and_quantiles(data: tuple[torch.Tensor, torch.dtype], q: float) -> None:
    x, dtype = data
    a = x.double().numpy()
    torch.testing.assert_close(F.sparsity(x).double(), torch.tensor((a == 0).mean(0)), rtol=1e-3, atol=1e-3)
    counts = torch.tensor((a == 0).sum(1))
    hist = torch.bincount(counts, minlength=x.shape[1] + 1)
    want = np.quantile(counts.numpy() / x.shape[1], q, method="inverted_cdf")
    got = F.histogram_quantiles(hist, q, low=0.0, high=1.0)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=1e-9)
