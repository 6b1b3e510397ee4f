"""The optional C kernel behind the conv-map statistics on CPU (``repdiag.capture._mapstats``).

The eager reductions in :mod:`._stats` read each activation five times; the kernel reads it once
(``benchmarks/capture_overhead.py`` and ``benchmarks/capture_chunk.py`` measure both). It is
built at install time where a C compiler is present and used for contiguous float32/float64 CPU
activations; everything else, and every install without it, takes the eager path, which gives
the same statistics. ``REPDIAG_NATIVE=0`` in the environment, or :func:`use_native`, turns it off.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import torch
from torch import Tensor

__all__ = ["available", "enabled", "map_stats", "use_native", "usable"]

_ext: ModuleType | None
try:
    _ext = importlib.import_module(f"{__package__}._mapstats")
except ImportError:  # no compiler at install time: the eager path serves
    _ext = None

_enabled = os.environ.get("REPDIAG_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def available() -> bool:
    """Whether the C kernel was built and imports."""
    return _ext is not None


def enabled() -> bool:
    """Whether the C kernel is built and switched on."""
    return _ext is not None and _enabled


@contextmanager
def use_native(on: bool) -> Iterator[None]:
    """Switch the C kernel on or off inside a ``with`` block (tests and benchmarks compare the two)."""
    global _enabled
    before, _enabled = _enabled, bool(on)
    try:
        yield
    finally:
        _enabled = before


def usable(rows: Tensor) -> bool:
    """Whether :func:`map_stats` can take ``rows``: a contiguous float32/float64 CPU tensor."""
    return (_ext is not None and _enabled and rows.device.type == "cpu" and rows.is_contiguous()
            and rows.dtype in (torch.float32, torch.float64))


def map_stats(rows: Tensor, n: int, d: int, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-map sum, sum of squares (float64, ``(n, d)``), per-unit min and max (``(d,)``, NaN where
    a unit saw a NaN) and per-map zero counts (``|x| <= eps``, ``(n, d)``) of ``rows``, the
    contiguous ``(n * d, p)`` maps of an ``(n, d, *positions)`` activation, in one pass.

    The caller checks :func:`usable` first.
    """
    assert _ext is not None
    p = rows.shape[1] if rows.ndim == 2 else 1
    s1 = torch.empty(n, d, dtype=torch.float64)
    s2 = torch.empty(n, d, dtype=torch.float64)
    zc = torch.empty(n, d, dtype=rows.dtype)
    mn = torch.empty(d, dtype=rows.dtype)
    mx = torch.empty(d, dtype=rows.dtype)
    _ext.map_stats(rows.data_ptr(), n, d, p, float(eps), rows.element_size(), s1.data_ptr(), s2.data_ptr(),
                   zc.data_ptr(), mn.data_ptr(), mx.data_ptr())
    return s1, s2, mn, mx, zc
