"""The one-pass C kernel for conv-map statistics (repdiag.capture._mapstats) against PyTorch's own
reductions, hand-worked values, its invariances and the eager path it stands in for."""

from __future__ import annotations

import os

import pytest
import torch

from repdiag.capture import StreamingStats, _native, _stats


def test_kernel_is_built() -> None:
    """`make setup` compiles the kernel (setup.py); a silent fall-back would hide a slower build."""
    if os.environ.get("REPDIAG_NATIVE", "1") == "0":
        pytest.skip("REPDIAG_NATIVE=0: the C kernel is switched off on purpose")
    assert _native.available(), (
        "repdiag.capture._mapstats did not build; reinstall with a C compiler present "
        "(pip's log of `pip install -e .` shows why)")
    assert _native.enabled()


needs_kernel = pytest.mark.skipif(not _native.available(), reason="C kernel not built (test_kernel_is_built fails)")


def _reference(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, ...]:
    n, d = x.shape[:2]
    m = x.reshape(n, d, -1).double()
    return (m.sum(2), m.square().sum(2), x.transpose(0, 1).reshape(d, -1).amin(1),
            x.transpose(0, 1).reshape(d, -1).amax(1), (x.reshape(n, d, -1).abs() <= eps).sum(2).to(x.dtype))


def _kernel(x: torch.Tensor, eps: float = 0.0) -> tuple[torch.Tensor, ...]:
    n, d = x.shape[:2]
    rows = x.reshape(n * d, -1)
    with _native.use_native(True):  # the kernel itself, even where REPDIAG_NATIVE=0
        assert _native.usable(rows)
        return _native.map_stats(rows, n, d, eps)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (4, 3, 511), (2, 6, 512), (5, 2, 513), (2, 3, 33, 47),
                                   (64, 16, 8, 8)])
def test_kernel_matches_torch(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g, dtype=dtype) * 3 + 0.5
    x = torch.where(torch.rand(shape, generator=g, dtype=dtype) < 0.3, torch.zeros((), dtype=dtype), x)
    x[0, 0] = 0.0  # a whole map zero
    eps = 0.25
    s1, s2, mn, mx, zc = _kernel(x, eps)
    r1, r2, rmn, rmx, rzc = _reference(x, eps)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(s1, r1, **tol)
    torch.testing.assert_close(s2, r2, **tol)
    torch.testing.assert_close(zc, rzc, rtol=0, atol=0)
    torch.testing.assert_close(mn, rmn, rtol=0, atol=0)
    torch.testing.assert_close(mx, rmx, rtol=0, atol=0)
    assert s1.dtype == s2.dtype == torch.float64 and zc.dtype == mn.dtype == mx.dtype == dtype


@needs_kernel
def test_kernel_hand_worked() -> None:
    # two samples, two units, maps of four entries
    x = torch.tensor([[[1.0, -2.0, 0.0, 3.0], [0.5, 0.5, -0.0, 0.0]],
                      [[4.0, 0.0, 0.0, 0.0], [-1.0, -1.0, -1.0, 2.0]]])
    s1, s2, mn, mx, zc = _kernel(x)
    torch.testing.assert_close(s1, torch.tensor([[2.0, 1.0], [4.0, -1.0]], dtype=torch.float64))
    torch.testing.assert_close(s2, torch.tensor([[14.0, 0.5], [16.0, 7.0]], dtype=torch.float64))
    torch.testing.assert_close(zc, torch.tensor([[1.0, 2.0], [3.0, 0.0]]))  # -0.0 counts as zero
    torch.testing.assert_close(mn, torch.tensor([-2.0, -1.0]))
    torch.testing.assert_close(mx, torch.tensor([4.0, 2.0]))
    _, _, _, _, zc_eps = _kernel(x, eps=0.5)
    torch.testing.assert_close(zc_eps, torch.tensor([[1.0, 4.0], [3.0, 0.0]]))  # |x| <= eps


@needs_kernel
def test_kernel_invariances() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 4, 700, generator=g)
    s1, s2, mn, mx, zc = _kernel(x)
    perm_entries = x[:, :, torch.randperm(700, generator=g)].contiguous()  # order inside a map
    p1, p2, pmn, pmx, pzc = _kernel(perm_entries)
    torch.testing.assert_close(p1, s1, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(p2, s2, rtol=1e-6, atol=1e-5)
    assert torch.equal(pmn, mn) and torch.equal(pmx, mx) and torch.equal(pzc, zc)
    order = torch.randperm(6, generator=g)
    q1, _, qmn, qmx, qzc = _kernel(x[order].contiguous())  # order of samples
    assert torch.equal(q1, s1[order]) and torch.equal(qzc, zc[order])
    assert torch.equal(qmn, mn) and torch.equal(qmx, mx)
    shifted = _kernel(x + 10.0)  # a shift moves sums and extremes, keeps zero counts of nonzero data
    torch.testing.assert_close(shifted[0], s1 + 7000.0, rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(shifted[2], mn + 10.0)


@needs_kernel
def test_kernel_nonfinite_like_torch() -> None:
    x = torch.randn(3, 4, 9, 9)
    x[1, 0, 2, 2] = float("nan")
    x[0, 1, 0, 0] = float("inf")
    x[2, 2, 3, 3] = float("-inf")
    x[0, 3, 1, 1] = float("nan")
    x[2, 3, 1, 1] = float("inf")
    s1, s2, mn, mx, zc = _kernel(x)
    r1, r2, rmn, rmx, rzc = _reference(x, 0.0)
    torch.testing.assert_close(s1, r1, equal_nan=True, rtol=1e-5, atol=1e-5)  # float32 sums
    torch.testing.assert_close(s2, r2, equal_nan=True, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mn, rmn, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(mx, rmx, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(zc, rzc)


@needs_kernel
def test_kernel_reads_only() -> None:
    x = torch.randn(8, 3, 5, 5)
    before = x.clone()
    _kernel(x)
    assert torch.equal(x, before)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_streaming_stats_same_with_and_without_kernel(dtype: torch.dtype, layout: str) -> None:
    """The recorder's statistics agree whichever path reduced the maps."""
    g = torch.Generator().manual_seed(11)
    batches = [torch.relu(torch.randn(n, 6, 10, 12, generator=g)).to(dtype) for n in (9, 4, 17)]
    if layout == "channels_last":
        batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]
    elif layout == "sliced":
        batches = [b[:, :, 1:-1] for b in batches]
    states = []
    for on in (True, False):
        s = StreamingStats(6, torch.device("cpu"), eps=1e-3)
        with _native.use_native(on):
            means = [s.update(b) for b in batches]
        states.append((s, means))
    (a, ma), (b, mb) = states
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype in (torch.float32, torch.float64) else {"rtol": 1e-3, "atol": 1e-3}
    for u, v in zip(ma, mb):
        torch.testing.assert_close(u, v, **tol)
    for name in ("zeros", "zero_maps", "nonfinite", "sample_zero_hist", "min", "max"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)
    torch.testing.assert_close(a.mean, b.mean, **tol)
    torch.testing.assert_close(a.var(), b.var(), **tol)


@needs_kernel
def test_switch_turns_kernel_off(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(_native, "map_stats", lambda *a: calls.append(1) or pytest.fail("kernel used while off"))
    with _native.use_native(False):
        assert not _native.enabled()
        StreamingStats(2, torch.device("cpu")).update(torch.randn(3, 2, 4, 4))
    assert not calls
    assert _native.enabled() == (os.environ.get("REPDIAG_NATIVE", "1") != "0")
    assert _stats._native is _native
