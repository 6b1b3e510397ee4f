"""Linear CKA (and debiased), effective rank, participation ratio: against direct formulas,
by hand, invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from repdiag import NonFiniteError, RepdiagWarning, ShapeError
from repdiag.functional import effective_rank, linear_cka, participation_ratio

from .conftest import DEVICES


def _hsic_gram(k: np.ndarray, l: np.ndarray, debiased: bool) -> float:
    """HSIC from Gram matrices: biased tr(HKHL), or the unbiased estimator of Song et al. (2012)."""
    n = k.shape[0]
    if not debiased:
        h = np.eye(n) - 1.0 / n
        return float(np.trace(h @ k @ h @ l))
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return float((np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3)))


def _cka_ref(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    k, l = x @ x.T, y @ y.T
    return _hsic_gram(k, l, debiased) / np.sqrt(_hsic_gram(k, k, debiased) * _hsic_gram(l, l, debiased))


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(30, 5, 7), (12, 40, 3), (50, 1, 64)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cka_matches_gram_formula(shape: tuple[int, int, int], debiased: bool, dtype: torch.dtype) -> None:
    n, d1, d2 = shape
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d1))
    y = x @ rng.normal(size=(d1, d2)) + rng.normal(size=(n, d2))
    got = linear_cka(torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype), debiased=debiased)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert got.dtype == dtype
    assert_close(got.double(), torch.tensor(_cka_ref(x, y, debiased), dtype=torch.float64), rtol=tol, atol=tol)


def test_cka_hand_worked_and_invariances() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    # ||X^T X||_F = 2, ||x1^T x1|| = 2, ||x1^T X||_F^2 = 4 -> 4 / (2 * 2) ... with one column: 4 / (2 * 2 sqrt 2)
    assert_close(linear_cka(x, x[:, :1]), torch.tensor(1 / np.sqrt(2), dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 6, generator=g, dtype=torch.float64)
    b = torch.randn(40, 4, generator=g, dtype=torch.float64) + a[:, :4]
    ref = linear_cka(a, b)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    assert_close(linear_cka(a, a), torch.tensor(1.0, dtype=torch.float64))
    assert_close(linear_cka(b, a), ref)  # symmetric
    assert_close(linear_cka(a @ q, b), ref)  # orthogonal transform
    assert_close(linear_cka(a * 5 + 3, b), ref)  # isotropic scaling, translation
    perm = torch.randperm(40, generator=g)
    assert_close(linear_cka(a[perm], b[perm]), ref)  # same permutation of the inputs


def test_cka_undefined_and_bad_input() -> None:
    with pytest.warns(RepdiagWarning, match="zero variance"):
        assert torch.isnan(linear_cka(torch.ones(5, 2), torch.randn(5, 3)))
    with pytest.warns(RepdiagWarning, match="at least 4 samples"):
        assert torch.isnan(linear_cka(torch.randn(3, 2), torch.randn(3, 3), debiased=True))
    with pytest.raises(ShapeError, match="same samples"):
        linear_cka(torch.randn(5, 2), torch.randn(6, 2))
    bad = torch.randn(5, 2)
    bad[0, 0] = float("inf")
    with pytest.raises(NonFiniteError):
        linear_cka(bad, torch.randn(5, 2))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_spectrum_measures_against_numpy(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 8)) * np.linspace(0.1, 3, 8)
    lam = np.linalg.eigvalsh(np.cov(x.T))
    sv = np.linalg.svd(x - x.mean(0), compute_uv=False)
    p = sv / sv.sum()
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    xt = torch.tensor(x, dtype=dtype)
    assert_close(participation_ratio(xt).double(), torch.tensor(lam.sum() ** 2 / (lam ** 2).sum(), dtype=torch.float64),
                 rtol=tol, atol=tol)
    assert_close(effective_rank(xt).double(), torch.tensor(np.exp(-(p * np.log(p)).sum()), dtype=torch.float64),
                 rtol=tol, atol=tol)


def test_spectrum_hand_worked_and_undefined() -> None:
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert_close(effective_rank(x), torch.tensor(2.0))
    assert_close(participation_ratio(x), torch.tensor(2.0))
    line = torch.arange(10.0)[:, None] * torch.tensor([[1.0, 2.0, 3.0]])
    assert_close(effective_rank(line), torch.tensor(1.0))
    assert_close(participation_ratio(line * 9 + 4), torch.tensor(1.0))
    with pytest.warns(RepdiagWarning, match="zero variance"):
        assert torch.isnan(effective_rank(torch.ones(4, 3)))
    with pytest.warns(RepdiagWarning, match="zero variance"):
        assert torch.isnan(participation_ratio(torch.ones(4, 3)))


@pytest.mark.parametrize("device", DEVICES)
def test_device(device: str) -> None:
    x = torch.randn(20, 4, device=device)
    for v in (linear_cka(x, x[:, :2]), effective_rank(x), participation_ratio(x)):
        assert v.device.type == device and v.dtype == torch.float32
