"""The precision the metric pass computes in: half and bfloat16 inputs are upcast to float32, and
inputs whose magnitude float32 cannot square and sum (beyond about 1e19, or below about 1e-19) are
rescaled by a power of two first.

Multiplying by a power of two is exact in binary floating point (short of overflow and of the
subnormal range), and every operation of the kernels commutes with it exactly, so a
scale-invariant index (silhouette, Davies–Bouldin, Calinski–Harabasz, CKA, the spectrum's
dimensions, k-means labels) computed on the rescaled input is the index of the input itself, and
a scale-dependent value (a distance, centres, inertia) is the rescaled one times the factor (its
square for inertia). Inputs already in the safe range are left untouched, so the usual case costs
one pass for the maximum and changes no bit of any result.

Callers check shapes first; :func:`checked_rescaled` checks finiteness with the scale, in the
same transfer to the host (a non-finite maximum would give no scale).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .._validation import nonfinite_count, raise_nonfinite
from ._device import fetch, host_path

__all__ = ["compute_dtype", "metric_input", "rescaled", "checked_rescaled", "rescaled_on_device", "scale_for",
           "SAFE_LOW", "SAFE_HIGH"]

SAFE_LOW = 2.0 ** -16
"""Largest magnitudes at or above this (and at or below :data:`SAFE_HIGH`) are kept as they are:
float32 squares, sums of ``n * d`` squares and fourth powers of singular values stay normal and
finite for ``n * d`` up to about 1e9."""
SAFE_HIGH = 2.0 ** 16


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half, bfloat16 (and any other floating dtype below 32 bits), else ``dtype``."""
    if dtype in (torch.float32, torch.float64) or not dtype.is_floating_point:
        return dtype
    return torch.float32


def _max_abs(x: Tensor) -> Tensor:
    """Largest ``|x|`` as a 0-d tensor on ``x``'s device (0 for an empty ``x``); no sync."""
    if not x.numel():
        return torch.zeros((), dtype=torch.float64, device=x.device)
    # the inf-norm reads x once without the copy x.abs() would allocate
    return torch.linalg.vector_norm(x, float("inf"))


def scale_for(m: float) -> float:
    """The power of two ``2**e`` that brings a largest magnitude ``m`` into ``[0.5, 1)``, or 1 when
    ``m`` already lies in ``[SAFE_LOW, SAFE_HIGH]`` (or is 0, or is not finite)."""
    if m == 0.0 or SAFE_LOW <= m <= SAFE_HIGH or not math.isfinite(m):
        return 1.0
    return math.ldexp(1.0, math.frexp(m)[1])


def _scale_of(xs: tuple[Tensor, ...]) -> float:
    """:func:`scale_for` the largest ``|x|`` of ``xs``; the maxima reach the host in one transfer."""
    if not xs:
        return 1.0
    return scale_for(max(float(a.max()) for a in fetch(*(_max_abs(x) for x in xs))))


def _apply(ys: tuple[Tensor, ...], s: float) -> tuple[tuple[Tensor, ...], float]:
    if s == 1.0:
        return ys, 1.0
    return tuple(y * (1.0 / s) for y in ys), s  # 1/s is a power of two as well: exact


def rescaled(*xs: Tensor) -> tuple[tuple[Tensor, ...], float]:
    """``xs`` in their compute dtype, divided by one common power of two ``s``; returns them and
    ``s`` (1.0 when no rescale was needed). A distance on the returned tensors times ``s`` is the
    distance on the inputs. One host sync (the maxima) on an accelerator."""
    ys = tuple(x.to(compute_dtype(x.dtype)) for x in xs)
    return _apply(ys, _scale_of(ys))


def checked_rescaled(named: Sequence[tuple[Tensor, str]], extra: Sequence[Tensor] = ()
                     ) -> tuple[tuple[Tensor, ...], float, list[np.ndarray]]:
    """:func:`rescaled` of the tensors of ``named`` after checking each is finite (the first that
    is not raises :class:`NonFiniteError` with its name, as ``check_finite``), and the host values
    of ``extra`` (labels, flags): the counts, the maxima and ``extra`` come to the host in one
    transfer, the kernel's one host sync."""
    ys = tuple(x.to(compute_dtype(x.dtype)) for x, _ in named)
    got = fetch(*(nonfinite_count(y) for y in ys), *(_max_abs(y) for y in ys), *extra)
    for (x, what), bad in zip(named, got):
        raise_nonfinite(int(bad[0]), x, what)
    m = max((float(a[0]) for a in got[len(ys):2 * len(ys)]), default=0.0)
    ys, s = _apply(ys, scale_for(m))
    return ys, s, got[2 * len(ys):]


def rescaled_on_device(*xs: Tensor) -> tuple[tuple[Tensor, ...], float | Tensor]:
    """:func:`rescaled` without a host sync: on an accelerator the power of two is a 0-d tensor
    computed on the device and every input is multiplied by it (by exactly 1 in the safe range, so
    no bit changes; one more pass over the data in exchange for not waiting). On the host path
    this is :func:`rescaled`."""
    if not xs or all(host_path(x) for x in xs):
        return rescaled(*xs)
    ys = tuple(x.to(compute_dtype(x.dtype)) for x in xs)
    m = torch.stack([_max_abs(y).to(device=ys[0].device, dtype=torch.float64) for y in ys]).max()
    e = torch.frexp(m).exponent.to(torch.float64)
    keep = (m == 0) | ((m >= SAFE_LOW) & (m <= SAFE_HIGH)) | ~torch.isfinite(m)
    s = torch.where(keep, torch.ones_like(m), torch.exp2(e))
    return tuple(y * (1.0 / s).to(device=y.device, dtype=y.dtype) for y in ys), s


def metric_input(x: Tensor) -> Tensor:
    """``x`` ready for a scale-invariant index: compute dtype, rescaled into the safe range."""
    return rescaled(x)[0][0]
