"""Shared benchmark helpers: side-by-side timing with alternating repeats, median ratios."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence


def machine() -> str:
    """One line naming the machine and the versions that matter."""
    import os

    import torch

    cores = os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {cores} cores, {dev}; Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)")


def kernel_status() -> str:
    """One line saying whether repdiag's C kernel for the capture statistics is built and on."""
    from repdiag.capture import _native

    state = ("built, in use" if _native.enabled() else "built, switched off" if _native.available()
             else "NOT BUILT (PyTorch reductions in use)")
    return f"C kernel: {state}"


def alternate(fns: Sequence[Callable[[], None]], repeats: int, sync: Callable[[], None] = lambda: None,
              warmup: int = 1) -> list[list[float]]:
    """Time each of ``fns`` ``repeats`` times, interleaved (a, b, a, b, ...), after ``warmup``
    untimed rounds; return the seconds of each call per function."""
    for _ in range(warmup):
        for f in fns:
            f()
    sync()
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            sync()
            t0 = time.perf_counter()
            fns[i]()
            sync()
            times[i].append(time.perf_counter() - t0)
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median of the per-repeat ratios num[i] / den[i] (pairs taken side by side)."""
    return statistics.median(a / b for a, b in zip(num, den))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
