"""The optional C kernel behind the conv-map statistics on CPU (``repdiag.capture._mapstats``).

The eager path of :meth:`StreamingStats.update` reads each activation five times and folds the
results into the running state with some forty small tensor ops; the kernel reads it once and
updates the state in place (``benchmarks/capture_overhead.py`` and ``benchmarks/capture_chunk.py``
measure both). It is built at install time where a C compiler is present and used for every CPU
activation with positions (conv maps; half and bfloat16 are read as float32); 2-D activations,
GPU tensors and every install without it take the eager path, which gives the same statistics.
``REPDIAG_NATIVE=0`` in the environment, or :func:`use_native`, turns it off.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from ._stats import StreamingStats

__all__ = ["available", "enabled", "takes", "update_maps", "use_native"]

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


def takes(x: Tensor) -> bool:
    """Whether :meth:`StreamingStats.update` hands the activation ``x`` ``(batch, units,
    *positions)`` to the kernel: a CPU tensor with positions, the kernel built and switched on."""
    return _enabled and _fits(x)


def _fits(x: Tensor) -> bool:
    return (_ext is not None and x.device.type == "cpu" and x.ndim > 2 and x.shape[0] > 0 and x.shape[1] > 0
            and x[0, 0].numel() > 0)


def update_maps(stats: StreamingStats, x: Tensor) -> Tensor:
    """Fold the activation ``x`` ``(n, d, *positions)`` into ``stats`` in one pass and return its
    per-map means ``(n, d)`` in float64, as :meth:`StreamingStats.update` does on the eager path
    (the caller adds the entry, sample and batch counts). Half and bfloat16 are read as float32;
    a non-contiguous ``x`` is copied first. The caller checks :func:`takes` first.
    """
    if _ext is None or not _fits(x):
        raise ValueError(f"update_maps takes a CPU activation of shape (batch, units, *positions) with the "
                         f"kernel built; got {tuple(x.shape)} on {x.device} (built: {_ext is not None})")
    n, d = x.shape[0], x.shape[1]
    p = x[0, 0].numel()
    fdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    rows = x.reshape(n, d, p).to(fdt).contiguous()
    state = (stats.mean, stats.m2, stats.min, stats.max, stats.zeros, stats.zero_maps, stats.nonfinite)
    want = (torch.float64,) * 4 + (torch.int64,) * 3
    for t, dt in zip(state, want):
        if t.dtype != dt or t.device.type != "cpu" or not t.is_contiguous() or t.shape != (d,):
            raise ValueError(f"StreamingStats state for the kernel must be contiguous ({d},) {dt} CPU tensors; "
                             f"got {tuple(t.shape)} {t.dtype} on {t.device}")
    hist = stats.sample_zero_hist
    means = torch.empty(n, d, dtype=torch.float64)
    _ext.update_maps(rows.data_ptr(), n, d, p, float(stats.eps), rows.element_size(), stats.entries_per_unit,
                     means.data_ptr(), *(t.data_ptr() for t in state), hist.data_ptr(), hist.numel())
    return means
