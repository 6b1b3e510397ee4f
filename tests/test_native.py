"""The one-pass C kernel for conv-map statistics (repdiag.capture._mapstats), through
StreamingStats.update, against PyTorch computing the same quantities from their definitions,
hand-worked values, its invariances and the eager path it stands in for."""

from __future__ import annotations

import os

import pytest
import torch

from repdiag.capture import HIST_BINS, StreamingStats, _native

from .test_capture import zero_hist


def test_kernel_is_built() -> None:
    """`make setup` compiles the kernel (setup.py); a silent fall-back would hide a slower build."""
    if os.environ.get("REPDIAG_NATIVE", "1") == "0":
        pytest.skip("REPDIAG_NATIVE=0: the C kernel is switched off on purpose")
    assert _native.available(), (
        "repdiag.capture._mapstats did not build; reinstall with a C compiler present "
        "(pip's log of `pip install -e .` shows why)")
    assert _native.enabled()


needs_kernel = pytest.mark.skipif(not _native.available(), reason="C kernel not built (test_kernel_is_built fails)")


def _fold(batches: list[torch.Tensor], eps: float = 0.0, native: bool = True) -> tuple[StreamingStats, list]:
    s = StreamingStats(batches[0].shape[1], torch.device("cpu"), eps=eps)
    calls = []
    kernel = _native.update_maps

    def counted(st: StreamingStats, x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return kernel(st, x)

    with _native.use_native(native), pytest.MonkeyPatch.context() as mp:
        mp.setattr(_native, "update_maps", counted)
        means = [s.update(b) for b in batches]
    assert len(calls) == (len(batches) if native else 0)
    return s, means


def _check_against_definitions(s: StreamingStats, batches: list[torch.Tensor], eps: float, tol: dict) -> None:
    full = torch.cat([b.double() for b in batches])  # (N, D, *positions)
    n, d = full.shape[:2]
    units = full.transpose(0, 1).reshape(d, -1)
    zero = full.abs() <= eps
    assert s.samples == n and s.batches == len(batches) and s.entries_per_unit == units.shape[1]
    torch.testing.assert_close(s.zeros, zero.transpose(0, 1).reshape(d, -1).sum(1), rtol=0, atol=0)
    torch.testing.assert_close(s.zero_maps, zero.reshape(n, d, -1).all(2).sum(0), rtol=0, atol=0)
    torch.testing.assert_close(s.sample_zero_hist, zero_hist(zero.reshape(n, -1)), rtol=0, atol=0)
    torch.testing.assert_close(s.nonfinite, (~full.reshape(n, d, -1).sum(2).isfinite()).sum(0), rtol=0, atol=0)
    torch.testing.assert_close(s.min, units.amin(1), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(s.max, units.amax(1), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(s.mean, units.mean(1), **tol, equal_nan=True)
    torch.testing.assert_close(s.var(), units.var(1, correction=0), **tol, equal_nan=True)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (4, 3, 511), (2, 6, 512), (5, 2, 513), (2, 3, 33, 47),
                                   (64, 16, 8, 8), (3, 2, 2, 3, 5)])
def test_kernel_matches_definitions(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    batches = []
    for k in range(2):  # two batches: the merge across calls is exercised too
        x = torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 0.5
        x = torch.where(torch.rand(shape, generator=g, dtype=torch.float64) < 0.3, 0.0, x).to(dtype)
        x[0, 0] = 0.0  # a whole map zero
        batches.append(x)
    eps = 0.25
    s, means = _fold(batches, eps)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else (
        {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5})
    _check_against_definitions(s, batches, eps, tol)
    for b, m in zip(batches, means):
        assert m.dtype == torch.float64 and m.shape == b.shape[:2]
        torch.testing.assert_close(m, b.double().flatten(2).mean(2), **tol)


@needs_kernel
def test_kernel_hand_worked() -> None:
    # two samples, two units, maps of four entries (worked out by hand in the comments)
    x = torch.tensor([[[1.0, -2.0, 0.0, 3.0], [0.5, 0.5, -0.0, 0.0]],
                      [[4.0, 0.0, 0.0, 0.0], [-1.0, -1.0, -1.0, 2.0]]])
    s, (means,) = _fold([x])
    torch.testing.assert_close(means, torch.tensor([[0.5, 0.25], [1.0, -0.25]], dtype=torch.float64))
    torch.testing.assert_close(s.zeros, torch.tensor([4, 2]))       # -0.0 counts as zero
    torch.testing.assert_close(s.zero_maps, torch.tensor([0, 0]))
    torch.testing.assert_close(s.mean, torch.tensor([0.75, 0.0], dtype=torch.float64))  # 6/8, 0/8
    torch.testing.assert_close(s.var(), torch.tensor([3.1875, 0.9375], dtype=torch.float64))  # 30/8 - 0.75^2, 7.5/8
    torch.testing.assert_close(s.min, torch.tensor([-2.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(s.max, torch.tensor([4.0, 2.0], dtype=torch.float64))
    assert s.sample_zero_hist[375] == 2 and s.sample_zero_hist.sum() == 2  # 3 zeros of 8 each: 0.375
    s, _ = _fold([x], eps=0.5)
    torch.testing.assert_close(s.zeros, torch.tensor([4, 4]))  # |x| <= eps
    torch.testing.assert_close(s.zero_maps, torch.tensor([0, 1]))
    # histogram rounding, halves up: 1 and 3 zeros of 2000 entries are 0.5 and 1.5 thousandths
    y = torch.ones(2, 1, 2000)
    y[0, 0, :1] = 0.0
    y[1, 0, :3] = 0.0
    s, _ = _fold([y])
    assert s.sample_zero_hist[1] == 1 and s.sample_zero_hist[2] == 1


@needs_kernel
def test_kernel_invariances() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.relu(torch.randn(12, 4, 700, generator=g))
    s, (means,) = _fold([x])
    fields = ("zeros", "zero_maps", "nonfinite", "sample_zero_hist", "min", "max")
    # order of entries inside a map, order of samples, and one batch against two
    perm = x[:, :, torch.randperm(700, generator=g)]
    order = torch.randperm(12, generator=g)
    for name, batches in (("entries", [perm]), ("samples", [x[order]]), ("split", [x[:5], x[5:]])):
        t, m = _fold(batches)
        for f in fields:
            assert torch.equal(getattr(t, f), getattr(s, f)), (name, f)
        torch.testing.assert_close(t.mean, s.mean, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(t.var(), s.var(), rtol=1e-6, atol=1e-9)
        if name == "samples":
            torch.testing.assert_close(m[0], means[order], rtol=1e-6, atol=1e-9)
    # a shift moves the mean and the extremes by the shift and leaves the variance
    t, _ = _fold([x + 10.0])
    torch.testing.assert_close(t.mean, s.mean + 10.0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(t.var(), s.var(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(t.min, s.min + 10.0)


@needs_kernel
def test_kernel_nonfinite_like_torch() -> None:
    x = torch.randn(3, 4, 9, 9)
    x[1, 0, 2, 2] = float("nan")
    x[0, 1, 0, 0] = float("inf")
    x[2, 2, 3, 3] = float("-inf")
    x[0, 3, 1, 1] = float("nan")
    x[2, 3, 1, 1] = float("inf")
    s, _ = _fold([x, torch.randn(2, 4, 9, 9)])
    e, _ = _fold([x, torch.randn(2, 4, 9, 9)], native=False)
    torch.testing.assert_close(s.nonfinite, torch.tensor([1, 1, 1, 2]))
    for f in ("zeros", "zero_maps", "nonfinite", "sample_zero_hist", "min", "max"):
        torch.testing.assert_close(getattr(s, f), getattr(e, f), rtol=0, atol=0, equal_nan=True)
    assert s.min[0].isnan() and s.max[3].isnan() and s.max[1] == float("inf") and s.min[2] == float("-inf")


@needs_kernel
def test_kernel_reads_only() -> None:
    x = torch.randn(8, 3, 5, 5)
    before = x.clone()
    _fold([x])
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
    a, ma = _fold(batches, eps=1e-3, native=True)
    b, mb = _fold(batches, eps=1e-3, native=False)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype in (torch.float32, torch.float64) else {"rtol": 1e-3, "atol": 1e-3}
    for u, v in zip(ma, mb):
        torch.testing.assert_close(u, v, **tol)
    for name in ("zeros", "zero_maps", "nonfinite", "sample_zero_hist", "min", "max"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)
    torch.testing.assert_close(a.mean, b.mean, **tol)
    torch.testing.assert_close(a.var(), b.var(), **tol)
    assert (a.entries_per_unit, a.samples, a.batches) == (b.entries_per_unit, b.samples, b.batches)


def test_kernel_rejects_what_it_cannot_take() -> None:
    s = StreamingStats(3, torch.device("cpu"))
    with pytest.raises(ValueError, match="shape \\(batch, units, \\*positions\\)"):
        _native.update_maps(s, torch.zeros(4, 3))  # 2-D: the eager path's job


@needs_kernel
def test_kernel_rejects_foreign_state() -> None:
    s = StreamingStats(3, torch.device("cpu"))
    s.mean = s.mean.float()
    with pytest.raises(ValueError, match="must be contiguous"):
        _native.update_maps(s, torch.zeros(4, 3, 2))


@needs_kernel
def test_switch_turns_kernel_off() -> None:
    with _native.use_native(False):
        assert not _native.enabled() and not _native.takes(torch.zeros(2, 3, 4))
    _fold([torch.randn(3, 2, 4, 4)], native=False)  # asserts the kernel was not called
    assert _native.enabled() == (os.environ.get("REPDIAG_NATIVE", "1") != "0")
    assert HIST_BINS == 1001
