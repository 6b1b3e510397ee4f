"""Sparsity kernels: by hand, against numpy loops, invariances, shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from repdiag import ConfigError, RepdiagWarning, ShapeError
from repdiag.functional import (
    channel_sparsity,
    dead_units,
    element_sparsity,
    histogram_quantiles,
    sample_sparsity,
    sparsity,
)

from .conftest import DEVICES


def _relu_maps(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(shape, generator=g, dtype=torch.float64) - 0.3)


def test_hand_worked() -> None:
    x = torch.tensor([[0.0, 1.0], [0.0, 0.0], [2.0, 3.0]])
    assert_close(sparsity(x), torch.tensor([2 / 3, 1 / 3]))
    assert_close(element_sparsity(x), torch.tensor(0.5))
    assert_close(sample_sparsity(x), torch.tensor([0.5, 1.0, 0.0]))
    assert dead_units(torch.tensor([[0.0, 1.0], [0.0, 0.0]])).tolist() == [True, False]
    maps = torch.tensor([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, 0.0]]])
    assert_close(channel_sparsity(maps), torch.tensor([0.75, 0.75]))
    assert_close(channel_sparsity(maps, reading="maps"), torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("shape", [(7, 3), (5, 4, 3, 3), (2, 1, 6)])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_against_numpy_loops(shape: tuple[int, ...], eps: float) -> None:
    x = _relu_maps(shape)
    a = x.numpy()
    z = np.abs(a) <= eps
    n, c = shape[0], shape[1]
    want_entries = [z[:, j].mean() for j in range(c)]
    want_maps = [np.mean([z[i, j].all() for i in range(n)]) for j in range(c)]
    want_samples = [z[i].mean() for i in range(n)]
    assert_close(channel_sparsity(x, eps=eps), torch.tensor(want_entries, dtype=torch.float64))
    assert_close(channel_sparsity(x, eps=eps, reading="maps"), torch.tensor(want_maps, dtype=torch.float64))
    assert_close(sample_sparsity(x, eps=eps), torch.tensor(want_samples, dtype=torch.float64))
    assert_close(element_sparsity(x, eps=eps), torch.tensor(z.mean(), dtype=torch.float64))
    # the mean over channels of the entries reading is the element sparsity
    assert_close(channel_sparsity(x, eps=eps).mean(), element_sparsity(x, eps=eps))
    assert dead_units(x, eps=eps).tolist() == [bool(z[:, j].all()) for j in range(c)]


def test_invariances() -> None:
    x = _relu_maps((9, 4, 2, 2))
    perm = torch.randperm(9)
    assert_close(channel_sparsity(x[perm]), channel_sparsity(x))
    assert_close(channel_sparsity(x * 3.0, reading="maps"), channel_sparsity(x, reading="maps"))
    assert_close(sample_sparsity(x[perm]), sample_sparsity(x)[perm])
    flat = x.flatten(1)
    assert_close(sparsity(flat).mean(), element_sparsity(x))


def test_histogram_quantiles_match_numpy() -> None:
    rng = np.random.default_rng(0)
    vals = rng.integers(0, 1001, 500) / 1000
    counts = torch.bincount(torch.tensor(np.round(vals * 1000)).long(), minlength=1001)
    q = [0.0, 0.1, 0.5, 0.9, 1.0]
    want = np.quantile(vals, q, method="inverted_cdf")
    assert_close(histogram_quantiles(counts, q), torch.tensor(want, dtype=torch.float64))
    with pytest.warns(RepdiagWarning, match="histogram is empty"):
        assert torch.isnan(histogram_quantiles(torch.zeros(5), [0.5])).all()
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        histogram_quantiles(counts, [1.5])


def test_bad_input() -> None:
    with pytest.raises(ShapeError, match="n_samples"):
        channel_sparsity(torch.zeros(5))
    with pytest.raises(ShapeError, match="at least one"):
        sample_sparsity(torch.zeros(0, 3))
    with pytest.raises(ConfigError, match="reading"):
        channel_sparsity(torch.zeros(2, 2), reading="rows")
    with pytest.raises(ConfigError, match="eps"):
        sparsity(torch.zeros(2, 2), eps=-1.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_and_dtype(device: str, dtype: torch.dtype) -> None:
    x = _relu_maps((4, 3, 2)).to(device=device, dtype=dtype)
    for v in (channel_sparsity(x), sample_sparsity(x), element_sparsity(x), sparsity(x[:, :, 0])):
        assert v.device.type == device and v.dtype == dtype
    assert sparsity(torch.tensor([[0, 1], [0, 0]])).dtype == torch.get_default_dtype()
