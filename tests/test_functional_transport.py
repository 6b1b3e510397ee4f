"""Earth Mover kernels against SciPy and POT, hand-worked values and invariances."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from repdiag import ConfigError, NonFiniteError, RepdiagError, ShapeError
from repdiag.functional import coupling_bound, emd, first_moment_bound, sliced_wasserstein, wasserstein_1d
from repdiag.functional import _transport

from .conftest import DEVICES

ot = pytest.importorskip("ot")
stats = pytest.importorskip("scipy.stats")


def _clouds(n: int, m: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return g.normal(size=(n, d)), g.normal(size=(m, d)) * 1.5 + 0.3


# -- against trusted implementations -----------------------------------------------------------
@pytest.mark.parametrize("n,m", [(40, 40), (37, 23), (1, 9), (200, 333)])
@pytest.mark.parametrize("weighted", [False, True])
def test_wasserstein_1d_matches_scipy_unit_by_unit(n: int, m: int, weighted: bool) -> None:
    a, b = _clouds(n, m, 6)
    g = np.random.default_rng(1)
    wa = g.random(n) + (0.0 if n > 1 else 0.5) if weighted else None
    wb = g.random(m) if weighted else None
    if weighted and m > 3:
        wb[2] = 0.0  # a zero weight is allowed
    got = wasserstein_1d(torch.from_numpy(a), torch.from_numpy(b), wa, wb)
    want = torch.tensor([stats.wasserstein_distance(a[:, j], b[:, j], wa, wb) for j in range(6)])
    assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("n,m", [(30, 30), (30, 47)])
def test_wasserstein_1d_p_matches_pot(p: int, n: int, m: int) -> None:
    a, b = _clouds(n, m, 4, seed=2)
    want = torch.from_numpy(np.asarray(ot.wasserstein_1d(a, b, p=p))) ** (1 / p)
    assert_close(wasserstein_1d(torch.from_numpy(a), torch.from_numpy(b), p=p), want)


@pytest.mark.parametrize("n,m", [(10, 10), (60, 45), (200, 200), (500, 500), (500, 420)])
@pytest.mark.parametrize("p", [1, 2])
def test_emd_matches_pot(n: int, m: int, p: int) -> None:
    a, b = _clouds(n, m, 5, seed=n + m)
    cost = ot.dist(a, b, metric="euclidean") ** p
    want = torch.tensor(ot.emd2([], [], cost, numItermax=10**7) ** (1 / p), dtype=torch.float64)
    assert_close(emd(torch.from_numpy(a), torch.from_numpy(b), p=p), want, rtol=1e-9, atol=1e-12)


def test_emd_weighted_matches_pot() -> None:
    a, b = _clouds(50, 50, 3, seed=7)
    g = np.random.default_rng(8)
    wa, wb = g.random(50), g.random(50)
    want = ot.emd2(wa / wa.sum(), wb / wb.sum(), ot.dist(a, b, metric="euclidean"), numItermax=10**7)
    got = emd(torch.from_numpy(a), torch.from_numpy(b), a_weights=torch.from_numpy(wa), b_weights=wb)
    assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("n,m", [(100, 100), (80, 130)])
def test_sliced_matches_pot_with_same_projections(p: int, n: int, m: int) -> None:
    a, b = _clouds(n, m, 7, seed=3)
    proj = ot.sliced.get_random_projections(7, 40, seed=0)
    want = ot.sliced_wasserstein_distance(a, b, projections=proj, p=p)
    got = sliced_wasserstein(torch.from_numpy(a), torch.from_numpy(b), p=p, projections=torch.from_numpy(proj))
    assert_close(got, torch.tensor(want, dtype=torch.float64))


# -- hand-worked values --------------------------------------------------------------------------
def test_hand_worked_values() -> None:
    a = torch.tensor([[0.0], [1.0], [2.0]])
    b = torch.tensor([[0.0], [4.0]])
    # CDFs: F_a jumps 1/3 at 0,1,2; F_b jumps 1/2 at 0,4. |F_a - F_b| = 1/6 on [0,1), 1/6 on [1,2), 1/2 on [2,4)
    assert_close(wasserstein_1d(a, b), torch.tensor([1 / 6 + 1 / 6 + 1.0]))
    assert_close(emd(a, b), torch.tensor(1 / 6 + 1 / 6 + 1.0))
    sq = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert_close(emd(sq, sq + torch.tensor([3.0, 4.0])), torch.tensor(5.0))
    assert_close(emd(sq, sq + torch.tensor([3.0, 4.0]), p=2), torch.tensor(5.0))
    assert_close(coupling_bound(sq, sq + torch.tensor([3.0, 4.0])), torch.tensor(5.0))
    assert_close(first_moment_bound(sq, sq.flip(0)), torch.tensor(0.0))


def test_naive_loop_equals_vectorised_unequal_uniform() -> None:
    a, b = _clouds(13, 8, 3, seed=5)
    for j in range(3):  # integrate |F_a - F_b| on the merged support, one unit at a time
        z = np.sort(np.concatenate([a[:, j], b[:, j]]))
        fa = np.searchsorted(np.sort(a[:, j]), z[:-1], side="right") / 13
        fb = np.searchsorted(np.sort(b[:, j]), z[:-1], side="right") / 8
        naive = float(np.sum(np.abs(fa - fb) * np.diff(z)))
        assert_close(wasserstein_1d(torch.from_numpy(a), torch.from_numpy(b))[j], torch.tensor(naive, dtype=torch.float64))


# -- invariances ---------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_identity_symmetry_translation(device: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g).to(device)
    y = (torch.randn(50, 5, generator=g) * 2).to(device)
    zero = torch.zeros(5, device=device)
    assert_close(wasserstein_1d(x, x), zero)
    assert_close(sliced_wasserstein(x, x), torch.tensor(0.0, device=device))
    assert_close(emd(x, x), torch.tensor(0.0, device=device))
    assert_close(wasserstein_1d(x, y), wasserstein_1d(y, x))
    assert_close(sliced_wasserstein(x, y), sliced_wasserstein(y, x))
    assert_close(emd(x, y), emd(y, x))
    c = torch.tensor([0.5, -2.0, 0.0, 3.0, -0.25], device=device)
    assert_close(wasserstein_1d(x, x + c), c.abs())
    assert_close(wasserstein_1d(x + 7.0, y + 7.0), wasserstein_1d(x, y))
    assert_close(emd(x, x + c), torch.linalg.vector_norm(c))


def test_bounds_bracket_exact_on_random_pairs() -> None:
    g = torch.Generator().manual_seed(4)
    for trial in range(6):
        n, d = 30 + 10 * trial, 2 + trial
        y0 = torch.randn(n, d, generator=g, dtype=torch.float64)
        y1 = y0 * (1 + 0.3 * torch.randn(1, d, generator=g, dtype=torch.float64)) + torch.randn(n, d, generator=g,
                                                                                               dtype=torch.float64) * 0.5
        exact = emd(y0, y1)
        assert float(first_moment_bound(y0, y1)) <= float(exact) + 1e-12
        assert float(exact) <= float(coupling_bound(y0, y1)) + 1e-12
        assert float(sliced_wasserstein(y0, y1)) <= float(exact) + 1e-12
    ident = torch.randn(20, 3, generator=g)
    assert_close(coupling_bound(ident, ident + 1.0), emd(ident, ident + 1.0))  # a translation is optimal


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_and_device_follow_input(device: str, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 4, generator=g).to(device, dtype)
    y = torch.randn(40, 4, generator=g).to(device, dtype)
    for r in (wasserstein_1d(x, y), sliced_wasserstein(x, y), emd(x, y), emd(x, y[:30]),
              coupling_bound(x, y), first_moment_bound(x, y)):
        assert r.dtype == dtype and r.device.type == device
    ref = emd(x.double().cpu(), y.double().cpu())
    assert_close(emd(x, y).double().cpu(), ref, rtol=2e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-6)


def test_sliced_seeded_and_projection_count() -> None:
    x, y = torch.randn(80, 6), torch.randn(80, 6) + 1
    assert torch.equal(sliced_wasserstein(x, y, seed=3), sliced_wasserstein(x, y, seed=3))
    assert not torch.equal(sliced_wasserstein(x, y, n_projections=8, seed=3), sliced_wasserstein(x, y, n_projections=8, seed=4))
    before = torch.get_rng_state()
    sliced_wasserstein(x, y)
    assert torch.equal(before, torch.get_rng_state())  # its own generator; the global RNG is untouched


# -- errors --------------------------------------------------------------------------------------
def test_emd_size_limit_and_approx() -> None:
    x, y = torch.randn(30, 3), torch.randn(30, 3)
    with pytest.raises(ConfigError, match="sliced_wasserstein"):
        emd(x, y, max_points=20)
    assert_close(emd(x, y, max_points=20, approx="sliced", seed=2), sliced_wasserstein(x, y, seed=2))
    with pytest.raises(ConfigError, match="approx"):
        emd(x, y, approx="fast")  # type: ignore[arg-type]


def test_emd_nonconvergence_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = torch.randn(40, 3, dtype=torch.float64), torch.randn(35, 3, dtype=torch.float64)
    with pytest.raises(RepdiagError, match="num_iter_max"):
        emd(x, y, num_iter_max=5)
    assert_close(emd(x, y), torch.tensor(ot.emd2([], [], ot.dist(x.numpy(), y.numpy(), metric="euclidean")),
                                         dtype=torch.float64))


def test_bad_inputs() -> None:
    x = torch.randn(10, 3)
    with pytest.raises(ShapeError, match="same number of features"):
        wasserstein_1d(x, torch.randn(10, 4))
    with pytest.raises(ShapeError, match="n_samples, n_features"):
        sliced_wasserstein(x[:, 0], x)
    with pytest.raises(ShapeError, match="a_weights"):
        wasserstein_1d(x, x, a_weights=torch.ones(9))
    with pytest.raises(ConfigError, match=">= 0"):
        wasserstein_1d(x, x, b_weights=-torch.ones(10))
    with pytest.raises(ConfigError, match="p must be"):
        emd(x, x, p=0.5)
    with pytest.raises(ShapeError, match="projections"):
        sliced_wasserstein(x, x, projections=torch.randn(4, 5))
    with pytest.raises(ShapeError, match="same inputs"):
        coupling_bound(x, x[:5])
    with pytest.raises(NonFiniteError):
        emd(x, torch.full((10, 3), float("nan")))


def test_docstring_examples() -> None:
    assert doctest.testmod(_transport, raise_on_error=False).failed == 0
