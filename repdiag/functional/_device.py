"""Where a kernel runs its host path, and how values cross between host and device.

On CPU, reading a tensor's value on the host is free, and several kernels take a host path there
(numpy's BLAS and sort, early exits decided by ``bool(...)``). On an accelerator every such read
waits for the device to finish all queued work (a *host sync*), so the accelerator paths compute
flags as tensors and bring them, with the labels, to the host in one transfer (:func:`fetch`).
:func:`host_path` is the one place that decides between the two; tests run the accelerator paths
on CPU tensors inside :func:`accelerator_paths` (a private switch, not an option for users) and
check they give the host paths' numbers.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = ["host_path", "accelerator_paths", "available_cores", "fetch", "to_device", "label_codes"]

# False outside accelerator_paths(); a context variable, so a test's switch cannot leak into
# another thread or outlive its ``with`` block.
_FORCE_ACCELERATOR: contextvars.ContextVar[bool] = contextvars.ContextVar("repdiag_force_accelerator",
                                                                            default=False)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_path(t: Tensor) -> bool:
    """True when kernels on ``t`` take their host path: ``t`` is on the CPU (and no test forces the
    accelerator paths)."""
    return t.device.type == "cpu" and not _FORCE_ACCELERATOR.get()


@contextlib.contextmanager
def accelerator_paths() -> Iterator[None]:
    """Run the accelerator code paths on CPU tensors (for tests; the numbers must not change)."""
    token = _FORCE_ACCELERATOR.set(True)
    try:
        yield
    finally:
        _FORCE_ACCELERATOR.reset(token)


def fetch(*tensors: Tensor) -> list[np.ndarray]:
    """The values of ``tensors`` on the host as flat numpy arrays (int64 for integer and bool
    tensors, float64 for floating ones), in one device-to-host transfer per device: a single
    host sync however many tensors are asked for.

    On the host path the tensors are read in place (no copy). Otherwise each tensor is flattened
    and packed into one int64 buffer (floats as the bits of their float64 value, so nothing is
    rounded), copied once, and unpacked."""
    out: list[np.ndarray | None] = [None] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        if host_path(t):
            t = t.detach().reshape(-1)
            out[i] = (t.to(torch.float64) if t.is_floating_point() else t.to(torch.int64)).numpy()
        else:
            by_device.setdefault(t.device, []).append(i)
    for idx in by_device.values():
        parts = [tensors[i].detach().reshape(-1) for i in idx]
        packed = torch.cat([p.to(torch.float64).view(torch.int64) if p.is_floating_point() else p.to(torch.int64)
                            for p in parts]).cpu().numpy()
        at = 0
        for i, p in zip(idx, parts):
            a = packed[at:at + p.numel()]
            out[i] = a.view(np.float64) if p.is_floating_point() else a
            at += p.numel()
    return [a for a in out if a is not None]


def to_device(a: np.ndarray | Tensor, device: torch.device) -> Tensor:
    """A host array on ``device`` without waiting for the device: to CUDA through pinned memory
    with ``non_blocking=True`` (a copy from pageable memory would synchronise)."""
    t = torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def label_codes(host_labels: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor, int]:
    """Labels (a host copy) mapped to ``0..k-1`` in sorted order of the distinct values, with the
    class sizes, both int64 on ``device``, and ``k``; the work is done on the host (labels are
    small), the results travel without a sync (:func:`to_device`)."""
    _, inverse, counts = np.unique(host_labels, return_inverse=True, return_counts=True)
    return (to_device(inverse.reshape(-1).astype(np.int64), device),
            to_device(counts.astype(np.int64), device), int(counts.size))
