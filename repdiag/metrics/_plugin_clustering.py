"""Built-in clustering metrics on the buffered samples with their class labels.

Implicit clustering of representations (Potgieter, Mouton, Davel, arXiv 2501.14441): silhouette,
Davies–Bouldin and Calinski–Harabasz of the class-labelled groups; k-means with k = number of
classes scored against the labels (purity, NMI); nearest-class-centroid accuracy on a held-out
split. Each accepts ``standardize`` (per-feature standardisation first), recorded as a column.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from .._errors import NonFiniteError, RepdiagWarning, warn_undefined
from .._validation import check_finite
from ..functional import (
    calinski_harabasz_score,
    davies_bouldin_score,
    kmeans,
    nearest_centroid_accuracy,
    normalized_mutual_info,
    purity,
    silhouette_score,
    standardize,
    stratified_split,
)
from ..functional._kmeans import KMeansResult
from ._registry import LayerData, Row, register_metric

__all__ = ["on_layer", "layer_samples"]


@contextlib.contextmanager
def on_layer(layer: str, metric: str) -> Iterator[None]:
    """Re-raise kernel warnings and non-finite errors with the layer and metric named."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except NonFiniteError as exc:
            raise NonFiniteError(f"metric {metric!r} on layer {layer!r}: {exc}") from exc
    for w in caught:
        if issubclass(w.category, RepdiagWarning):
            warnings.warn(f"{metric} of layer {layer!r}: {w.message}", RepdiagWarning, stacklevel=4)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def layer_samples(data: LayerData, metric: str) -> Tensor:
    """The layer's buffered samples, checked finite (a NonFiniteError names the layer)."""
    x = data.samples
    assert x is not None  # the registry skips layers without samples
    x = x if x.is_floating_point() else x.float()
    check_finite(x, f"the buffered samples of layer {data.layer!r} (metric {metric!r})")
    return x


def _labelled(data: LayerData, metric: str, standardize_: bool) -> tuple[Tensor, Tensor]:
    x = layer_samples(data, metric)
    y = data.labels
    assert y is not None
    return (standardize(x) if standardize_ else x), y.to(x.device)


@register_metric("silhouette_labels", needs=("samples", "labels"), default=True,
                 meaning="silhouette of the classes", better="higher")
def _silhouette(data: LayerData, standardize: bool = False) -> Iterator[Row]:
    """Mean silhouette coefficient of the class-labelled samples (Euclidean; higher = better clustered)."""
    x, y = _labelled(data, "silhouette_labels", standardize)
    with on_layer(data.layer, "silhouette_labels"):
        v = silhouette_score(x, y)
    yield {"value": float(v), "n": x.shape[0], "standardize": bool(standardize)}


@register_metric("davies_bouldin_labels", needs=("samples", "labels"), default=True,
                 meaning="Davies-Bouldin index of the classes", better="lower")
def _davies_bouldin(data: LayerData, standardize: bool = False) -> Iterator[Row]:
    """Davies–Bouldin index of the class-labelled samples (lower = better separated classes)."""
    x, y = _labelled(data, "davies_bouldin_labels", standardize)
    with on_layer(data.layer, "davies_bouldin_labels"):
        v = davies_bouldin_score(x, y)
    yield {"value": float(v), "n": x.shape[0], "standardize": bool(standardize)}


@register_metric("calinski_harabasz_labels", needs=("samples", "labels"), default=True,
                 meaning="Calinski-Harabasz ratio of the classes", better="higher")
def _calinski_harabasz(data: LayerData, standardize: bool = False) -> Iterator[Row]:
    """Calinski–Harabasz variance ratio of the class-labelled samples (higher = better separated)."""
    x, y = _labelled(data, "calinski_harabasz_labels", standardize)
    with on_layer(data.layer, "calinski_harabasz_labels"):
        v = calinski_harabasz_score(x, y)
    yield {"value": float(v), "n": x.shape[0], "standardize": bool(standardize)}


_CACHE: list[tuple[tuple[Any, ...], Tensor, KMeansResult]] = []


def _cached_kmeans(x: Tensor, k: int, n_init: int, seed: int, key: tuple[Any, ...]) -> KMeansResult:
    """k-means shared by kmeans_purity and kmeans_nmi on the same samples (computed once)."""
    for ckey, cx, res in _CACHE:
        if ckey == key and cx.shape == x.shape and cx.device == x.device and torch.equal(cx, x):
            return res
    res = kmeans(x, k, n_init=n_init, seed=seed)
    _CACHE.insert(0, (key, x, res))
    del _CACHE[2:]
    return res


def _kmeans_rows(data: LayerData, metric: str, k: int | None, n_init: int, seed: int,
                 standardize_: bool) -> tuple[KMeansResult | None, Tensor, int, Row]:
    x, y = _labelled(data, metric, standardize_)
    kk = int(torch.unique(y).numel()) if k is None else int(k)
    row: Row = {"n": x.shape[0], "k": kk, "standardize": bool(standardize_)}
    if kk < 2 or kk > x.shape[0]:
        with on_layer(data.layer, metric):
            warn_undefined("k-means agreement", f"k = {kk} clusters for {x.shape[0]} samples; need 2 <= k <= n")
        return None, y, kk, row
    with on_layer(data.layer, metric):
        res = _cached_kmeans(x, kk, n_init, seed, (kk, n_init, seed, bool(standardize_)))
    return res, y, kk, row


@register_metric("kmeans_purity", needs=("samples", "labels"), default=True,
                 meaning="k-means purity against labels", better="higher")
def _kmeans_purity(data: LayerData, k: int | None = None, n_init: int = 3, seed: int = 0,
                   standardize: bool = False) -> Iterator[Row]:
    """Purity of k-means clusters (k = number of classes) against the class labels."""
    res, y, _, row = _kmeans_rows(data, "kmeans_purity", k, n_init, seed, standardize)
    yield {**row, "value": float("nan") if res is None else float(purity(y, res.labels))}


@register_metric("kmeans_nmi", needs=("samples", "labels"), default=True,
                 meaning="NMI of k-means and labels", better="higher")
def _kmeans_nmi(data: LayerData, k: int | None = None, n_init: int = 3, seed: int = 0,
                standardize: bool = False) -> Iterator[Row]:
    """Normalised mutual information of k-means clusters (k = number of classes) and class labels."""
    res, y, _, row = _kmeans_rows(data, "kmeans_nmi", k, n_init, seed, standardize)
    yield {**row, "value": float("nan") if res is None else float(normalized_mutual_info(y, res.labels))}


@register_metric("centroid_accuracy", needs=("samples", "labels"), default=True,
                 meaning="nearest-centroid accuracy", better="higher")
def _centroid_accuracy(data: LayerData, test_fraction: float = 0.25, seed: int = 0,
                       standardize: bool = False) -> Iterator[Row]:
    """Nearest-class-centroid accuracy on a stratified held-out split of the buffered samples."""
    x = layer_samples(data, "centroid_accuracy")
    y = data.labels
    assert y is not None
    y = y.to(x.device)
    tr, te = stratified_split(y, test_fraction, seed=seed)
    xtr, xte = x[tr], x[te]
    if standardize and xtr.shape[0] > 0:
        std, mean = torch.std_mean(xtr, dim=0, correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        xtr, xte = (xtr - mean) / std, (xte - mean) / std
    with on_layer(data.layer, "centroid_accuracy"):
        v = nearest_centroid_accuracy(xtr, y[tr], xte, y[te])
    yield {"value": float(v), "n": int(te.numel()), "test_fraction": float(test_fraction),
           "standardize": bool(standardize)}
