"""2-D embeddings of a layer's samples for the report's scatter plots: UMAP or PCA."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import ConfigError

__all__ = ["EMBEDDINGS", "embed", "numba_cache_dir"]

EMBEDDINGS: tuple[str, ...] = ("umap", "pca", "none")


def numba_cache_dir() -> Path:
    """Where numba keeps compiled UMAP code between runs: ``$NUMBA_CACHE_DIR`` when set, else
    ``$XDG_CACHE_HOME/repdiag/numba`` (``~/.cache/repdiag/numba``), which this sets for numba.

    Without an on-disk cache every process spends ~17 s compiling UMAP; with it, ~7 s once.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = base / "repdiag" / "numba"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home: numba falls back to its default (next to the sources)
        return path
    os.environ["NUMBA_CACHE_DIR"] = str(path)
    return path


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
        numba_cache_dir()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # umap/numba chatter (n_jobs with random_state, ...)
            import umap

            reducer = umap.UMAP(n_neighbors=max(2, min(n_neighbors, n - 1)), n_components=2, random_state=seed,
                                n_jobs=1, init="spectral" if n > 10 else "random")
            out = np.asarray(reducer.fit_transform(arr.astype(np.float32)), dtype=np.float64)
    out[~finite] = np.nan
    return out
