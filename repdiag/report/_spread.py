"""Independent, picklable jobs of the report (UMAP fits, figures) spread over spawned processes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["spread"]

T = TypeVar("T")


def spread(fn: Callable[[Any], T], items: Sequence[Any], *, workers: int = 1,
           done: Callable[[int], None] | None = None, initializer: Callable[[], None] | None = None) -> list[T]:
    """``[fn(x) for x in items]`` with up to ``workers`` jobs at once.

    With ``workers > 1``, ``workers - 1`` spawned processes (``initializer`` run once in each)
    take queued jobs while this process runs the first and then, in order, every job no worker has
    started. ``done(i)`` is called here as job ``i`` finishes. A pool that cannot start or breaks
    leaves its jobs to this process. ``fn`` and the items must pickle; spawned workers import the
    main module again (a script needs the ``if __name__ == "__main__":`` guard)."""
    out: dict[int, T] = {}

    def local(i: int) -> None:
        out[i] = fn(items[i])
        if done:
            done(i)

    if workers <= 1 or len(items) < 2:
        for i in range(len(items)):
            local(i)
        return [out[i] for i in range(len(items))]
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    futures: dict[int, Future[T]] = {}
    pool = None
    try:
        pool = ProcessPoolExecutor(workers - 1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=initializer)
        for i in range(1, len(items)):
            futures[i] = pool.submit(fn, items[i])
    except OSError:  # no processes here: what was not submitted runs in this process
        pass
    reported: set[int] = set()

    def collect(block: bool) -> None:  # the workers' finished jobs, reported here as they end
        pending = {fut: i for i, fut in futures.items() if i not in reported and not fut.cancelled()}
        for fut in as_completed(pending) if block else [f for f in pending if f.done()]:
            i = pending[fut]
            try:
                out[i] = fut.result()
            except BrokenProcessPool:
                out[i] = fn(items[i])
            reported.add(i)
            if done:
                done(i)

    try:
        local(0)
        for i in range(1, len(items)):  # in order: what no worker took, this process does
            collect(block=False)
            fut = futures.get(i)
            if fut is None or fut.cancel():
                local(i)
        collect(block=True)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return [out[i] for i in range(len(items))]
