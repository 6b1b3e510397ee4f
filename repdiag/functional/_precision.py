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

This module does not validate; callers check shape and finiteness first (a non-finite maximum
would give no scale).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["compute_dtype", "metric_input", "rescaled", "SAFE_LOW", "SAFE_HIGH"]

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


def _scale_of(xs: tuple[Tensor, ...]) -> float:
    """The power of two ``2**e`` that brings the largest ``|x|`` of ``xs`` into ``[0.5, 1)``, or 1
    when that maximum already lies in ``[SAFE_LOW, SAFE_HIGH]`` (or is 0)."""
    # the inf-norm reads x once without the copy x.abs() would allocate; one host sync per input
    m = max((float(torch.linalg.vector_norm(x, float("inf"))) for x in xs if x.numel()), default=0.0)
    if m == 0.0 or SAFE_LOW <= m <= SAFE_HIGH or not math.isfinite(m):
        return 1.0
    return math.ldexp(1.0, math.frexp(m)[1])


def rescaled(*xs: Tensor) -> tuple[tuple[Tensor, ...], float]:
    """``xs`` in their compute dtype, divided by one common power of two ``s``; returns them and
    ``s`` (1.0 when no rescale was needed). A distance on the returned tensors times ``s`` is the
    distance on the inputs."""
    ys = tuple(x.to(compute_dtype(x.dtype)) for x in xs)
    s = _scale_of(ys)
    if s == 1.0:
        return ys, 1.0
    return tuple(y * (1.0 / s) for y in ys), s  # 1/s is a power of two as well: exact


def metric_input(x: Tensor) -> Tensor:
    """``x`` ready for a scale-invariant index: compute dtype, rescaled into the safe range."""
    return rescaled(x)[0][0]
