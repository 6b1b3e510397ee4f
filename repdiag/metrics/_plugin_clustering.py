"""Built-in clustering metrics on the buffered samples with their class labels.

Implicit clustering of representations (Potgieter, Mouton, Davel, arXiv 2501.14441): silhouette,
Davies–Bouldin and Calinski–Harabasz of the class-labelled groups; k-means with k = number of
classes scored against the labels (purity, NMI); nearest-class-centroid accuracy on a held-out
split. Each accepts ``standardize`` (per-feature standardisation first), recorded as a column.
What they share (labels grouped, centroids, distance sums, the k-means result) comes from the
call's plan (``data.plan``, ``_plan.py``), computed once per layer; which k-means run a figure
comes from is said there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from .._errors import ConfigError, warn_undefined
from ..functional._clustering import CH_ZERO_W, calinski_harabasz_parts, davies_bouldin_from, silhouette_from_sums
from ..functional._device import fetch, to_device
from ..functional._agreement import (
    contingency,
    nearest_centroid_codes,
    nmi_from_contingency,
    purity_from_contingency,
    split_host,
)
from ..functional._kmeans import KMeansResult
from ..functional._precision import rescaled_on_device
from ._plan import Groups, LayerPlan, layer_plan, layer_samples, on_layer
from ._registry import LayerData, Pending, Row, register_metric

__all__ = ["on_layer", "layer_samples"]


def _groups(data: LayerData, metric: str, standardize_: bool) -> tuple[LayerPlan, Groups]:
    plan = layer_plan(data)
    return plan, plan.groups(standardize_, metric)


def _row(value: Any, g: Groups, standardize_: bool) -> Row:
    # value: a float or a 0-d tensor / Pending, brought to the host with the table's other values
    return {"value": value, "n": g.x.shape[0], "standardize": bool(standardize_)}


@register_metric("silhouette_labels", needs=("samples", "labels", "groups", "distance_sums"), default=True,
                 meaning="silhouette of the classes", better="higher")
def _silhouette(data: LayerData, standardize: bool = False) -> Iterator[Row]:
    """Mean silhouette coefficient of the class-labelled samples (Euclidean; higher = better clustered)."""
    plan, g = _groups(data, "silhouette_labels", standardize)
    v: float | Tensor
    with on_layer(data.layer, "silhouette_labels"):
        if g.why:
            warn_undefined("silhouette", g.why)
            v = float("nan")
        else:
            sums = plan.distance_sums(standardize, "silhouette_labels")
            v = silhouette_from_sums(sums, g.inverse, g.counts).to(g.x.dtype).to(torch.float64).mean().to(g.x.dtype)
    yield _row(v, g, standardize)


@register_metric("davies_bouldin_labels", needs=("samples", "labels", "groups", "centroids"), default=True,
                 meaning="Davies-Bouldin index of the classes", better="lower")
def _davies_bouldin(data: LayerData, standardize: bool = False) -> Iterator[Row]:
    """Davies–Bouldin index of the class-labelled samples (lower = better separated classes)."""
    plan, g = _groups(data, "davies_bouldin_labels", standardize)
    v: float | Tensor
    with on_layer(data.layer, "davies_bouldin_labels"):
        if g.why:
            warn_undefined("Davies-Bouldin index", g.why)
            v = float("nan")
        else:
            v = davies_bouldin_from(g.x, g.inverse, g.counts, plan.centroids(standardize, "davies_bouldin_labels"))
    yield _row(v, g, standardize)


@register_metric("calinski_harabasz_labels", needs=("samples", "labels", "groups", "centroids"), default=True,
                 meaning="Calinski-Harabasz ratio of the classes", better="higher")
def _calinski_harabasz(data: LayerData, standardize: bool = False) -> Iterator[Row]:
    """Calinski–Harabasz variance ratio of the class-labelled samples (higher = better separated)."""
    plan, g = _groups(data, "calinski_harabasz_labels", standardize)
    v: float | Pending
    with on_layer(data.layer, "calinski_harabasz_labels"):
        if g.why:
            warn_undefined("Calinski-Harabasz index", g.why)
            v = float("nan")
        else:
            value, zero_w = calinski_harabasz_parts(g.x, g.inverse, g.counts,
                                                    plan.centroids(standardize, "calinski_harabasz_labels"))
            # the warning for W = 0 is given when the value reaches the host, worded as on_layer would
            v = Pending(value, ((zero_w, f"calinski_harabasz_labels of layer {data.layer!r}: Calinski-Harabasz "
                                         f"index is undefined (NaN): {CH_ZERO_W}"),))
    yield _row(v, g, standardize)


def _kmeans_rows(data: LayerData, metric: str, k: int | None, n_init: int, seed: int,
                 standardize_: bool) -> tuple[KMeansResult | None, Groups, int, Row]:
    plan, g = _groups(data, metric, standardize_)
    kk = g.k if k is None else int(k)
    row: Row = {"n": g.x.shape[0], "k": kk, "standardize": bool(standardize_)}
    if kk < 2 or kk > g.x.shape[0]:
        with on_layer(data.layer, metric):
            warn_undefined("k-means agreement", f"k = {kk} clusters for {g.x.shape[0]} samples; need 2 <= k <= n")
        return None, g, kk, row
    with on_layer(data.layer, metric):
        res = plan.kmeans(kk, n_init, seed, standardize_, metric)
    return res, g, kk, row


@register_metric("kmeans_purity", needs=("samples", "labels", "groups", "kmeans"), default=True,
                 meaning="k-means purity against labels", better="higher")
def _kmeans_purity(data: LayerData, k: int | None = None, n_init: int = 3, seed: int = 0,
                   standardize: bool = False) -> Iterator[Row]:
    """Purity of k-means clusters (k = number of classes) against the class labels."""
    res, g, kk, row = _kmeans_rows(data, "kmeans_purity", k, n_init, seed, standardize)
    # the contingency table of the cluster and class codes, on the device (no sync)
    yield {**row, "value": float("nan") if res is None else
           purity_from_contingency(contingency(res.labels, kk, g.inverse, g.k))}


@register_metric("kmeans_nmi", needs=("samples", "labels", "groups", "kmeans"), default=True,
                 meaning="NMI of k-means and labels", better="higher")
def _kmeans_nmi(data: LayerData, k: int | None = None, n_init: int = 3, seed: int = 0,
                standardize: bool = False) -> Iterator[Row]:
    """Normalised mutual information of k-means clusters (k = number of classes) and class labels."""
    res, g, kk, row = _kmeans_rows(data, "kmeans_nmi", k, n_init, seed, standardize)
    yield {**row, "value": float("nan") if res is None else
           nmi_from_contingency(contingency(g.inverse, g.k, res.labels, kk))}


@register_metric("centroid_accuracy", needs=("samples", "labels"), default=True,
                 meaning="nearest-centroid accuracy", better="higher")
def _centroid_accuracy(data: LayerData, test_fraction: float = 0.25, seed: int = 0,
                       standardize: bool = False) -> Iterator[Row]:
    """Nearest-class-centroid accuracy on a stratified held-out split of the buffered samples."""
    plan = layer_plan(data)
    x = plan.samples("centroid_accuracy")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1); got {test_fraction!r}.")
    g = plan.groups(False, "centroid_accuracy")  # the class codes (0..k-1) and k, from the host labels
    assert data.labels is not None
    host = plan.facts.labels if plan.facts is not None and plan.facts.labels is not None else fetch(data.labels)[0]
    tr_h, te_h = split_host(host, test_fraction, seed)  # drawn on the host, as stratified_split
    tr, te = to_device(tr_h, x.device), to_device(te_h, x.device)
    xtr, xte = x[tr], x[te]
    if standardize and xtr.shape[0] > 0:
        std, mean = torch.std_mean(xtr, dim=0, correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        (xtr, xte), _ = rescaled_on_device((xtr - mean) / std, (xte - mean) / std)  # the test rows may be far out
    v: float | Tensor
    with on_layer(data.layer, "centroid_accuracy"):
        if g.k < 2 or te_h.size == 0:
            warn_undefined("nearest-centroid accuracy", "the training split holds fewer than 2 classes"
                           if g.k < 2 else "the test split is empty")
            v = float("nan")
        else:
            v = nearest_centroid_codes(xtr, g.inverse[tr], g.k, xte, g.inverse[te])
    yield {"value": v, "n": int(te_h.size), "test_fraction": float(test_fraction), "standardize": bool(standardize)}
