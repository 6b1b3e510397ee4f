"""2-D embeddings of a layer's samples for the report's scatter plots: UMAP or PCA."""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .._errors import ConfigError
from ..functional._device import available_cores  # noqa: F401 - re-exported

__all__ = ["EMBEDDINGS", "embed", "embed_many", "embed_workers", "enable_numba_cache", "load_umap", "numba_cache_dir", "umap_cache_warm",
           "warm_up_umap"]

EMBEDDINGS: tuple[str, ...] = ("umap", "pca", "none")


def _usable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def numba_cache_dir() -> Path:
    """Where numba keeps compiled UMAP code between runs: ``$NUMBA_CACHE_DIR`` when set, else
    ``$XDG_CACHE_HOME/repdiag/numba`` (``~/.cache/repdiag/numba``), else, where the home is
    read-only, ``repdiag-numba-<uid>`` in the temporary directory; this sets it for numba.

    Without an on-disk cache every process spends ~30 s compiling UMAP and pynndescent; with it,
    ~2.5 s importing umap and ~0.2 s loading the rest with the first fit (:func:`load_umap`).
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    candidates = [base / "repdiag" / "numba", Path(tempfile.gettempdir()) / f"repdiag-numba-{uid}"]
    path = next((c for c in candidates if _usable(c)), None)
    if path is None:  # nowhere writable: numba's own locators decide (next to the sources, or no cache)
        return candidates[0]
    os.environ["NUMBA_CACHE_DIR"] = str(path)
    if "numba" in sys.modules:  # imported before this ran: numba reads its settings once, at import
        sys.modules["numba"].core.config.reload_config()
    return path


CACHED_PACKAGES = ("umap", "pynndescent")
"""Packages whose numba functions :func:`load_umap` caches on disk."""


def enable_numba_cache(packages: Sequence[str] = CACHED_PACKAGES) -> int:
    """Give every module-level numba function of ``packages`` (already imported) that has no
    on-disk cache one, as ``@njit(cache=True)`` would; returns how many were switched.

    umap-learn 0.5 declares ``cache=True`` on one of its ~120 numba functions
    (pynndescent on most of its own), so without this every process compiled UMAP's layout,
    fuzzy set and spectral code again (~12 s of a ~13 s first fit, cache or not). A function
    numba cannot cache (dynamic globals) is compiled as before, with a numba warning. Idempotent.
    """
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    switched = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in packages:
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and isinstance(getattr(obj, "_cache", None), NullCache):
                try:
                    obj.enable_caching()
                except (RuntimeError, OSError):  # no cache locator for its file: stays uncached
                    continue
                switched += 1
    return switched


def load_umap() -> ModuleType:
    """Import umap-learn with numba's on-disk cache (:func:`numba_cache_dir`) set and switched
    on for its functions (:func:`enable_numba_cache`): the first process on a machine compiles,
    later ones load."""
    numba_cache_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba / umap import chatter
        import umap
    enable_numba_cache()
    return umap


def umap_cache_warm() -> bool:
    """Whether numba's cache (:func:`numba_cache_dir`) already holds UMAP's compiled layout code,
    i.e. whether the first UMAP fit of this process loads (~3 s) rather than compiles (~30-45 s
    on a 2-core CPU). A guess from the index files: a cache of another umap install reads warm."""
    root = numba_cache_dir()
    try:
        return any(root.glob("umap_*/layouts._optimize_layout_euclidean_single_epoch-*.nbi"))
    except OSError:
        return False


def warm_up_umap() -> None:
    """Import umap and fit 64 points once, so every numba function a report's fits call is
    compiled (first use on a machine) or loaded from the cache before the timed work starts;
    later fits of any size then cost about the same each."""
    rng = np.random.default_rng(0)
    embed(rng.normal(size=(64, 8)) + np.repeat(np.arange(4.0), 16)[:, None], "umap", seed=0)


def _pca(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=0, keepdims=True)
    if xc.shape[1] == 1:
        return np.concatenate([xc, np.zeros_like(xc)], axis=1)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    out = xc @ vt[:2].T
    if out.shape[1] < 2:
        out = np.concatenate([out, np.zeros((out.shape[0], 2 - out.shape[1]))], axis=1)
    return out


def embed(x: Any, method: str = "umap", *, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """Embed ``x`` of shape ``(n, d)`` in 2-D; returns a float64 array ``(n, 2)``.

    ``"umap"`` uses umap-learn (``n_neighbors`` capped at ``n - 1``, seeded, single-threaded so
    results repeat); ``"pca"`` the top two principal components (exact SVD). Constant or tiny
    inputs (``n < 4`` for UMAP) fall back to PCA.

    >>> embed(np.eye(5), "pca").shape
    (5, 2)
    """
    if method not in ("umap", "pca"):
        raise ConfigError(f"embedding must be 'umap' or 'pca'; got {method!r}.")
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if arr.ndim != 2:
        raise ConfigError(f"x must have shape (n_samples, n_features); got {arr.shape}.")
    finite = np.isfinite(arr).all(axis=1)
    arr = np.where(np.isfinite(arr), arr, 0.0)
    n = arr.shape[0]
    if method == "pca" or n < 4 or float(arr.std()) == 0.0:
        out = _pca(arr)
    else:
        umap = load_umap()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # umap/numba chatter (n_jobs with random_state, ...)
            reducer = umap.UMAP(n_neighbors=max(2, min(n_neighbors, n - 1)), n_components=2, random_state=seed,
                                n_jobs=1, init="spectral" if n > 10 else "random")
            out = np.asarray(reducer.fit_transform(arr.astype(np.float32)), dtype=np.float64)
    out[~finite] = np.nan
    return out


def embed_workers(n_items: int, cores: int | None = None) -> int:
    """Concurrent fits for ``n_items`` embeddings: one on 2 cores or fewer (a spawned worker's
    ~3 s umap import costs more than it saves there: ``benchmarks/report.py``), else
    ``min(n_items, cores - 1)``, one core left for the rest of the machine."""
    cores = available_cores() if cores is None else cores
    return 1 if cores <= 2 else max(1, min(n_items, cores - 1))


def _worker_init() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # each worker is one fit at a time: one BLAS thread, no oversubscription
    load_umap()


def embed_many(xs: Sequence[Any], method: str = "umap", *, seed: int = 0, workers: int = 1,
               done: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """``[embed(x, method, seed=seed) for x in xs]``, bitwise, with up to ``workers`` fits at once
    (``repdiag report`` passes :func:`embed_workers`; PCA always runs here, it is instant).

    With ``workers > 1`` the fits run in spawned processes (numba's UMAP code holds the GIL, so
    threads gain nothing; :func:`repdiag.report._spread.spread`); each fit is single-threaded and
    seeded, so where it runs does not change its result. ``done(i)`` is called here as fit ``i``
    finishes. Spawned workers import the main module again: a script that calls this with
    ``workers > 1`` needs the ``if __name__ == "__main__":`` guard.
    """
    from functools import partial

    from ._spread import spread

    arrays = [np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x) for x in xs]
    if method != "umap":
        workers = 1
    else:
        numba_cache_dir()  # the workers inherit the environment: the same cache
    return spread(partial(embed, method=method, seed=seed), arrays, workers=workers, done=done,
                  initializer=_worker_init)
